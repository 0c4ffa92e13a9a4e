//! The customer tenant, given/when/then, with real sealing: step 6 of the quick start and the
//! desktop's commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::crypto::{Argon2Params, DataKey, HashMemory, Sealed};
use domain::customer::{
    self, CustomerCommand as C, CustomerTenant, DEFAULT_ELEVATION_MINUTES,
    ENROLLMENT_TOKEN_LIFETIME, Sealer,
};
use domain::decision::{Claim, Decision, DomainError};
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use domain::onboarding::Attempt;
use domain::validate::PasswordPolicy;
use uuid::Uuid;

const MSP: TenantId = TenantId(Uuid::from_u128(1));
const TENANT: TenantId = TenantId(Uuid::from_u128(2));
const BILLY: UserId = UserId(Uuid::from_u128(20));
const AGENT: DeviceId = DeviceId(Uuid::from_u128(30));
const FAST: Argon2Params = Argon2Params {
    memory_kib: 256,
    iterations: 1,
    parallelism: 1,
};

fn key() -> DataKey {
    DataKey::new(1, [7; 32])
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

fn sealer(key: &DataKey) -> Sealer<'_> {
    Sealer {
        key,
        tenant: TENANT,
    }
}

fn password(text: &str) -> Sealed {
    sealer(&key())
        .password(
            &PasswordPolicy::default(),
            FAST,
            BILLY,
            text,
            [1; 16],
            [2; 24],
            &mut HashMemory::default(),
        )
        .unwrap()
}

/// `customer::verify_password` in fresh working memory.
fn verify(
    key: &DataKey,
    tenant: TenantId,
    user: UserId,
    stored: &Sealed,
    password: &str,
) -> Result<bool, DomainError> {
    customer::verify_password(
        key,
        tenant,
        user,
        stored,
        password,
        &mut HashMemory::default(),
    )
}

fn opened() -> Vec<Event> {
    vec![
        CustomerTenantOpened {
            tenant_id: TENANT,
            msp_id: MSP,
            name: "globex".into(),
            display_name: "Globex".into(),
            host_label: "globex-acme".into(),
        }
        .into(),
    ]
}

fn with(mut events: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    events.extend(more);
    events
}

fn keyed() -> Vec<Event> {
    with(opened(), [MasterKeyEnabled { key_version: 1 }.into()])
}

fn create_billy(password: Option<Sealed>) -> C {
    C::CreateUser {
        user_id: BILLY,
        first_name: "Billy".into(),
        last_name: "Jones".into(),
        username: "Billy".into(),
        email: "billy@globex.example".into(),
        password,
        must_change_password: false,
        personal_email: None,
    }
}

fn disable_billy() -> C {
    C::UpdateUser {
        user_id: BILLY,
        first_name: None,
        last_name: None,
        email: None,
        personal_email: None,
        enabled: Some(false),
    }
}

fn billy() -> Vec<Event> {
    let decision = when(&keyed(), create_billy(Some(password("correct horse")))).unwrap();
    with(keyed(), decision.events)
}

fn when(given: &[Event], command: C) -> Result<Decision, DomainError> {
    let state = CustomerTenant::replay(given).unwrap();
    customer::decide(state.as_ref(), command)
}

fn state(events: &[Event]) -> CustomerTenant {
    CustomerTenant::replay(events).unwrap().unwrap()
}

