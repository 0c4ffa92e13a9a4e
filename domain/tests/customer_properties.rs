//! Properties of the customer tenant over random command sequences with random field values:
//! decisions are deterministic, folding the same events twice gives the same state, and every
//! event produced survives its stored form unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use chrono::{Duration, TimeZone, Utc};
use domain::crypto::{Argon2Params, DataKey, HashMemory, Sealed};
use domain::customer::{self, CustomerCommand as C, CustomerTenant, Sealer};
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use domain::onboarding::Attempt;
use domain::validate::PasswordPolicy;
use proptest::prelude::*;
use uuid::Uuid;

const TENANT: TenantId = TenantId(Uuid::from_u128(2));

fn user(n: u8) -> UserId {
    UserId(Uuid::from_u128(20 + u128::from(n)))
}

fn device(n: u8) -> DeviceId {
    DeviceId(Uuid::from_u128(40 + u128::from(n)))
}

/// Sealed verifiers for each user, made once: argon2id is too slow to run per case.
fn verifiers() -> &'static Vec<Sealed> {
    static SEALED: OnceLock<Vec<Sealed>> = OnceLock::new();
    SEALED.get_or_init(|| {
        let key = DataKey::new(1, [7; 32]);
        let sealer = Sealer {
            key: &key,
            tenant: TENANT,
        };
        let fast = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        (0..3)
            .map(|n| {
                sealer
                    .password(
                        &PasswordPolicy::default(),
                        fast,
                        user(n),
                        "correct horse",
                        [n; 16],
                        [n; 24],
                        &mut HashMemory::default(),
                    )
                    .unwrap()
            })
            .collect()
    })
}

fn command() -> impl Strategy<Value = C> {
    let when = (0i64..120)
        .prop_map(|m| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(m));
    let name = "[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ' -]{0,11}";
    prop_oneof![
        (0u8..3, name, name, "[a-zA-Z0-9.é]{1,8}", "[a-c]").prop_map(
            |(n, first, last, username, mail)| C::CreateUser {
                user_id: user(n),
                first_name: first,
                last_name: last,
                username,
                email: format!("{mail}@globex.example"),
                password: None,
                must_change_password: false,
                personal_email: None,
            }
        ),
        (
            0u8..3,
            proptest::option::of(name),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(n, first, enabled)| C::UpdateUser {
                user_id: user(n),
                first_name: first,
                last_name: None,
                email: None,
                personal_email: None,
                enabled,
            }),
        (0u8..3).prop_map(|n| C::DeleteUser { user_id: user(n) }),
        (0u8..3, any::<bool>()).prop_map(|(n, must_change)| C::SetPassword {
            user_id: user(n),
            verifier: verifiers()[usize::from(n)].clone(),
            must_change,
        }),
        (0u8..3, 0u8..2, 0u32..4).prop_map(|(n, d, replaces_version)| C::ChangeOwnPassword {
            user_id: user(n),
            device_id: device(d),
            verifier: verifiers()[usize::from(n)].clone(),
            replaces_version,
        }),
        (0u8..3).prop_map(|n| C::EnablePasswordless { user_id: user(n) }),
        Just(C::EnableMasterKey { key_version: 1 }),
        Just(C::DisableMasterKey),
        (any::<bool>(), any::<bool>()).prop_map(|(enabled, pw)| C::ConfigureDesktopLogin {
            enabled,
            method: if pw {
                DesktopLoginMethod::Password
            } else {
                DesktopLoginMethod::Passwordless
            },
        }),
        (
            proptest::option::of("[ -~\n]{0,40}"),
            proptest::option::of(0u8..4)
        )
            .prop_map(|(text, logo)| C::UpdateBranding {
                background: None,
                logo: logo.map(|n| ImageRef {
                    blob: format!("{n:064x}"),
                    media_type: "image/png".into(),
                    width: 64,
                    height: 64
                }),
                text,
            }),
        ("[a-zA-Z0-9$@-]{1,22}", proptest::option::of(0u32..600)).prop_map(
            |(username, elevation_minutes)| C::ConfigureSharedAccount {
                username,
                elevation_minutes
            }
        ),
        (0u8..3, when.clone()).prop_map(|(n, now)| C::IssueEnrollmentToken {
            token_id: Uuid::from_u128(60 + u128::from(n)),
            token_digest: format!("token-{n}"),
            now,
        }),
        (0u8..3, 0u8..2, "[A-Z0-9-]{1,10}", when.clone()).prop_map(|(t, d, hostname, now)| {
            C::EnrollAgent {
                token_digest: format!("token-{t}"),
                device_id: device(d),
                hostname,
                credential_digest: format!("cred-{d}"),
                now,
            }
        }),
        (0u8..2).prop_map(|d| C::RevokeAgent {
            device_id: device(d)
        }),
        (0u8..2, 0u8..3, "[a-z]{1,8}").prop_map(|(d, n, username)| C::RecordDesktopLogin(
            DesktopLoginRecorded {
                device_id: device(d),
                username,
                user_id: Some(user(n)),
                method: DesktopLoginMethod::Password,
                outcome: AttemptOutcome::WrongPassword,
                local_account: None,
            }
        )),
        ("[a-c]", "[12]", when.clone()).prop_map(|(mail, code, now)| C::StartOnboarding {
            email: format!("{mail}@globex.example"),
            code,
            now,
        }),
        ("[a-z]{1,6}", "[12]", 0u8..2, when).prop_map(|(mail, code, d, now)| {
            C::CompleteOnboarding {
                email: format!("{mail}@globex.example"),
                attempt: Attempt {
                    code,
                    device_id: DeviceId(Uuid::from_u128(80 + u128::from(d))),
                    device_name: "phone".into(),
                    public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                    now,
                },
            }
        }),
    ]
}

