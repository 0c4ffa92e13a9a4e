//! The MSP tenant, given/when/then: given these events, when this command, then these events
//! (or this refusal).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use domain::decision::{Claim, Decision, DomainError};
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use domain::msp::{self, MspCommand, MspTenant};
use domain::onboarding;
use uuid::Uuid;

const MSP: TenantId = TenantId(Uuid::from_u128(1));
const ADMIN: UserId = UserId(Uuid::from_u128(10));
const TECH: UserId = UserId(Uuid::from_u128(11));
const CUSTOMER: TenantId = TenantId(Uuid::from_u128(100));
const PHONE: DeviceId = DeviceId(Uuid::from_u128(1000));
const KEY: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

fn signed_up() -> Vec<Event> {
    vec![
        MspTenantCreated {
            tenant_id: MSP,
            name: "acme".into(),
            display_name: "Acme IT".into(),
            host_label: "acme".into(),
            admin_user_id: ADMIN,
            admin_email: "admin@acme.example".into(),
        }
        .into(),
    ]
}

fn with(mut events: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    events.extend(more);
    events
}

fn technician() -> Vec<Event> {
    with(
        signed_up(),
        [MspUserAdded {
            user_id: TECH,
            email: "tech@acme.example".into(),
            first_name: Some("Tina".into()),
            last_name: None,
        }
        .into()],
    )
}

fn customer() -> Vec<Event> {
    with(
        technician(),
        [CustomerTenantCreated {
            customer_id: CUSTOMER,
        }
        .into()],
    )
}

fn when(given: &[Event], command: MspCommand) -> Result<Decision, DomainError> {
    let state = MspTenant::replay(given).unwrap();
    msp::decide(state.as_ref(), command)
}

/// Applies a decision's events to the history, as the api would after committing them.
fn then(given: &[Event], decision: &Decision) -> MspTenant {
    let all = with(given.to_vec(), decision.events.clone());
    MspTenant::replay(&all).unwrap().unwrap()
}

