//! The shortcuts a fold may take. Snapshots of folded state: a state comes back from its bytes
//! exactly, folding on from a snapshot gives what folding from the first event gives, bytes of
//! another version or shape are refused, and the bytes' shape is pinned by a golden file per
//! `STATE_VERSION`. Event types a fold passes over undecoded: each really leaves the state as
//! it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use domain::crypto::Sealed;
use domain::customer::CustomerTenant;
use domain::event::{CATALOGUE, Event};
use domain::msp::MspTenant;
use domain::snapshot::{self, STATE_VERSION, SnapshotError, TenantState};
use serde_json::{Value, json};
use uuid::Uuid;

fn id(n: u128) -> String {
    Uuid::from_u128(n).to_string()
}

fn sealed(byte: u8) -> Value {
    serde_json::to_value(Sealed {
        key_version: 1,
        nonce: [byte; 24],
        ciphertext: vec![byte; 32],
    })
    .unwrap()
}

/// An event of the catalogue's current version, from its JSON.
fn event(kind: &str, data: Value) -> Event {
    let version = CATALOGUE.iter().find(|(name, _)| *name == kind).unwrap().1;
    Event::from_stored(kind, version, &serde_json::to_vec(&data).unwrap()).unwrap()
}

const T: &str = "2026-11-24T10:00:00Z";

/// An MSP history touching every field of its state.
fn msp_history() -> Vec<Event> {
    vec![
        event(
            "MspTenantCreated",
            json!({"tenant_id": id(1), "name": "acme-msp", "display_name": "Acme MSP",
                   "host_label": "acme", "admin_user_id": id(10), "admin_email": "a@acme.test"}),
        ),
        event("UserSourceSet", json!({"source": "local"})),
        event(
            "MspUserAdded",
            json!({"user_id": id(11), "email": "t@acme.test", "first_name": "Tech",
                   "last_name": null}),
        ),
        event(
            "OnboardingCodeIssued",
            json!({"user_id": id(11), "code_digest": "ab".repeat(32), "expires_at": T}),
        ),
        event("OnboardingCodeRejected", json!({"user_id": id(11)})),
        event(
            "DeviceEnrolled",
            json!({"user_id": id(10), "device_id": id(20), "device_name": "phone",
                   "public_key": "key"}),
        ),
        event("CustomerTenantCreated", json!({"customer_id": id(2)})),
        event("CustomerTenantCreated", json!({"customer_id": id(3)})),
        event(
            "TechnicianDelegated",
            json!({"user_id": id(11), "customer_id": id(2)}),
        ),
        event(
            "AuditorGranted",
            json!({"user_id": id(11), "tenant_id": id(3)}),
        ),
        event(
            "AuditorGranted",
            json!({"user_id": id(11), "tenant_id": id(2)}),
        ),
        event("CustomerTenantDeleted", json!({"customer_id": id(3)})),
        event(
            "SessionStarted",
            json!({"session_id": id(30), "user_id": id(10),
            "msp_id": null, "device_id": id(20), "method": "qr", "token_digest": "cd".repeat(32),
            "expires_at": T}),
        ),
    ]
}

/// A customer history touching every field of its state.
fn customer_history() -> Vec<Event> {
    vec![
        event(
            "CustomerTenantOpened",
            json!({"tenant_id": id(2), "msp_id": id(1), "name": "contoso",
                   "display_name": "Contoso", "host_label": "contoso"}),
        ),
        event("MasterKeyEnabled", json!({"key_version": 1})),
        event(
            "DesktopLoginConfigured",
            json!({"enabled": true, "method": "password"}),
        ),
        event(
            "DirectoryUserCreated",
            json!({"user_id": id(40), "first_name": "Billy", "last_name": "Smith",
                   "username": "billy", "email": "billy@contoso.test",
                   "personal_email": sealed(1)}),
        ),
        event(
            "PasswordSet",
            json!({"user_id": id(40), "verifier": sealed(2), "password_version": 1,
                   "must_change": true}),
        ),
        event(
            "DirectoryUserCreated",
            json!({"user_id": id(41), "first_name": "Jane", "last_name": "Doe",
                   "username": "jane", "email": "jane@contoso.test", "personal_email": null}),
        ),
        event("PasswordlessEnabled", json!({"user_id": id(41)})),
        event(
            "OnboardingCodeIssued",
            json!({"user_id": id(41), "code_digest": "ef".repeat(32), "expires_at": T}),
        ),
        event(
            "DeviceEnrolled",
            json!({"user_id": id(41), "device_id": id(21), "device_name": "jane's phone",
                   "public_key": "key2"}),
        ),
        event("DirectoryUserDisabled", json!({"user_id": id(40)})),
        event(
            "BrandingUpdated",
            json!({"version": 1,
                   "background": {"blob": "01".repeat(32), "media_type": "image/png",
                                  "width": 1920, "height": 1080},
                   "logo": null, "text": "Welcome"}),
        ),
        event(
            "SharedAccountConfigured",
            json!({"username": "idem-admin", "elevation_minutes": 30}),
        ),
        event(
            "EnrollmentTokenIssued",
            json!({"token_id": id(50), "token_digest": "12".repeat(32), "expires_at": T}),
        ),
        event(
            "EnrollmentTokenIssued",
            json!({"token_id": id(51), "token_digest": "34".repeat(32), "expires_at": T}),
        ),
        event(
            "AgentEnrolled",
            json!({"device_id": id(60), "token_id": id(50), "hostname": "ws-01",
                   "credential_digest": "56".repeat(32)}),
        ),
        event(
            "DesktopLoginRecorded",
            json!({"device_id": id(60), "username": "billy", "user_id": id(40),
                   "method": "password", "outcome": "succeeded", "local_account": "create"}),
        ),
    ]
}

