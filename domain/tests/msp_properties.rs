//! Properties of the MSP tenant over random command sequences: decisions are deterministic,
//! folding the same events twice gives the same state, and every event survives its stored form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, TimeZone, Utc};
use domain::event::Event;
use domain::ids::{DeviceId, TenantId, UserId};
use domain::msp::{self, MspCommand, MspTenant};
use proptest::prelude::*;
use uuid::Uuid;

fn user(n: u8) -> UserId {
    UserId(Uuid::from_u128(10 + u128::from(n)))
}

fn customer(n: u8) -> TenantId {
    TenantId(Uuid::from_u128(100 + u128::from(n)))
}

/// Commands over a small world (4 users, 3 customers, a few codes), so that sequences collide.
fn command() -> impl Strategy<Value = MspCommand> {
    let when = (0i64..40)
        .prop_map(|m| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(m));
    prop_oneof![
        (0u8..4, "[a-c]{1,2}").prop_map(|(n, e)| MspCommand::AddUser {
            user_id: user(n),
            email: format!("{e}@acme.example"),
            first_name: None,
            last_name: None,
        }),
        (0u8..4).prop_map(|n| MspCommand::RemoveUser { user_id: user(n) }),
        (0u8..4).prop_map(|n| MspCommand::MakeAdmin { user_id: user(n) }),
        (0u8..4).prop_map(|n| MspCommand::RevokeAdmin { user_id: user(n) }),
        (0u8..3).prop_map(|n| MspCommand::CreateCustomer {
            customer_id: customer(n),
        }),
        (0u8..3).prop_map(|n| MspCommand::DeleteCustomer {
            customer_id: customer(n)
        }),
        (0u8..4, 0u8..3).prop_map(|(u, c)| MspCommand::Delegate {
            user_id: user(u),
            customer_id: customer(c)
        }),
        (0u8..4, 0u8..3).prop_map(|(u, c)| MspCommand::RevokeDelegation {
            user_id: user(u),
            customer_id: customer(c)
        }),
        ("[a-c]{1,2}", "[12]", when.clone()).prop_map(|(e, code, now)| {
            MspCommand::StartOnboarding {
                email: format!("{e}@acme.example"),
                code,
                now,
            }
        }),
        ("[a-c]{1,2}", "[12]", 0u8..3, when).prop_map(|(e, code, d, now)| {
            MspCommand::CompleteOnboarding {
                email: format!("{e}@acme.example"),
                code,
                device_id: DeviceId(Uuid::from_u128(1000 + u128::from(d))),
                device_name: "phone".into(),
                public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                now,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn folding_is_deterministic_and_matches_incremental_state(commands in proptest::collection::vec(command(), 0..40), cut in any::<usize>()) {
        let signup = MspCommand::SignUp {
            tenant_id: TenantId(Uuid::from_u128(1)),
            name: "acme".into(),
            display_name: "Acme".into(),
            admin_user_id: user(9),
            admin_email: "admin@acme.example".into(),
        };
        let mut history: Vec<Event> = msp::decide(None, signup).unwrap().events;
        let mut state = MspTenant::replay(&history).unwrap().unwrap();
        for command in commands {
            let decided = msp::decide(Some(&state), command.clone());
            prop_assert_eq!(&decided, &msp::decide(Some(&state), command), "decide is deterministic");
            let Ok(decision) = decided else { continue };
            for event in decision.events {
                state.apply(&event).unwrap();
                let stored = event.to_json().unwrap();
                prop_assert_eq!(
                    &Event::from_stored(event.type_name(), event.schema_version(), &stored).unwrap(),
                    &event
                );
                history.push(event);
            }
            prop_assert!(state.users.values().any(|u| u.admin), "an admin always remains");
        }
        let replayed = MspTenant::replay(&history).unwrap().unwrap();
        prop_assert_eq!(&replayed, &state);
        prop_assert_eq!(MspTenant::replay(&history).unwrap().unwrap(), replayed, "folding twice gives the same state");

        // A snapshot anywhere, folded on: the same state.
        let taken = cut % history.len() + 1;
        let prefix = MspTenant::replay(&history[..taken]).unwrap().unwrap();
        let bytes = domain::snapshot::encode_msp(&prefix).unwrap();
        let domain::snapshot::TenantState::Msp(mut resumed) = domain::snapshot::decode(&bytes).unwrap() else {
            panic!("an MSP snapshot decodes as an MSP");
        };
        for event in &history[taken..] {
            resumed.apply(event).unwrap();
        }
        prop_assert_eq!(resumed, state, "folded on from a snapshot after {} events", taken);
    }
}