proptest! {
    #[test]
    fn customer_histories_fold_deterministically_and_round_trip(commands in proptest::collection::vec(command(), 0..50), cut in any::<usize>()) {
        let open = C::Open {
            tenant_id: TENANT,
            msp_id: TenantId(Uuid::from_u128(1)),
            msp_name: "acme".into(),
            name: "globex".into(),
            display_name: "Globex".into(),
        };
        let mut history = customer::decide(None, open).unwrap().events;
        let mut state = CustomerTenant::replay(&history).unwrap().unwrap();
        for command in commands {
            let decided = customer::decide(Some(&state), command.clone());
            prop_assert_eq!(&decided, &customer::decide(Some(&state), command), "decide is deterministic");
            let Ok(decision) = decided else { continue };
            for event in decision.events {
                let stored = event.to_json().unwrap();
                let back = Event::from_stored(event.type_name(), event.schema_version(), &stored).unwrap();
                prop_assert_eq!(&back, &event, "stored form of {}", event.type_name());
                state.apply(&event).unwrap();
                history.push(event);
            }
        }
        let replayed = CustomerTenant::replay(&history).unwrap().unwrap();
        prop_assert_eq!(&replayed, &state);
        prop_assert_eq!(CustomerTenant::replay(&history).unwrap().unwrap(), replayed);

        // A snapshot anywhere, folded on: the same state.
        let taken = cut % history.len() + 1;
        let prefix = CustomerTenant::replay(&history[..taken]).unwrap().unwrap();
        let bytes = domain::snapshot::encode_customer(&prefix).unwrap();
        let domain::snapshot::TenantState::Customer(mut resumed) = domain::snapshot::decode(&bytes).unwrap() else {
            panic!("a customer snapshot decodes as a customer");
        };
        for event in &history[taken..] {
            resumed.apply(event).unwrap();
        }
        prop_assert_eq!(*resumed, state, "folded on from a snapshot after {} events", taken);
    }
}