fn invalid_fields(result: Result<Decision, DomainError>) -> Vec<&'static str> {
    match result {
        Err(DomainError::Invalid(errors)) => errors.iter().map(|e| e.field).collect(),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[test]
fn signup_creates_the_tenant_and_claims_its_host_label_and_admin_email() {
    let decision = when(
        &[],
        MspCommand::SignUp {
            tenant_id: MSP,
            name: " acme ".into(),
            display_name: "Acme IT".into(),
            admin_user_id: ADMIN,
            admin_email: "Admin@ACME.example".into(),
        },
    )
    .unwrap();
    assert_eq!(decision.events, signed_up_with_email("Admin@acme.example"));
    assert_eq!(
        decision.claims,
        vec![
            Claim::new("host", "acme"),
            Claim::new(format!("email:{MSP}"), "admin@acme.example")
        ]
    );
    let tenant = then(&[], &decision);
    assert!(tenant.users[&ADMIN].admin);
    assert_eq!(tenant.user_source, UserSource::Local);
}

fn signed_up_with_email(email: &str) -> Vec<Event> {
    let mut events = signed_up();
    if let Event::MspTenantCreated(e) = &mut events[0] {
        e.admin_email = email.into();
    }
    events
}

#[test]
fn signup_reports_every_invalid_field_at_once() {
    let result = when(
        &[],
        MspCommand::SignUp {
            tenant_id: MSP,
            name: "Not A Label".into(),
            display_name: "  ".into(),
            admin_user_id: ADMIN,
            admin_email: "nobody".into(),
        },
    );
    assert_eq!(
        invalid_fields(result),
        vec!["name", "display_name", "admin_email"]
    );
}

#[test]
fn signup_twice_is_a_conflict_and_other_commands_need_a_tenant() {
    let again = MspCommand::SignUp {
        tenant_id: MSP,
        name: "acme".into(),
        display_name: "x".into(),
        admin_user_id: ADMIN,
        admin_email: "a@b.example".into(),
    };
    assert!(matches!(
        when(&signed_up(), again),
        Err(DomainError::Conflict(_))
    ));
    assert_eq!(
        when(&[], MspCommand::MakeAdmin { user_id: ADMIN }),
        Err(DomainError::NotFound("tenant"))
    );
}

#[test]
fn users_are_added_by_unique_email() {
    let add = |email: &str| MspCommand::AddUser {
        user_id: TECH,
        email: email.into(),
        first_name: Some(" Tina ".into()),
        last_name: Some("".into()),
    };
    let decision = when(&signed_up(), add("tech@acme.example")).unwrap();
    assert_eq!(
        decision.events,
        vec![Event::from(MspUserAdded {
            user_id: TECH,
            email: "tech@acme.example".into(),
            first_name: Some("Tina".into()),
            last_name: None,
        })]
    );
    assert_eq!(
        decision.claims,
        vec![Claim::new(format!("email:{MSP}"), "tech@acme.example")]
    );
    assert!(matches!(
        when(&technician(), add("TECH@acme.example")),
        Err(DomainError::Conflict(_))
    ));
    assert_eq!(
        invalid_fields(when(&signed_up(), add("tech@"))),
        vec!["email"]
    );
}

#[test]
fn removing_a_user_releases_the_email_but_never_the_last_admin() {
    let decision = when(&technician(), MspCommand::RemoveUser { user_id: TECH }).unwrap();
    assert_eq!(
        decision.events,
        vec![Event::from(MspUserRemoved { user_id: TECH })]
    );
    assert_eq!(
        decision.releases,
        vec![Claim::new(format!("email:{MSP}"), "tech@acme.example")]
    );
    assert!(!then(&technician(), &decision).users.contains_key(&TECH));
    assert!(matches!(
        when(&technician(), MspCommand::RemoveUser { user_id: ADMIN }),
        Err(DomainError::Conflict(_))
    ));
    assert_eq!(
        when(
            &technician(),
            MspCommand::RemoveUser {
                user_id: UserId(Uuid::nil())
            }
        ),
        Err(DomainError::NotFound("user"))
    );
}

#[test]
fn admin_role_is_granted_and_revoked_but_one_admin_remains() {
    let made = when(&technician(), MspCommand::MakeAdmin { user_id: TECH }).unwrap();
    assert_eq!(
        made.events,
        vec![Event::from(AdminGranted { user_id: TECH })]
    );
    let two_admins = with(technician(), made.events);
    assert_eq!(
        when(&two_admins, MspCommand::MakeAdmin { user_id: TECH }).unwrap(),
        Decision::none()
    );
    let revoked = when(&two_admins, MspCommand::RevokeAdmin { user_id: ADMIN }).unwrap();
    assert_eq!(
        revoked.events,
        vec![Event::from(AdminRevoked { user_id: ADMIN })]
    );
    assert!(matches!(
        when(&technician(), MspCommand::RevokeAdmin { user_id: ADMIN }),
        Err(DomainError::Conflict(_))
    ));
    assert_eq!(
        when(&technician(), MspCommand::RevokeAdmin { user_id: TECH }).unwrap(),
        Decision::none()
    );
}

fn start(email: &str, code: &str) -> MspCommand {
    MspCommand::StartOnboarding {
        email: email.into(),
        code: code.into(),
        now: now(),
    }
}

fn complete(code: &str, at: DateTime<Utc>) -> MspCommand {
    MspCommand::CompleteOnboarding {
        email: "tech@acme.example".into(),
        code: code.into(),
        device_id: PHONE,
        device_name: "Tina's phone".into(),
        public_key: KEY.into(),
        now: at,
    }
}

#[test]
fn onboarding_codes_are_issued_only_to_known_users_and_stored_as_digests() {
    let issued = when(&technician(), start("Tech@Acme.example", "12345678")).unwrap();
    assert_eq!(
        issued.events,
        vec![Event::from(OnboardingCodeIssued {
            user_id: TECH,
            code_digest: onboarding::code_digest(TECH, "12345678"),
            expires_at: now() + msp::CODE_LIFETIME,
        })]
    );
    assert!(
        !format!("{issued:?}").contains("12345678"),
        "the code itself is not recorded"
    );
    assert_eq!(
        when(&technician(), start("stranger@evil.example", "1")).unwrap(),
        Decision::none()
    );
    assert_ne!(
        onboarding::code_digest(TECH, "1"),
        onboarding::code_digest(ADMIN, "1")
    );
}

#[test]
fn the_right_code_enrolls_the_device() {
    let given = with(
        technician(),
        when(&technician(), start("tech@acme.example", "12345678"))
            .unwrap()
            .events,
    );
    let decision = when(&given, complete("12345678", now())).unwrap();
    assert_eq!(
        decision.events,
        vec![Event::from(DeviceEnrolled {
            user_id: TECH,
            device_id: PHONE,
            device_name: "Tina's phone".into(),
            public_key: KEY.into(),
        })]
    );
    let tenant = then(&given, &decision);
    assert!(tenant.users[&TECH].is_onboarded());
    assert!(
        tenant.users[&TECH].enrollment.pending_code.is_none(),
        "a code works once"
    );
    let onboarded = with(given, decision.events);
    assert_eq!(
        when(&onboarded, start("tech@acme.example", "x")).unwrap(),
        Decision::none()
    );
    assert!(matches!(
        when(&onboarded, complete("12345678", now())),
        Err(DomainError::Unauthenticated(_))
    ));
}

/// The technician with their phone enrolled.
fn onboarded() -> Vec<Event> {
    let given = with(
        technician(),
        when(&technician(), start("tech@acme.example", "12345678"))
            .unwrap()
            .events,
    );
    let enrolled = when(&given, complete("12345678", now())).unwrap().events;
    with(given, enrolled)
}

#[test]
fn a_revoked_authenticator_lets_the_user_onboard_a_new_one() {
    let revoke = |device_id| MspCommand::RevokeAuthenticator {
        user_id: TECH,
        device_id,
    };
    let decision = when(&onboarded(), revoke(PHONE)).unwrap();
    assert_eq!(
        decision.events,
        vec![Event::from(AuthenticatorRevoked {
            user_id: TECH,
            device_id: PHONE,
        })]
    );
    let tenant = then(&onboarded(), &decision);
    assert!(!tenant.users[&TECH].is_onboarded());
    // A new code, then a new phone.
    let revoked = with(onboarded(), decision.events);
    let issued = when(&revoked, start("tech@acme.example", "87654321")).unwrap();
    assert_eq!(issued.events.len(), 1, "{issued:?}");
    let again = with(revoked.clone(), issued.events);
    let new_phone = MspCommand::CompleteOnboarding {
        email: "tech@acme.example".into(),
        code: "87654321".into(),
        device_id: DeviceId(Uuid::from_u128(1001)),
        device_name: "Tina's new phone".into(),
        public_key: KEY.into(),
        now: now(),
    };
    let enrolled = when(&again, new_phone).unwrap();
    assert!(matches!(enrolled.events[..], [Event::DeviceEnrolled(_)]));
    // Revoked twice, another user's phone, an unknown user: refused, nothing decided.
    let not_found = |given: &[Event], user_id, device_id| match when(
        given,
        MspCommand::RevokeAuthenticator { user_id, device_id },
    ) {
        Err(DomainError::NotFound(what)) => what,
        other => panic!("expected not found, got {other:?}"),
    };
    assert_eq!(not_found(&revoked, TECH, PHONE), "authenticator");
    assert_eq!(not_found(&technician(), TECH, PHONE), "authenticator");
    assert_eq!(not_found(&onboarded(), ADMIN, PHONE), "authenticator");
    assert_eq!(
        not_found(&onboarded(), UserId(Uuid::from_u128(99)), PHONE),
        "user"
    );
}

/// A user with a phone adds another with a code (mailed by the caller), keeps both, and
/// removes the old one themselves; a user without a phone gets no such code, and five
/// phones are the most.
#[test]
fn a_user_with_a_phone_adds_another_and_removes_the_old_one() {
    let another = |code: &str| MspCommand::AddAnotherPhone {
        user_id: TECH,
        code: code.into(),
        now: now(),
    };
    let conflict = |result: Result<Decision, DomainError>| match result {
        Err(DomainError::Conflict(why)) => why,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert!(conflict(when(&technician(), another("1"))).contains("onboarding/start"));
    let issued = when(&onboarded(), another("24681357")).unwrap();
    assert_eq!(
        issued.events,
        vec![Event::from(OnboardingCodeIssued {
            user_id: TECH,
            code_digest: onboarding::code_digest(TECH, "24681357"),
            expires_at: now() + msp::CODE_LIFETIME,
        })]
    );
    let given = with(onboarded(), issued.events);
    let new_phone = DeviceId(Uuid::from_u128(1001));
    let mut complete_new = complete("24681357", now());
    if let MspCommand::CompleteOnboarding { device_id, .. } = &mut complete_new {
        *device_id = new_phone;
    }
    let enrolled = when(&given, complete_new).unwrap();
    let given = with(given, enrolled.events);
    let devices = |given: &[Event]| -> Vec<DeviceId> {
        MspTenant::replay(given).unwrap().unwrap().users[&TECH]
            .enrollment
            .devices
            .keys()
            .copied()
            .collect()
    };
    assert_eq!(devices(&given), vec![PHONE, new_phone]);
    let removed = when(
        &given,
        MspCommand::RevokeOwnAuthenticator {
            user_id: TECH,
            device_id: PHONE,
        },
    )
    .unwrap();
    assert_eq!(
        removed.events,
        vec![Event::from(AuthenticatorRevoked {
            user_id: TECH,
            device_id: PHONE,
        })]
    );
    assert_eq!(
        devices(&with(given.clone(), removed.events)),
        vec![new_phone]
    );

    // Up to five phones.
    let mut full = given;
    for n in 0..(onboarding::MAX_PHONES as u128 - 2) {
        let code = format!("1357{n:04}");
        full = with(full.clone(), when(&full, another(&code)).unwrap().events);
        let mut complete = complete(&code, now());
        if let MspCommand::CompleteOnboarding { device_id, .. } = &mut complete {
            *device_id = DeviceId(Uuid::from_u128(2000 + n));
        }
        full = with(full.clone(), when(&full, complete).unwrap().events);
    }
    assert_eq!(devices(&full).len(), onboarding::MAX_PHONES);
    assert!(conflict(when(&full, another("1"))).contains("at most 5"));
}

#[test]
fn revoking_an_authenticator_that_is_not_enrolled_does_not_fold() {
    let history = with(
        technician(),
        [AuthenticatorRevoked {
            user_id: TECH,
            device_id: PHONE,
        }
        .into()],
    );
    assert!(matches!(
        MspTenant::replay(&history),
        Err(DomainError::Corrupt(_))
    ));
}

#[test]
fn wrong_codes_are_recorded_and_five_end_the_code() {
    let mut history = with(
        technician(),
        when(&technician(), start("tech@acme.example", "12345678"))
            .unwrap()
            .events,
    );
    for _ in 0..msp::CODE_TRIES {
        let decision = when(&history, complete("00000000", now())).unwrap();
        assert_eq!(
            decision.events,
            vec![Event::from(OnboardingCodeRejected { user_id: TECH })]
        );
        assert!(matches!(
            decision.refusal,
            Some(DomainError::Unauthenticated(_))
        ));
        history.extend(decision.events);
    }
    assert!(
        matches!(
            when(&history, complete("12345678", now())),
            Err(DomainError::Unauthenticated(_))
        ),
        "after five wrong tries even the right code is refused"
    );
}

#[test]
fn expired_codes_and_bad_keys_are_refused() {
    let given = with(
        technician(),
        when(&technician(), start("tech@acme.example", "12345678"))
            .unwrap()
            .events,
    );
    let late = now() + msp::CODE_LIFETIME;
    assert!(matches!(
        when(&given, complete("12345678", late)),
        Err(DomainError::Unauthenticated(_))
    ));
    let mut bad_key = complete("12345678", now());
    if let MspCommand::CompleteOnboarding { public_key, .. } = &mut bad_key {
        *public_key = "AAAA".into();
    }
    assert_eq!(
        invalid_fields(when(&given, bad_key)),
        vec!["device_public_key"]
    );
}

#[test]
fn the_msp_records_a_customer_by_its_id_alone() {
    let create = MspCommand::CreateCustomer {
        customer_id: CUSTOMER,
    };
    let decision = when(&technician(), create.clone()).unwrap();
    assert_eq!(decision.events, customer()[2..].to_vec());
    assert!(
        decision.claims.is_empty(),
        "the host label is the customer stream's claim"
    );
    let recorded: serde_json::Value =
        serde_json::from_slice(&decision.events[0].to_json().unwrap()).unwrap();
    assert_eq!(
        recorded,
        serde_json::json!({ "customer_id": CUSTOMER.to_string() }),
        "no name, display name or host label in the MSP's log"
    );
    assert!(matches!(
        when(&customer(), create),
        Err(DomainError::Conflict(_))
    ));
    assert_eq!(
        when(
            &customer(),
            MspCommand::DeleteCustomer {
                customer_id: TenantId(Uuid::nil())
            }
        ),
        Err(DomainError::NotFound("customer"))
    );
}

#[test]
fn delegation_decides_who_reaches_a_customer() {
    let given = customer();
    let tenant = MspTenant::replay(&given).unwrap().unwrap();
    assert_eq!(tenant.technicians_of(CUSTOMER), 1, "the admin only");
    assert!(tenant.reachable_by(TECH).is_empty());

    let delegated = when(
        &given,
        MspCommand::Delegate {
            user_id: TECH,
            customer_id: CUSTOMER,
        },
    )
    .unwrap();
    let tenant = then(&given, &delegated);
    assert_eq!(tenant.technicians_of(CUSTOMER), 2);
    assert_eq!(tenant.reachable_by(TECH), vec![CUSTOMER]);
    let given = with(given, delegated.events);
    assert_eq!(
        when(
            &given,
            MspCommand::Delegate {
                user_id: TECH,
                customer_id: CUSTOMER
            }
        )
        .unwrap(),
        Decision::none()
    );

    let revoked = when(
        &given,
        MspCommand::RevokeDelegation {
            user_id: TECH,
            customer_id: CUSTOMER,
        },
    )
    .unwrap();
    assert!(then(&given, &revoked).reachable_by(TECH).is_empty());
    assert_eq!(
        when(
            &customer(),
            MspCommand::RevokeDelegation {
                user_id: TECH,
                customer_id: CUSTOMER
            }
        ),
        Err(DomainError::NotFound("delegation"))
    );
    assert_eq!(
        when(
            &customer(),
            MspCommand::Delegate {
                user_id: TECH,
                customer_id: TenantId(Uuid::nil())
            }
        ),
        Err(DomainError::NotFound("customer"))
    );
}

#[test]
fn deleting_a_customer_ends_its_delegations() {
    let given = with(
        customer(),
        [TechnicianDelegated {
            user_id: TECH,
            customer_id: CUSTOMER,
        }
        .into()],
    );
    let decision = when(
        &given,
        MspCommand::DeleteCustomer {
            customer_id: CUSTOMER,
        },
    )
    .unwrap();
    assert_eq!(
        decision.events,
        vec![Event::from(CustomerTenantDeleted {
            customer_id: CUSTOMER,
        })]
    );
    let tenant = then(&given, &decision);
    assert!(tenant.customers.is_empty());
    assert!(tenant.users[&TECH].delegations.is_empty());
}

#[test]
fn histories_that_do_not_fold_are_errors() {
    let orphan = vec![Event::from(AdminGranted { user_id: TECH })];
    assert!(matches!(
        MspTenant::replay(&orphan),
        Err(DomainError::Corrupt(_))
    ));
    let unknown_user = with(signed_up(), [AdminGranted { user_id: TECH }.into()]);
    assert!(matches!(
        MspTenant::replay(&unknown_user),
        Err(DomainError::Corrupt(_))
    ));
    let twice = with(signed_up(), signed_up());
    assert!(matches!(
        MspTenant::replay(&twice),
        Err(DomainError::Corrupt(_))
    ));
}

#[test]
fn every_event_round_trips_through_its_stored_form() {
    let history = with(
        customer(),
        [
            UserSourceSet {
                source: UserSource::Local,
            }
            .into(),
            AdminGranted { user_id: TECH }.into(),
            AdminRevoked { user_id: TECH }.into(),
            OnboardingCodeIssued {
                user_id: TECH,
                code_digest: "ab".into(),
                expires_at: now(),
            }
            .into(),
            OnboardingCodeRejected { user_id: TECH }.into(),
            DeviceEnrolled {
                user_id: TECH,
                device_id: PHONE,
                device_name: "p".into(),
                public_key: KEY.into(),
            }
            .into(),
            AuthenticatorRevoked {
                user_id: TECH,
                device_id: PHONE,
            }
            .into(),
            TechnicianDelegated {
                user_id: TECH,
                customer_id: CUSTOMER,
            }
            .into(),
            DelegationRevoked {
                user_id: TECH,
                customer_id: CUSTOMER,
            }
            .into(),
            AuditorGranted {
                user_id: TECH,
                tenant_id: CUSTOMER,
            }
            .into(),
            AuditorRevoked {
                user_id: TECH,
                tenant_id: CUSTOMER,
            }
            .into(),
            CustomerTenantDeleted {
                customer_id: CUSTOMER,
            }
            .into(),
            MspUserRemoved { user_id: TECH }.into(),
        ],
    );
    let mut seen = std::collections::BTreeSet::new();
    for event in &history {
        let stored = event.to_json().unwrap();
        let back = Event::from_stored(event.type_name(), event.schema_version(), &stored).unwrap();
        assert_eq!(&back, event);
        seen.insert(event.type_name());
    }
    for name in &seen {
        assert!(
            CATALOGUE.iter().any(|(n, _)| n == name),
            "{name} is in the catalogue"
        );
    }
    assert_eq!(seen.len(), 16, "every event of the MSP stream is exercised");
    assert!(MspTenant::replay(&history).unwrap().is_some());
}

#[test]
fn stored_events_from_elsewhere_fail_clearly() {
    assert_eq!(
        Event::from_stored("NoSuchEvent", 1, b"{}"),
        Err(DecodeError::UnknownType("NoSuchEvent".into()))
    );
    assert!(matches!(
        Event::from_stored(
            "AdminGranted",
            2,
            b"{\"user_id\":\"00000000-0000-0000-0000-00000000000b\"}"
        ),
        Err(DecodeError::FutureVersion {
            version: 2,
            current: 1,
            ..
        })
    ));
    assert!(matches!(
        Event::from_stored("AdminGranted", 0, b"{}"),
        Err(DecodeError::NoUpcaster { version: 0, .. })
    ));
    assert!(matches!(
        Event::from_stored("AdminGranted", 1, b"not json"),
        Err(DecodeError::Malformed(..))
    ));
    assert!(matches!(
        Event::from_stored(
            "AdminGranted",
            1,
            b"{\"user_id\":\"00000000-0000-0000-0000-00000000000b\",\"extra\":1}"
        ),
        Err(DecodeError::Malformed(..))
    ));
}

#[test]
fn version_1_records_of_a_customer_decode_without_its_names() {
    let id = CUSTOMER.to_string();
    let created_v1 = format!(
        r#"{{"customer_id":"{id}","name":"globex","display_name":"Globex","host_label":"globex-acme"}}"#
    );
    let deleted_v1 = format!(r#"{{"customer_id":"{id}","name":"globex"}}"#);
    let created = Event::from_stored("CustomerTenantCreated", 1, created_v1.as_bytes()).unwrap();
    let deleted = Event::from_stored("CustomerTenantDeleted", 1, deleted_v1.as_bytes()).unwrap();
    assert_eq!(
        created,
        CustomerTenantCreated {
            customer_id: CUSTOMER
        }
        .into()
    );
    assert_eq!(
        deleted,
        CustomerTenantDeleted {
            customer_id: CUSTOMER
        }
        .into()
    );
    // A history written before the change still folds, and the same way as a current one.
    let old = with(technician(), [created.clone()]);
    assert_eq!(
        MspTenant::replay(&old).unwrap(),
        MspTenant::replay(&customer()).unwrap()
    );
    assert!(matches!(
        Event::from_stored("CustomerTenantCreated", 1, br#"{"name":"globex"}"#),
        Err(DecodeError::Malformed(..))
    ));
    assert!(matches!(
        Event::from_stored("CustomerTenantCreated", 2, created_v1.as_bytes()),
        Err(DecodeError::Malformed(..))
    ));
}

#[test]
fn auditors_are_granted_per_tenant_of_the_msp() {
    let grant = |tenant_id| MspCommand::GrantAuditor {
        user_id: TECH,
        tenant_id,
    };
    let on_customer = when(&customer(), grant(CUSTOMER)).unwrap();
    assert_eq!(
        on_customer.events,
        vec![Event::from(AuditorGranted {
            user_id: TECH,
            tenant_id: CUSTOMER
        })]
    );
    assert!(
        when(&customer(), grant(MSP)).is_ok(),
        "the MSP's own log too"
    );
    assert_eq!(
        when(&customer(), grant(TenantId(Uuid::nil()))),
        Err(DomainError::NotFound("customer")),
        "not a tenant of this MSP"
    );
    let given = with(customer(), on_customer.events);
    assert_eq!(when(&given, grant(CUSTOMER)).unwrap(), Decision::none());
    assert!(
        then(&given, &Decision::none()).users[&TECH]
            .auditor_of
            .contains(&CUSTOMER)
    );
    let revoked = when(
        &given,
        MspCommand::RevokeAuditor {
            user_id: TECH,
            tenant_id: CUSTOMER,
        },
    )
    .unwrap();
    assert!(then(&given, &revoked).users[&TECH].auditor_of.is_empty());
    let deleted = when(
        &given,
        MspCommand::DeleteCustomer {
            customer_id: CUSTOMER,
        },
    )
    .unwrap();
    assert!(
        then(&given, &deleted).users[&TECH].auditor_of.is_empty(),
        "a deleted customer leaves no role behind"
    );
}