fn msp(events: &[Event]) -> MspTenant {
    MspTenant::replay(events).unwrap().unwrap()
}

fn customer(events: &[Event]) -> CustomerTenant {
    CustomerTenant::replay(events).unwrap().unwrap()
}

#[test]
fn a_state_comes_back_from_its_snapshot_as_it_was_folded() {
    let state = msp(&msp_history());
    let bytes = snapshot::encode_msp(&state).unwrap();
    assert_eq!(snapshot::decode(&bytes).unwrap(), TenantState::Msp(state));
    let state = customer(&customer_history());
    let bytes = snapshot::encode_customer(&state).unwrap();
    assert_eq!(
        snapshot::decode(&bytes).unwrap(),
        TenantState::Customer(Box::new(state))
    );
}

/// A state of either kind encodes to the same bytes as through its kind's own function.
#[test]
fn a_state_of_either_kind_encodes_as_its_kind_does() {
    let state = msp(&msp_history());
    assert_eq!(
        snapshot::encode_state(&TenantState::Msp(state.clone())).unwrap(),
        snapshot::encode_msp(&state).unwrap()
    );
    let state = customer(&customer_history());
    let bytes = snapshot::encode_state(&TenantState::Customer(Box::new(state.clone()))).unwrap();
    assert_eq!(bytes, snapshot::encode_customer(&state).unwrap());
}

/// Wherever the snapshot was taken, folding the rest of the stream onto it gives the state
/// folded from the first event.
#[test]
fn folding_on_from_a_snapshot_is_folding_from_the_start() {
    let history = msp_history();
    let whole = msp(&history);
    for taken in 1..history.len() {
        let bytes = snapshot::encode_msp(&msp(&history[..taken])).unwrap();
        let TenantState::Msp(mut state) = snapshot::decode(&bytes).unwrap() else {
            panic!("an MSP snapshot decodes as an MSP");
        };
        for event in &history[taken..] {
            state.apply(event).unwrap();
        }
        assert_eq!(state, whole, "snapshot after {taken} events");
    }
    let history = customer_history();
    let whole = customer(&history);
    for taken in 1..history.len() {
        let bytes = snapshot::encode_customer(&customer(&history[..taken])).unwrap();
        let TenantState::Customer(mut state) = snapshot::decode(&bytes).unwrap() else {
            panic!("a customer snapshot decodes as a customer");
        };
        for event in &history[taken..] {
            state.apply(event).unwrap();
        }
        assert_eq!(*state, whole, "snapshot after {taken} events");
    }
}