fn invalid_fields(result: Result<Decision, DomainError>) -> Vec<&'static str> {
    match result {
        Err(DomainError::Invalid(errors)) => errors.iter().map(|e| e.field).collect(),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

fn open(name: &str, display_name: &str) -> C {
    C::Open {
        tenant_id: TENANT,
        msp_id: MSP,
        msp_name: "acme".into(),
        name: name.into(),
        display_name: display_name.into(),
    }
}

#[test]
fn commands_need_an_opened_tenant() {
    assert_eq!(
        when(&[], C::DisableMasterKey),
        Err(DomainError::NotFound("tenant"))
    );
    assert!(matches!(
        when(&opened(), open("globex", "Globex")),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn a_customer_opens_with_its_name_and_claims_its_host_label_under_the_msp() {
    let decision = when(&[], open("globex", "  Globex  ")).unwrap();
    assert_eq!(decision.events, opened(), "the display name is trimmed");
    assert_eq!(decision.claims, vec![Claim::new("host", "globex-acme")]);
    assert_eq!(
        invalid_fields(when(&[], open(&"g".repeat(59), "Globex"))),
        vec!["name"]
    );
    assert!(
        when(&[], open(&"g".repeat(58), "Globex")).is_ok(),
        "58 + '-acme' = 63"
    );
    assert_eq!(
        invalid_fields(when(&[], open("admin", "Globex"))),
        vec!["name"]
    );
    assert_eq!(
        invalid_fields(when(&[], open("Globex!", " "))),
        vec!["name", "display_name"]
    );
}

#[test]
fn the_master_key_is_enabled_once_and_stays_while_data_is_sealed() {
    let enabled = when(&opened(), C::EnableMasterKey { key_version: 1 }).unwrap();
    assert_eq!(
        enabled.events,
        vec![Event::from(MasterKeyEnabled { key_version: 1 })]
    );
    assert_eq!(
        when(&keyed(), C::EnableMasterKey { key_version: 2 }).unwrap(),
        Decision::none()
    );
    assert_eq!(
        invalid_fields(when(&opened(), C::EnableMasterKey { key_version: 0 })),
        vec!["key_version"]
    );
    assert_eq!(
        when(&keyed(), C::DisableMasterKey).unwrap().events,
        vec![Event::from(MasterKeyDisabled { key_version: 1 })]
    );
    assert!(matches!(
        when(&billy(), C::DisableMasterKey),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn desktop_login_is_configured() {
    let decision = when(
        &opened(),
        C::ConfigureDesktopLogin {
            enabled: true,
            method: DesktopLoginMethod::Password,
        },
    )
    .unwrap();
    let given = with(opened(), decision.events);
    assert_eq!(
        state(&given).desktop_login,
        Some((true, DesktopLoginMethod::Password))
    );
    assert_eq!(
        when(
            &given,
            C::ConfigureDesktopLogin {
                enabled: true,
                method: DesktopLoginMethod::Password
            }
        )
        .unwrap(),
        Decision::none()
    );
}

#[test]
fn users_are_created_with_a_sealed_password_and_a_unique_username() {
    let sealed = password("correct horse");
    let decision = when(&keyed(), create_billy(Some(sealed.clone()))).unwrap();
    assert_eq!(
        decision.claims,
        vec![Claim::new(format!("username:{TENANT}"), "billy")]
    );
    assert_eq!(decision.events.len(), 2);
    assert_eq!(
        decision.events[1],
        Event::from(PasswordSet {
            user_id: BILLY,
            verifier: sealed,
            password_version: 1,
            must_change: false,
        })
    );
    let tenant = state(&with(keyed(), decision.events.clone()));
    assert_eq!(tenant.active_users(), 1);
    for event in &decision.events {
        let json = String::from_utf8(event.to_json().unwrap()).unwrap();
        assert!(
            !json.contains("correct horse") && !json.contains("argon2"),
            "{json}"
        );
    }
    let stored = &tenant.users[&BILLY].password.as_ref().unwrap().0;
    assert!(verify(&key(), TENANT, BILLY, stored, "correct horse").unwrap());
    assert!(!verify(&key(), TENANT, BILLY, stored, "wrong horse").unwrap());

    let mut upper = create_billy(None);
    if let C::CreateUser {
        user_id, username, ..
    } = &mut upper
    {
        *user_id = UserId(Uuid::from_u128(21));
        *username = "BILLY".into();
    }
    assert!(
        matches!(when(&billy(), upper), Err(DomainError::Conflict(_))),
        "case-insensitive"
    );
}

#[test]
fn secrets_need_the_master_key_and_its_current_version() {
    assert!(matches!(
        when(&opened(), create_billy(Some(password("correct horse")))),
        Err(DomainError::Conflict(_))
    ));
    assert!(
        when(&opened(), create_billy(None)).is_ok(),
        "a user without secrets needs no key"
    );
    let old_key = DataKey::new(2, [7; 32]);
    let wrong_version = sealer(&old_key)
        .password(
            &PasswordPolicy::default(),
            FAST,
            BILLY,
            "correct horse",
            [1; 16],
            [2; 24],
            &mut HashMemory::default(),
        )
        .unwrap();
    assert!(matches!(
        when(&keyed(), create_billy(Some(wrong_version))),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn a_verifier_moved_to_another_user_does_not_open() {
    let stored = password("correct horse");
    let mallory = UserId(Uuid::from_u128(66));
    assert!(verify(&key(), TENANT, mallory, &stored, "correct horse").is_err());
    let other_tenant = TenantId(Uuid::from_u128(3));
    assert!(verify(&key(), other_tenant, BILLY, &stored, "correct horse").is_err());
}

#[test]
fn every_kind_of_invalid_user_is_refused_with_its_field() {
    for bad in [
        "",
        "a/b",
        "a\\b",
        "a[b",
        "a]b",
        "a:b",
        "a;b",
        "a|b",
        "a=b",
        "a,b",
        "a+b",
        "a*b",
        "a?b",
        "a<b",
        "a>b",
        "a@b",
        "a\"b",
        "...",
        "  ",
        &"x".repeat(21),
    ] {
        let mut command = create_billy(None);
        if let C::CreateUser { username, .. } = &mut command {
            *username = bad.into();
        }
        assert_eq!(
            invalid_fields(when(&keyed(), command)),
            vec!["username"],
            "{bad:?}"
        );
    }
    let all_bad = C::CreateUser {
        user_id: BILLY,
        first_name: " ".into(),
        last_name: "\u{202e}x".into(),
        username: "a/b".into(),
        email: "nope".into(),
        password: None,
        must_change_password: false,
        personal_email: None,
    };
    assert_eq!(
        invalid_fields(when(&keyed(), all_bad)),
        vec!["first_name", "last_name", "username", "email"]
    );
    let policy = PasswordPolicy::default();
    let short = sealer(&key()).password(
        &policy,
        FAST,
        BILLY,
        "short",
        [1; 16],
        [2; 24],
        &mut HashMemory::default(),
    );
    assert!(matches!(short, Err(DomainError::Invalid(e)) if e[0].field == "password"));
    let bad_email = sealer(&key()).personal_email(BILLY, "not-an-email", [3; 24]);
    assert!(matches!(bad_email, Err(DomainError::Invalid(e)) if e[0].field == "personal_email"));
}

#[test]
fn password_changes_bump_the_version_agents_compare() {
    let decision = when(
        &billy(),
        C::SetPassword {
            user_id: BILLY,
            verifier: password("battery staple"),
            must_change: false,
        },
    )
    .unwrap();
    let Event::PasswordSet(set) = &decision.events[0] else {
        panic!()
    };
    assert_eq!(set.password_version, 2);
    let tenant = state(&with(billy(), decision.events));
    let stored = &tenant.users[&BILLY].password.as_ref().unwrap().0;
    assert!(verify(&key(), TENANT, BILLY, stored, "battery staple").unwrap());
    assert!(!verify(&key(), TENANT, BILLY, stored, "correct horse").unwrap());
    assert_eq!(
        when(
            &billy(),
            C::SetPassword {
                user_id: UserId(Uuid::nil()),
                verifier: password("x23456789"),
                must_change: false,
            }
        ),
        Err(DomainError::NotFound("user"))
    );
}

#[test]
fn users_are_updated_disabled_and_deleted() {
    let personal = sealer(&key())
        .personal_email(BILLY, "billy@home.example", [4; 24])
        .unwrap();
    let update = C::UpdateUser {
        user_id: BILLY,
        first_name: Some("William".into()),
        last_name: None,
        email: None,
        personal_email: Some(Some(personal.clone())),
        enabled: Some(false),
    };
    let decision = when(&billy(), update).unwrap();
    assert_eq!(
        decision.events,
        vec![
            Event::from(DirectoryUserUpdated {
                user_id: BILLY,
                first_name: "William".into(),
                last_name: "Jones".into(),
                email: "billy@globex.example".into(),
                personal_email: Some(personal),
            }),
            Event::from(DirectoryUserDisabled { user_id: BILLY }),
        ]
    );
    let json = String::from_utf8(decision.events[0].to_json().unwrap()).unwrap();
    assert!(
        !json.contains("home.example"),
        "the personal email is sealed: {json}"
    );
    let given = with(billy(), decision.events);
    assert_eq!(
        state(&given).active_users(),
        0,
        "a disabled user is not active"
    );
    let same = C::UpdateUser {
        user_id: BILLY,
        first_name: Some("William".into()),
        last_name: None,
        email: None,
        personal_email: None,
        enabled: Some(false),
    };
    assert_eq!(when(&given, same).unwrap(), Decision::none());
    let bad = C::UpdateUser {
        user_id: BILLY,
        first_name: None,
        last_name: None,
        email: Some("x".into()),
        personal_email: None,
        enabled: None,
    };
    assert_eq!(invalid_fields(when(&given, bad)), vec!["email"]);

    let deleted = when(&given, C::DeleteUser { user_id: BILLY }).unwrap();
    assert_eq!(
        deleted.releases,
        vec![Claim::new(format!("username:{TENANT}"), "billy")]
    );
    assert!(state(&with(given, deleted.events)).users.is_empty());
}

fn attempt(code: &str) -> Attempt {
    Attempt {
        code: code.into(),
        device_id: DeviceId(Uuid::from_u128(50)),
        device_name: "Billy's phone".into(),
        public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        now: now(),
    }
}

#[test]
fn passwordless_users_onboard_a_phone_and_then_count_as_active() {
    let given = with(keyed(), when(&keyed(), create_billy(None)).unwrap().events);
    let start = |email: &str| C::StartOnboarding {
        email: email.into(),
        code: "424242".into(),
        now: now(),
    };
    assert_eq!(
        when(&given, start("billy@globex.example")).unwrap(),
        Decision::none(),
        "not invited yet"
    );

    let invited = when(&given, C::EnablePasswordless { user_id: BILLY }).unwrap();
    let given = with(given, invited.events);
    assert_eq!(
        state(&given).active_users(),
        0,
        "invited is not yet able to log in"
    );
    assert_eq!(
        when(&given, C::EnablePasswordless { user_id: BILLY }).unwrap(),
        Decision::none()
    );
    assert_eq!(
        when(&given, start("nobody@globex.example")).unwrap(),
        Decision::none()
    );

    let issued = when(&given, start("BILLY@globex.example")).unwrap();
    assert_eq!(issued.events.len(), 1);
    let given = with(given, issued.events);
    let wrong = when(
        &given,
        C::CompleteOnboarding {
            email: "billy@globex.example".into(),
            attempt: attempt("000000"),
        },
    )
    .unwrap();
    assert!(matches!(
        wrong.refusal,
        Some(DomainError::Unauthenticated(_))
    ));
    let given = with(given, wrong.events);
    let enrolled = when(
        &given,
        C::CompleteOnboarding {
            email: "billy@globex.example".into(),
            attempt: attempt("424242"),
        },
    )
    .unwrap();
    let given = with(given, enrolled.events);
    let tenant = state(&given);
    assert!(tenant.users[&BILLY].enrollment.is_onboarded());
    assert_eq!(tenant.active_users(), 1);

    // A lost phone: revoked, Billy is no longer active and may onboard another.
    let phone = attempt("x").device_id;
    let revoke = C::RevokeAuthenticator {
        user_id: BILLY,
        device_id: phone,
    };
    let revoked = when(&given, revoke.clone()).unwrap();
    assert_eq!(
        revoked.events,
        vec![Event::from(AuthenticatorRevoked {
            user_id: BILLY,
            device_id: phone,
        })]
    );
    let lost = with(given.clone(), revoked.events);
    assert!(!state(&lost).users[&BILLY].enrollment.is_onboarded());
    assert_eq!(state(&lost).active_users(), 0);
    assert_eq!(
        when(&lost, start("billy@globex.example"))
            .unwrap()
            .events
            .len(),
        1
    );
    assert!(matches!(
        when(&lost, revoke),
        Err(DomainError::NotFound("authenticator"))
    ));

    let disabled = when(&given, disable_billy()).unwrap();
    let given = with(given, disabled.events);
    assert_eq!(state(&given).active_users(), 0);
    assert_eq!(
        when(&given, start("billy@globex.example")).unwrap(),
        Decision::none(),
        "disabled users get no code"
    );
}

fn image(n: u8) -> ImageRef {
    ImageRef {
        blob: format!("{n:064x}"),
        media_type: "image/png".into(),
        width: 10,
        height: 10,
    }
}

#[test]
fn branding_changes_carry_a_growing_version() {
    let first = when(
        &opened(),
        C::UpdateBranding {
            background: Some(image(1)),
            logo: None,
            text: Some(" Welcome ".into()),
        },
    )
    .unwrap();
    let given = with(opened(), first.events);
    let second = when(
        &given,
        C::UpdateBranding {
            background: None,
            logo: Some(image(2)),
            text: None,
        },
    )
    .unwrap();
    let branding = state(&with(given.clone(), second.events)).branding;
    assert_eq!(branding.version, 2);
    assert_eq!(branding.background, Some(image(1)), "kept");
    assert_eq!(branding.logo, Some(image(2)));
    assert_eq!(branding.text.as_deref(), Some("Welcome"));
    let too_long = C::UpdateBranding {
        background: None,
        logo: None,
        text: Some("x".repeat(501)),
    };
    assert_eq!(invalid_fields(when(&given, too_long)), vec!["text"]);
}

#[test]
fn a_branding_update_names_the_images_it_leaves_unused() {
    let update = |background, logo| C::UpdateBranding {
        background,
        logo,
        text: None,
    };
    let replaced = |given: &[Event], command| {
        let decision = when(given, command).unwrap();
        let Event::BrandingUpdated(next) = &decision.events[0] else {
            panic!("{decision:?}")
        };
        (
            state(given).branding.replaced_by(next),
            with(given.to_vec(), decision.events.clone()),
        )
    };
    let (gone, given) = replaced(&opened(), update(Some(image(1)), Some(image(2))));
    assert!(gone.is_empty(), "nothing was shown before");
    // A new logo: the old one is unused, the background kept.
    let (gone, given) = replaced(&given, update(None, Some(image(3))));
    assert_eq!(gone, vec![image(2).blob]);
    // The logo becomes the background's image: the old background goes, the shared one stays.
    let (gone, given) = replaced(&given, update(Some(image(3)), None));
    assert_eq!(gone, vec![image(1).blob]);
    // Text only, or the same images again: nothing goes.
    let (gone, given) = replaced(
        &given,
        C::UpdateBranding {
            background: None,
            logo: None,
            text: Some("Hello".into()),
        },
    );
    assert!(gone.is_empty());
    let (gone, given) = replaced(&given, update(Some(image(3)), Some(image(3))));
    assert!(gone.is_empty());
    // Both replaced while they share one image: it is named once.
    let (gone, _) = replaced(&given, update(Some(image(4)), Some(image(5))));
    assert_eq!(gone, vec![image(3).blob]);
}

#[test]
fn the_shared_admin_account_is_a_windows_username() {
    let configure = |username: &str, elevation_minutes: Option<u32>| C::ConfigureSharedAccount {
        username: username.into(),
        elevation_minutes,
    };
    let decision = when(&opened(), configure("idem-admin", None)).unwrap();
    assert_eq!(
        decision.events,
        vec![Event::from(SharedAccountConfigured {
            username: "idem-admin".into(),
            elevation_minutes: DEFAULT_ELEVATION_MINUTES,
        })]
    );
    assert_eq!(
        invalid_fields(when(&opened(), configure("admin@corp", None))),
        vec!["username"]
    );
}

#[test]
fn an_elevation_lives_what_the_tenant_says_and_no_less_than_five_minutes() {
    let configure = |username: &str, elevation_minutes: Option<u32>| C::ConfigureSharedAccount {
        username: username.into(),
        elevation_minutes,
    };
    let short = when(&opened(), configure("idem-admin", Some(15))).unwrap();
    assert_eq!(
        short.events,
        vec![Event::from(SharedAccountConfigured {
            username: "idem-admin".into(),
            elevation_minutes: 15,
        })]
    );
    let given = with(opened(), short.events);
    // Naming the account again, or with the same lifetime, changes nothing; renaming it
    // without a lifetime keeps the tenant's.
    assert!(
        when(&given, configure("idem-admin", None))
            .unwrap()
            .events
            .is_empty()
    );
    assert!(
        when(&given, configure("idem-admin", Some(15)))
            .unwrap()
            .events
            .is_empty()
    );
    assert_eq!(
        when(&given, configure("it-admin", None)).unwrap().events,
        vec![Event::from(SharedAccountConfigured {
            username: "it-admin".into(),
            elevation_minutes: 15,
        })]
    );
    assert_eq!(
        when(&given, configure("idem-admin", Some(480)))
            .unwrap()
            .events
            .len(),
        1
    );
    for minutes in [0, 4, 481, u32::MAX] {
        assert_eq!(
            invalid_fields(when(&given, configure("idem-admin", Some(minutes)))),
            vec!["elevation_minutes"],
            "{minutes}"
        );
    }
    assert_eq!(
        invalid_fields(when(&given, configure("", Some(1)))),
        vec!["username", "elevation_minutes"]
    );
    // A history from before the setting: its account's elevations lived the hour.
    let v1 = Event::from_stored(
        "SharedAccountConfigured",
        1,
        br#"{"username":"idem-admin"}"#,
    )
    .unwrap();
    assert_eq!(
        v1,
        Event::from(SharedAccountConfigured {
            username: "idem-admin".into(),
            elevation_minutes: 60,
        })
    );
    assert_eq!(state(&with(opened(), vec![v1])).elevation_minutes, 60);
}

/// An agent takes over the local account named like the user who logs in, and gives the
/// shared account administrator rights: one name for both would hand those rights to the user.
#[test]
fn the_shared_admin_account_is_never_a_directory_users_name() {
    let conflict = |result: Result<Decision, DomainError>| match result {
        Err(DomainError::Conflict(why)) => why,
        other => panic!("expected a conflict, got {other:?}"),
    };
    // Billy exists: no shared account of his name, in any case.
    let why = conflict(when(
        &billy(),
        C::ConfigureSharedAccount {
            username: "bILLY".into(),
            elevation_minutes: None,
        },
    ));
    assert!(why.contains("directory user"), "{why}");
    // The shared account exists: no user of its name, in any case.
    let configured = with(
        keyed(),
        [SharedAccountConfigured {
            username: "Billy".into(),
            elevation_minutes: DEFAULT_ELEVATION_MINUTES,
        }
        .into()],
    );
    let why = conflict(when(&configured, create_billy(None)));
    assert!(why.contains("shared admin account"), "{why}");
    let mut other = create_billy(None);
    if let C::CreateUser { username, .. } = &mut other {
        *username = "billy2".into();
    }
    assert_eq!(when(&configured, other).unwrap().events.len(), 1);
    // Once Billy is gone, his name is free for the shared account.
    let deleted = when(&billy(), C::DeleteUser { user_id: BILLY }).unwrap();
    let decision = when(
        &with(billy(), deleted.events),
        C::ConfigureSharedAccount {
            username: "billy".into(),
            elevation_minutes: None,
        },
    )
    .unwrap();
    assert_eq!(decision.events.len(), 1);
}

#[test]
fn enrollment_tokens_leave_the_state_once_used_or_expired() {
    let issue = |given: &Vec<Event>, id: u128, digest: &str, at: DateTime<Utc>| {
        let issued = when(
            given,
            C::IssueEnrollmentToken {
                token_id: Uuid::from_u128(id),
                token_digest: digest.into(),
                now: at,
            },
        )
        .unwrap();
        with(given.clone(), issued.events)
    };
    let enroll = |given: &Vec<Event>, digest: &str, device: u128, at: DateTime<Utc>| {
        when(
            given,
            C::EnrollAgent {
                token_digest: digest.into(),
                device_id: DeviceId(Uuid::from_u128(device)),
                hostname: "WS".into(),
                credential_digest: format!("c{device}"),
                now: at,
            },
        )
    };
    let tokens = |events: &Vec<Event>| {
        let tenant = CustomerTenant::replay(events).unwrap().unwrap();
        let mut digests: Vec<String> = tenant.enrollment_token_digests.keys().cloned().collect();
        digests.sort();
        let mut ids: Vec<u128> = tenant
            .enrollment_tokens
            .keys()
            .map(|id| id.as_u128())
            .collect();
        ids.sort();
        (ids, digests)
    };

    // A token issued a minute short of a lifetime after another leaves that one usable.
    let early = issue(&opened(), 1, "a", now());
    let later = now() + ENROLLMENT_TOKEN_LIFETIME - Duration::minutes(1);
    let given = issue(&early, 2, "b", later);
    assert_eq!(tokens(&given), (vec![1, 2], vec!["a".into(), "b".into()]));
    assert!(enroll(&given, "a", 70, later).is_ok());

    // One issued a whole lifetime after it forgets it: it had expired by then.
    let given = issue(&early, 3, "c", now() + ENROLLMENT_TOKEN_LIFETIME);
    assert_eq!(tokens(&given), (vec![3], vec!["c".into()]));
    assert!(matches!(
        enroll(&given, "a", 71, now()),
        Err(DomainError::Unauthenticated(_))
    ));

    // A used token is forgotten, and stays refused.
    let enrolled = enroll(&given, "c", 72, now() + ENROLLMENT_TOKEN_LIFETIME).unwrap();
    let given = with(given, enrolled.events);
    assert_eq!(tokens(&given), (vec![], vec![]));
    assert!(matches!(
        enroll(&given, "c", 73, now() + ENROLLMENT_TOKEN_LIFETIME),
        Err(DomainError::Unauthenticated(_))
    ));

    // A digest issued again under a new id is that new token, and forgetting the old one
    // does not lose it.
    let reissued = issue(&early, 4, "a", now() + Duration::minutes(1));
    let enrolled = enroll(&reissued, "a", 74, now() + Duration::minutes(2)).unwrap();
    assert!(
        matches!(&enrolled.events[..], [Event::AgentEnrolled(e)] if e.token_id == Uuid::from_u128(4)),
        "{:?}",
        enrolled.events
    );
    let given = with(reissued, enrolled.events);
    assert_eq!(tokens(&given), (vec![1], vec![]));

    // A history in which an agent enrolled with a token already forgotten (written while the
    // clock stepped back) still folds.
    let stepped_back = with(
        issue(&early, 5, "e", now() + ENROLLMENT_TOKEN_LIFETIME * 2),
        [AgentEnrolled {
            device_id: DeviceId(Uuid::from_u128(75)),
            token_id: Uuid::from_u128(1),
            hostname: "WS".into(),
            credential_digest: "c75".into(),
        }
        .into()],
    );
    let tenant = CustomerTenant::replay(&stepped_back).unwrap().unwrap();
    assert!(tenant.agents.contains_key(&DeviceId(Uuid::from_u128(75))));
    assert_eq!(tokens(&stepped_back), (vec![5], vec!["e".into()]));
}

#[test]
fn agents_enroll_once_per_token_before_it_expires() {
    let token = Uuid::from_u128(40);
    let issued = when(
        &opened(),
        C::IssueEnrollmentToken {
            token_id: token,
            token_digest: "d1".into(),
            now: now() + Duration::hours(1) - ENROLLMENT_TOKEN_LIFETIME,
        },
    )
    .unwrap();
    let given = with(opened(), issued.events);
    let enroll = |digest: &str, at: DateTime<Utc>| C::EnrollAgent {
        token_digest: digest.into(),
        device_id: AGENT,
        hostname: "WS-001".into(),
        credential_digest: "c1".into(),
        now: at,
    };
    let enrolled = when(&given, enroll("d1", now())).unwrap();
    assert_eq!(
        enrolled.events,
        vec![Event::from(AgentEnrolled {
            device_id: AGENT,
            token_id: token,
            hostname: "WS-001".into(),
            credential_digest: "c1".into()
        })]
    );
    assert!(matches!(
        when(&given, enroll("other", now())),
        Err(DomainError::Unauthenticated(_))
    ));
    assert!(matches!(
        when(&given, enroll("d1", now() + Duration::hours(1))),
        Err(DomainError::Unauthenticated(_))
    ));
    let given = with(given, enrolled.events);
    assert!(
        matches!(
            when(&given, enroll("d1", now())),
            Err(DomainError::Unauthenticated(_))
        ),
        "one use"
    );

    let login = DesktopLoginRecorded {
        device_id: AGENT,
        username: "billy".into(),
        user_id: Some(BILLY),
        method: DesktopLoginMethod::Password,
        outcome: AttemptOutcome::Succeeded,
        local_account: Some(LocalAccountAction::Takeover),
    };
    assert_eq!(
        when(&given, C::RecordDesktopLogin(login.clone()))
            .unwrap()
            .events,
        vec![Event::from(login.clone())]
    );
    let revoked = when(&given, C::RevokeAgent { device_id: AGENT }).unwrap();
    let given = with(given, revoked.events);

    // Among many tokens, the one whose digest is presented is used, and only it.
    let mut many = given.clone();
    for i in 0..5u128 {
        let issued = when(
            &many,
            C::IssueEnrollmentToken {
                token_id: Uuid::from_u128(100 + i),
                token_digest: format!("many-{i}"),
                now: now(),
            },
        )
        .unwrap();
        many = with(many, issued.events);
    }
    let enroll_new = |digest: &str, device: u128| C::EnrollAgent {
        token_digest: digest.into(),
        device_id: DeviceId(Uuid::from_u128(device)),
        hostname: "WS-002".into(),
        credential_digest: "c2".into(),
        now: now(),
    };
    let enrolled = when(&many, enroll_new("many-2", 77)).unwrap();
    assert!(
        matches!(&enrolled.events[..], [Event::AgentEnrolled(e)] if e.token_id == Uuid::from_u128(102)),
        "{:?}",
        enrolled.events
    );
    let many = with(many, enrolled.events);
    assert!(matches!(
        when(&many, enroll_new("many-2", 78)),
        Err(DomainError::Unauthenticated(_))
    ));
    assert!(when(&many, enroll_new("many-1", 78)).is_ok());

    assert_eq!(
        when(&given, C::RecordDesktopLogin(login)),
        Err(DomainError::NotFound("device"))
    );
    assert_eq!(
        when(&given, C::RevokeAgent { device_id: AGENT }),
        Err(DomainError::NotFound("device"))
    );
}

#[test]
fn an_ended_elevation_is_recorded_for_an_enrolled_device_by_a_sane_clock() {
    let issued = when(
        &opened(),
        C::IssueEnrollmentToken {
            token_id: Uuid::from_u128(40),
            token_digest: "d1".into(),
            now: now(),
        },
    )
    .unwrap();
    let given = with(opened(), issued.events);
    let enrolled = when(
        &given,
        C::EnrollAgent {
            token_digest: "d1".into(),
            device_id: AGENT,
            hostname: "WS-001".into(),
            credential_digest: "c1".into(),
            now: now(),
        },
    )
    .unwrap();
    let given = with(given, enrolled.events);
    let ended = |account: &str, ended_at: DateTime<Utc>| ElevationEnded {
        report_id: Uuid::from_u128(45),
        device_id: AGENT,
        elevation_seq: None,
        technician_id: None,
        account: account.into(),
        reason: ElevationEnd::Replaced,
        ended_at,
    };
    let report = |record: ElevationEnded| C::RecordElevationEnded {
        record,
        approval: None,
        now: now(),
    };

    // Reported late (the workstation was offline) or a little ahead: recorded as reported,
    // and the report's id claimed for this device, so that a report sent again is not.
    for at in [now() - Duration::days(3), now() + customer::CLOCK_SKEW] {
        let decision = when(&given, report(ended("idem-admin", at))).unwrap();
        assert_eq!(decision.events, vec![Event::from(ended("idem-admin", at))]);
        assert_eq!(
            decision.claims,
            vec![customer::elevation_report_claim(
                TENANT,
                AGENT,
                Uuid::from_u128(45)
            )]
        );
    }
    assert_ne!(
        customer::elevation_report_claim(TENANT, AGENT, Uuid::from_u128(45)),
        customer::elevation_report_claim(
            TENANT,
            DeviceId(Uuid::from_u128(98)),
            Uuid::from_u128(45)
        ),
        "one device cannot take another's report ids"
    );
    assert_eq!(
        invalid_fields(when(
            &given,
            report(ended(
                "idem-admin",
                now() + customer::CLOCK_SKEW + Duration::seconds(1)
            ))
        )),
        vec!["ended_at"]
    );
    assert_eq!(
        invalid_fields(when(
            &given,
            report(ended("a/b", now() + Duration::hours(1)))
        )),
        vec!["account", "ended_at"]
    );

    // The technician is the one the service recorded approving the elevation the report
    // names, whoever the agent says it was; an approval of another workstation, a denied
    // one, or no approval at that seq is refused.
    let approval = |device_id: DeviceId, outcome: AttemptOutcome| ElevationRecorded {
        device_id,
        msp_id: MSP,
        technician_id: UserId(Uuid::from_u128(11)),
        account: "idem-admin".into(),
        outcome,
    };
    let naming = |approval: Option<ElevationRecorded>| {
        let mut record = ended("idem-admin", now());
        record.elevation_seq = Some(7);
        record.technician_id = Some(UserId(Uuid::from_u128(12)));
        C::RecordElevationEnded {
            record,
            approval,
            now: now(),
        }
    };
    let recorded = when(
        &given,
        naming(Some(approval(AGENT, AttemptOutcome::Succeeded))),
    )
    .unwrap();
    let mut expected = ended("idem-admin", now());
    expected.elevation_seq = Some(7);
    expected.technician_id = Some(UserId(Uuid::from_u128(11)));
    assert_eq!(recorded.events, vec![Event::from(expected)]);
    // It ends once, whatever report says so.
    assert_eq!(
        recorded.claims,
        vec![
            customer::elevation_report_claim(TENANT, AGENT, Uuid::from_u128(45)),
            customer::elevation_end_claim(TENANT, AGENT, 7),
        ]
    );
    for wrong in [
        None,
        Some(approval(AGENT, AttemptOutcome::Denied)),
        Some(approval(
            DeviceId(Uuid::from_u128(98)),
            AttemptOutcome::Succeeded,
        )),
    ] {
        assert_eq!(
            invalid_fields(when(&given, naming(wrong))),
            vec!["elevation_seq"]
        );
    }
    // Without a seq, the agent's word for the technician is not taken.
    let mut claimed = ended("idem-admin", now());
    claimed.technician_id = Some(UserId(Uuid::from_u128(12)));
    assert_eq!(
        when(&given, report(claimed)).unwrap().events,
        vec![Event::from(ended("idem-admin", now()))]
    );

    // A device of no tenant's, or one revoked since, reports nothing.
    let mut stranger = ended("idem-admin", now());
    stranger.device_id = DeviceId(Uuid::from_u128(99));
    assert_eq!(
        when(&given, report(stranger)),
        Err(DomainError::NotFound("device"))
    );
    let revoked = when(&given, C::RevokeAgent { device_id: AGENT }).unwrap();
    assert_eq!(
        when(
            &with(given, revoked.events),
            report(ended("idem-admin", now()))
        ),
        Err(DomainError::NotFound("device"))
    );
}

#[test]
fn every_event_of_the_catalogue_round_trips() {
    let msp_events = 16;
    let history = with(
        billy(),
        [
            UserSourceSet {
                source: UserSource::Local,
            }
            .into(),
            DesktopLoginConfigured {
                enabled: true,
                method: DesktopLoginMethod::Passwordless,
            }
            .into(),
            DirectoryUserUpdated {
                user_id: BILLY,
                first_name: "B".into(),
                last_name: "J".into(),
                email: "b@g.example".into(),
                personal_email: None,
            }
            .into(),
            DirectoryUserDisabled { user_id: BILLY }.into(),
            DirectoryUserEnabled { user_id: BILLY }.into(),
            PasswordlessEnabled { user_id: BILLY }.into(),
            BrandingUpdated {
                version: 1,
                background: Some(image(1)),
                logo: None,
                text: None,
            }
            .into(),
            SharedAccountConfigured {
                username: "idem-admin".into(),
                elevation_minutes: 45,
            }
            .into(),
            EnrollmentTokenIssued {
                token_id: Uuid::from_u128(40),
                token_digest: "d".into(),
                expires_at: now(),
            }
            .into(),
            EnrollmentTokenIssued {
                token_id: Uuid::from_u128(41),
                token_digest: "e".into(),
                expires_at: now(),
            }
            .into(),
            EnrollmentTokenRevoked {
                token_id: Uuid::from_u128(41),
            }
            .into(),
            AgentEnrolled {
                device_id: AGENT,
                token_id: Uuid::from_u128(40),
                hostname: "WS".into(),
                credential_digest: "c".into(),
            }
            .into(),
            ElevationRecorded {
                device_id: AGENT,
                msp_id: MSP,
                technician_id: UserId(Uuid::from_u128(11)),
                account: "idem-admin".into(),
                outcome: AttemptOutcome::Denied,
            }
            .into(),
            ElevationEnded {
                report_id: Uuid::from_u128(45),
                device_id: AGENT,
                elevation_seq: Some(9),
                technician_id: Some(UserId(Uuid::from_u128(11))),
                account: "idem-admin".into(),
                reason: ElevationEnd::Expired,
                ended_at: now(),
            }
            .into(),
            PasswordChanged {
                user_id: BILLY,
                device_id: AGENT,
                verifier: password("my own one"),
                password_version: 2,
            }
            .into(),
            DesktopLoginRecorded {
                device_id: AGENT,
                username: "x".into(),
                user_id: None,
                method: DesktopLoginMethod::Password,
                outcome: AttemptOutcome::UnknownUser,
                local_account: None,
            }
            .into(),
            AgentRevoked { device_id: AGENT }.into(),
            SessionStarted {
                session_id: Uuid::from_u128(50),
                user_id: UserId(Uuid::from_u128(11)),
                msp_id: Some(MSP),
                device_id: None,
                method: SessionMethod::Sso,
                token_digest: "t".into(),
                expires_at: now(),
            }
            .into(),
            SessionEnded {
                session_id: Uuid::from_u128(50),
            }
            .into(),
            DirectoryUserDeleted { user_id: BILLY }.into(),
            MasterKeyDisabled { key_version: 1 }.into(),
        ],
    );
    let mut seen = std::collections::BTreeSet::new();
    for event in &history {
        let stored = event.to_json().unwrap();
        assert_eq!(
            &Event::from_stored(event.type_name(), event.schema_version(), &stored).unwrap(),
            event
        );
        seen.insert(event.type_name());
    }
    assert!(
        CustomerTenant::replay(&history).unwrap().is_some(),
        "the history folds"
    );
    assert_eq!(
        seen.len() + msp_events - 1 + domain::operator::OPERATOR_EVENTS.len(),
        CATALOGUE.len(),
        "with the MSP's 16 (UserSourceSet is in both) and the operator log's (tests/operator.rs), \
         every event is exercised"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn sealed_fields_never_appear_in_clear(
        secret in "[ -~]{8,40}",
        local in "[a-z]{6,20}",
    ) {
        let key = key();
        let sealer = sealer(&key);
        let verifier = sealer.password(&PasswordPolicy::default(), FAST, BILLY, &secret, [1; 16], [2; 24], &mut HashMemory::default()).unwrap();
        let personal = format!("{local}@home.example");
        let sealed_email = sealer.personal_email(BILLY, &personal, [3; 24]).unwrap();
        let mut command = create_billy(Some(verifier));
        if let C::CreateUser { personal_email, .. } = &mut command {
            *personal_email = Some(sealed_email);
        }
        let decision = when(&keyed(), command).unwrap();
        let given = with(keyed(), decision.events.clone());
        let changed = when(&given, C::SetPassword { user_id: BILLY, verifier: password("another password"), must_change: true }).unwrap();
        for event in decision.events.iter().chain(&changed.events) {
            let json = String::from_utf8(event.to_json().unwrap()).unwrap();
            proptest::prop_assert!(!json.contains(&secret), "password in clear: {json}");
            proptest::prop_assert!(!json.contains(&personal), "personal email in clear: {json}");
            proptest::prop_assert!(!json.contains("argon2"), "verifier in clear: {json}");
            let debug = format!("{:?}", event);
            proptest::prop_assert!(!debug.contains(&secret));
        }
        let tenant = state(&given);
        let stored = &tenant.users[&BILLY].password.as_ref().unwrap().0;
        proptest::prop_assert!(verify(&key, TENANT, BILLY, stored, &secret).unwrap());
    }
}

#[test]
fn a_revoked_enrollment_token_enrolls_nothing() {
    let issue = |given: &Vec<Event>, id: u128, digest: &str| {
        let issued = when(
            given,
            C::IssueEnrollmentToken {
                token_id: Uuid::from_u128(id),
                token_digest: digest.into(),
                now: now(),
            },
        )
        .unwrap();
        with(given.clone(), issued.events)
    };
    let given = issue(&issue(&opened(), 1, "a"), 2, "b");
    let revoke = |id: u128, at: DateTime<Utc>| C::RevokeEnrollmentToken {
        token_id: Uuid::from_u128(id),
        now: at,
    };
    let revoked = when(&given, revoke(1, now() + Duration::hours(1))).unwrap();
    assert_eq!(
        revoked.events,
        vec![Event::from(EnrollmentTokenRevoked {
            token_id: Uuid::from_u128(1)
        })]
    );
    let given = with(given, revoked.events);
    let enroll = |digest: &str, device: u128| C::EnrollAgent {
        token_digest: digest.into(),
        device_id: DeviceId(Uuid::from_u128(device)),
        hostname: "WS".into(),
        credential_digest: format!("c{device}"),
        now: now() + Duration::hours(2),
    };
    assert!(matches!(
        when(&given, enroll("a", 70)),
        Err(DomainError::Unauthenticated(_))
    ));
    // The other token is untouched.
    let enrolled = when(&given, enroll("b", 71)).unwrap();
    let given = with(given, enrolled.events);

    // Nothing is left to withdraw of a revoked, used, expired or unknown token.
    for (id, at) in [
        (1, now() + Duration::hours(3)),
        (2, now() + Duration::hours(3)),
        (9, now()),
    ] {
        assert!(
            matches!(
                when(&given, revoke(id, at)),
                Err(DomainError::NotFound("enrollment token"))
            ),
            "{id}"
        );
    }
    let expiring = issue(&opened(), 3, "c");
    assert!(matches!(
        when(&expiring, revoke(3, now() + ENROLLMENT_TOKEN_LIFETIME)),
        Err(DomainError::NotFound(_))
    ));
    assert!(
        when(
            &expiring,
            revoke(3, now() + ENROLLMENT_TOKEN_LIFETIME - Duration::seconds(1))
        )
        .is_ok()
    );
    let tenant = state(&given);
    assert!(tenant.enrollment_tokens.is_empty());
    assert!(tenant.enrollment_token_digests.is_empty());
}

/// Billy with an enrolled workstation's agent.
fn billy_at_a_workstation() -> Vec<Event> {
    with(
        billy(),
        [AgentEnrolled {
            device_id: AGENT,
            token_id: Uuid::from_u128(40),
            hostname: "WS-001".into(),
            credential_digest: "c1".into(),
        }
        .into()],
    )
}

fn change_own(verifier: Sealed, device_id: DeviceId, replaces_version: u32) -> C {
    C::ChangeOwnPassword {
        user_id: BILLY,
        device_id,
        verifier,
        replaces_version,
    }
}

#[test]
fn a_temporary_password_is_changed_by_its_user_at_a_workstation() {
    let reset = when(
        &billy_at_a_workstation(),
        C::SetPassword {
            user_id: BILLY,
            verifier: password("temporary1"),
            must_change: true,
        },
    )
    .unwrap();
    assert!(
        matches!(&reset.events[..], [Event::PasswordSet(e)] if e.must_change && e.password_version == 2)
    );
    let given = with(billy_at_a_workstation(), reset.events);
    assert!(state(&given).users[&BILLY].must_change_password);

    // Only an enrolled workstation, and only against the version its check saw: a reset
    // that lands between the check and the change wins.
    assert_eq!(
        when(
            &given,
            change_own(password("my own one"), DeviceId(Uuid::nil()), 2)
        ),
        Err(DomainError::NotFound("device"))
    );
    assert!(matches!(
        when(&given, change_own(password("my own one"), AGENT, 1)),
        Err(DomainError::Conflict(_))
    ));
    let changed = when(&given, change_own(password("my own one"), AGENT, 2)).unwrap();
    let [Event::PasswordChanged(e)] = &changed.events[..] else {
        panic!("{:?}", changed.events)
    };
    assert_eq!((e.device_id, e.password_version), (AGENT, 3));
    let given = with(given, changed.events);
    let billy = &state(&given).users[&BILLY];
    assert!(!billy.must_change_password);
    assert_eq!(billy.password_version, 3);
    let stored = &billy.password.as_ref().unwrap().0;
    assert!(verify(&key(), TENANT, BILLY, stored, "my own one").unwrap());
    assert!(!verify(&key(), TENANT, BILLY, stored, "temporary1").unwrap());

    // A disabled user changes nothing.
    let disabled = when(&given, disable_billy()).unwrap();
    assert!(matches!(
        when(
            &with(given, disabled.events),
            change_own(password("again mine"), AGENT, 3)
        ),
        Err(DomainError::Conflict(why)) if why.contains("disabled")
    ));
}

#[test]
fn a_user_created_with_a_temporary_password_must_change_it() {
    let mut command = create_billy(Some(password("temporary1")));
    if let C::CreateUser {
        must_change_password,
        ..
    } = &mut command
    {
        *must_change_password = true;
    }
    let created = when(&keyed(), command).unwrap();
    assert!(matches!(&created.events[1], Event::PasswordSet(e) if e.must_change));
    assert!(state(&with(keyed(), created.events)).users[&BILLY].must_change_password);

    // Without a password there is nothing to change.
    let mut command = create_billy(None);
    if let C::CreateUser {
        must_change_password,
        ..
    } = &mut command
    {
        *must_change_password = true;
    }
    assert_eq!(
        invalid_fields(when(&keyed(), command)),
        vec!["must_change_password"]
    );
    // Nor can a user without one change it.
    let given = with(
        keyed(),
        when(&keyed(), create_billy(None))
            .unwrap()
            .events
            .into_iter()
            .chain([AgentEnrolled {
                device_id: AGENT,
                token_id: Uuid::from_u128(40),
                hostname: "WS-001".into(),
                credential_digest: "c1".into(),
            }
            .into()]),
    );
    assert!(matches!(
        when(&given, change_own(password("my own one"), AGENT, 0)),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn a_password_set_before_temporary_ones_existed_is_not_one() {
    let sealed = password("correct horse");
    let v1 = serde_json::json!({
        "user_id": BILLY,
        "verifier": sealed,
        "password_version": 4,
    });
    let event = Event::from_stored("PasswordSet", 1, v1.to_string().as_bytes()).unwrap();
    assert_eq!(
        event,
        Event::from(PasswordSet {
            user_id: BILLY,
            verifier: sealed,
            password_version: 4,
            must_change: false,
        })
    );
}
