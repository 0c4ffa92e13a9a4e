//! The operator log's events: each stores and reads back, each is in the catalogue, none
//! belongs in a tenant's stream, and no tenant can take the operator log's name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use domain::customer::CustomerTenant;
use domain::decision::DomainError;
use domain::event::*;
use domain::ids::{TenantId, UserId};
use domain::msp::MspTenant;
use domain::operator::{OPERATOR_EVENTS, OPERATOR_LOG_NAME};
use uuid::Uuid;

fn operator_events() -> Vec<Event> {
    vec![
        RootKeyRotated {
            previous_key_id: "a1b2c3d4e5f60718".into(),
            key_id: "0f1e2d3c4b5a6978".into(),
        }
        .into(),
        BackupWritten {
            directory: "/backups/monday".into(),
            head_position: 1_234,
            events: 1_230,
        }
        .into(),
        BackupRestored {
            backup: "/backups/monday".into(),
            head_position: 1_234,
            keys_restored: 7,
            keys_missing: 1,
        }
        .into(),
        ReadModelsRebuilt {
            projection: "directory".into(),
            generation: 3,
        }
        .into(),
    ]
}

#[test]
fn every_operator_event_stores_and_reads_back_and_is_in_the_catalogue() {
    let events = operator_events();
    let names: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(names, OPERATOR_EVENTS, "one of each, in the list's order");
    for event in &events {
        let stored = event.to_json().unwrap();
        assert_eq!(
            Event::from_stored(event.type_name(), event.schema_version(), &stored).unwrap(),
            *event
        );
        assert!(
            CATALOGUE.contains(&(event.type_name(), event.schema_version())),
            "{} is in the catalogue",
            event.type_name()
        );
    }
    // Like every event, unknown fields are refused rather than dropped.
    assert!(matches!(
        Event::from_stored(
            "BackupWritten",
            1,
            br#"{"directory":"/b","head_position":1,"events":1,"keys":[]}"#
        ),
        Err(DecodeError::Malformed(..))
    ));
}

#[test]
fn no_tenant_stream_folds_an_operator_event() {
    let msp = TenantId(Uuid::from_u128(1));
    let opened_msp: Event = MspTenantCreated {
        tenant_id: msp,
        name: "acme".into(),
        display_name: "Acme IT".into(),
        host_label: "acme".into(),
        admin_user_id: UserId(Uuid::from_u128(10)),
        admin_email: "admin@acme.example".into(),
    }
    .into();
    let opened_customer: Event = CustomerTenantOpened {
        tenant_id: TenantId(Uuid::from_u128(2)),
        msp_id: msp,
        name: "contoso".into(),
        display_name: "Contoso".into(),
        host_label: "contoso-acme".into(),
    }
    .into();
    for event in operator_events() {
        let name = event.type_name();
        let msp_history = [opened_msp.clone(), event.clone()];
        assert!(
            matches!(MspTenant::replay(&msp_history), Err(DomainError::Corrupt(why)) if why.contains(name)),
            "an MSP stream refuses {name}"
        );
        let customer_history = [opened_customer.clone(), event];
        assert!(
            matches!(CustomerTenant::replay(&customer_history), Err(DomainError::Corrupt(why)) if why.contains(name)),
            "a customer stream refuses {name}"
        );
    }
}

#[test]
fn no_tenant_can_be_named_as_the_operator_log() {
    let refused = domain::validate::tenant_name("name", OPERATOR_LOG_NAME).unwrap_err();
    assert!(refused.to_string().contains("reserved"), "{refused}");
}