fn edited(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn bytes_of_another_version_or_shape_are_refused() {
    let bytes = snapshot::encode_customer(&customer(&customer_history())).unwrap();
    let other = edited(&bytes, |v| v["version"] = json!(STATE_VERSION + 1));
    assert!(matches!(
        snapshot::decode(&other),
        Err(SnapshotError::OtherVersion { found }) if found == STATE_VERSION + 1
    ));
    let shapes: [(&str, Vec<u8>); 6] = [
        (
            "a field this build does not know",
            edited(&bytes, |v| v["state"]["customer"]["seats"] = json!(5)),
        ),
        (
            "a field this build needs, missing",
            edited(&bytes, |v| {
                v["state"]["customer"]
                    .as_object_mut()
                    .unwrap()
                    .remove("agents");
            }),
        ),
        (
            "a nested field this build does not know",
            edited(&bytes, |v| {
                let users = v["state"]["customer"]["users"].as_object_mut().unwrap();
                let user = users.values_mut().next().unwrap();
                user["nickname"] = json!("B");
            }),
        ),
        (
            "an unknown kind of tenant",
            edited(&bytes, |v| {
                v["state"] = json!({"reseller": v["state"]["customer"].clone()})
            }),
        ),
        ("no version", edited(&bytes, |v| v["version"] = Value::Null)),
        ("not JSON", b"\x00\x01 not json".to_vec()),
    ];
    for (what, bytes) in shapes {
        assert!(
            matches!(snapshot::decode(&bytes), Err(SnapshotError::Malformed(_))),
            "{what} must not decode"
        );
    }
}

/// The bytes' shape for this `STATE_VERSION`, pinned: a change to a state type changes them,
/// and old snapshots of another shape no longer decode (they are folded again from the log),
/// but a change of meaning with the same shape would decode wrong. So a change here asks for
/// `STATE_VERSION` to be bumped and the file of the new version written
/// (`IDEM_WRITE_GOLDEN=1 cargo test -p idem-domain --test snapshot`).
#[test]
fn the_state_shape_of_this_version_is_pinned() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/state")
        .join(format!("v{STATE_VERSION}.json"));
    let now = json!({
        "msp": serde_json::from_slice::<Value>(&snapshot::encode_msp(&msp(&msp_history())).unwrap()).unwrap(),
        "customer": serde_json::from_slice::<Value>(
            &snapshot::encode_customer(&customer(&customer_history())).unwrap()
        ).unwrap(),
    });
    if std::env::var_os("IDEM_WRITE_GOLDEN").is_some() {
        assert!(
            !path.exists(),
            "{} exists: a new shape needs a new STATE_VERSION, not a rewritten file",
            path.display()
        );
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let pinned: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with IDEM_WRITE_GOLDEN=1 once STATE_VERSION is bumped",
            path.display()
        )
    }))
    .unwrap();
    assert!(
        pinned == now,
        "the folded state's shape changed: bump domain::snapshot::STATE_VERSION and write \
         tests/state/v{{new}}.json with IDEM_WRITE_GOLDEN=1"
    );
}

/// Every event type a fold may pass over leaves the state as it is, in the middle of a full
/// history, and only its current version is passed over (an older one is upcast by decoding).
#[test]
fn the_event_types_a_fold_passes_over_change_nothing() {
    let samples = [
        event(
            "SessionStarted",
            json!({"session_id": id(31), "user_id": id(10), "msp_id": null,
                   "device_id": id(20), "method": "qr", "token_digest": "aa".repeat(32),
                   "expires_at": T}),
        ),
        event("SessionEnded", json!({"session_id": id(31)})),
        event(
            "DesktopLoginRecorded",
            json!({"device_id": id(60), "username": "jane", "user_id": id(41),
                   "method": "passwordless", "outcome": "succeeded", "local_account": null}),
        ),
        event(
            "ElevationRecorded",
            json!({"device_id": id(60), "msp_id": id(1), "technician_id": id(11),
                   "account": "idem-admin", "outcome": "denied"}),
        ),
        event(
            "ElevationEnded",
            json!({"report_id": id(70), "device_id": id(60), "elevation_seq": 9, "technician_id": id(11),
                   "account": "idem-admin", "reason": "expired", "ended_at": T}),
        ),
    ];
    let version = |event: &Event| event.schema_version();
    let msp_state = msp(&msp_history());
    for name in MspTenant::IGNORED {
        let sample = samples.iter().find(|e| e.type_name() == *name).unwrap();
        let mut state = msp_state.clone();
        state.apply(sample).unwrap();
        assert_eq!(state, msp_state, "{name} changed an MSP's state");
        assert!(MspTenant::ignores(name, version(sample)));
        assert!(!MspTenant::ignores(name, version(sample) + 1));
    }
    let customer_state = customer(&customer_history());
    for name in CustomerTenant::IGNORED {
        let sample = samples.iter().find(|e| e.type_name() == *name).unwrap();
        let mut state = customer_state.clone();
        state.apply(sample).unwrap();
        assert_eq!(state, customer_state, "{name} changed a customer's state");
        assert!(CustomerTenant::ignores(name, version(sample)));
        assert!(!CustomerTenant::ignores(name, version(sample) + 1));
    }
    // A login at a workstation is no MSP's business: an MSP's fold decodes it (and refuses it).
    assert!(!MspTenant::ignores("DesktopLoginRecorded", 1));
    assert!(!CustomerTenant::ignores("PasswordSet", 2));
    assert!(!CustomerTenant::ignores("NoSuchEvent", 1));
}
