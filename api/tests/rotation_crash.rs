//! `idemd rotate-root-key` killed with SIGKILL at moments spread over a rotation (idemd not
//! running: the command opens the log itself): whatever the moment, the next open finishes
//! or keeps the rotation so that every tenant key is wrapped by the key in the key file and
//! still opens what it sealed, and the operator log records each rotation that happened once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use api::root_key;
use domain::crypto::{DataKey, Sealed};
use eventlog::{
    Commit, EventLog, Expected, NewEvent, RocksLog, StreamAppend, StreamId, WrappedKey,
};

const TENANTS: usize = 5_000;
const ROUNDS: u32 = 8;

fn event() -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: "MasterKeyEnabled".into(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: "test".into(),
        data: b"{}".to_vec(),
    }
}

/// Writes `TENANTS` tenants' data keys under the data directory's root key (made here), and
/// answers what each sealed.
async fn tenants(data: &Path) -> HashMap<StreamId, Sealed> {
    let log = RocksLog::open(data.join("log")).unwrap();
    let root = root_key::load(&data.join("root.key"), &log)
        .await
        .unwrap()
        .current();
    let mut sealed = HashMap::new();
    for _ in 0..TENANTS / 1000 {
        let mut commit = Commit::new();
        for _ in 0..1000 {
            let stream = StreamId(uuid::Uuid::now_v7());
            let key = DataKey::new(1, rand::random());
            let wrapped = key.wrap(&root, stream.0, rand::random()).unwrap();
            commit = commit.append(
                StreamAppend::new(stream, Expected::NoStream)
                    .event(event())
                    .key(WrappedKey {
                        version: 1,
                        wrapped,
                    }),
            );
            let secret = key
                .seal(stream.0, "password", stream.0.as_bytes(), rand::random())
                .unwrap();
            sealed.insert(stream, secret);
        }
        log.commit(commit).await.unwrap();
    }
    sealed
}

fn rotation(data: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_idemd"))
        .args(["rotate-root-key", "--data-dir"])
        .arg(data)
        .env_remove("IDEM_DATABASE_URL")
        .env_remove("IDEM_KEY_MIRROR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Opens the log as a start does and checks every key against the key file.
async fn every_key_opens(data: &Path, sealed: &HashMap<StreamId, Sealed>) -> String {
    let log = RocksLog::open(data.join("log")).unwrap();
    let keys = root_key::load(&data.join("root.key"), &log).await.unwrap();
    assert!(!root_key::pending_path(&data.join("root.key")).exists());
    let root = keys.current();
    let store = log.data_key_store().await.unwrap();
    assert_eq!(store.len(), sealed.len());
    for (stream, key) in &store {
        let secret = &sealed[stream];
        let key = DataKey::unwrap(&root, stream.0, key.version, &key.wrapped).unwrap();
        let opened = key.open(stream.0, "password", secret).unwrap();
        assert_eq!(&*opened, stream.0.as_bytes());
    }
    root.id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_killed_at_any_moment_leaves_every_key_opening() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let sealed = tenants(data).await;
    let first = every_key_opens(data, &sealed).await;

    // One rotation to the end: how long the command takes here.
    let started = Instant::now();
    let status = rotation(data).wait().await.unwrap();
    assert!(status.success());
    let whole = started.elapsed();
    let mut ids = vec![first, every_key_opens(data, &sealed).await];

    let pending = root_key::pending_path(&data.join("root.key"));
    let mut mid_rotation = 0;
    for round in 0..ROUNDS {
        let mut child = rotation(data);
        // Moments spread over the command's run, from its start to its end.
        tokio::time::sleep(whole * round / ROUNDS).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        if pending.exists() {
            mid_rotation += 1;
        }
        let id = every_key_opens(data, &sealed).await;
        // A kill before the new key was written keeps the old one; after, the next open
        // finishes the rotation to it.
        if ids.last() != Some(&id) {
            ids.push(id);
        }
    }
    assert!(
        mid_rotation > 0,
        "no kill of {ROUNDS} landed between the new key's writing and its rename (run {whole:?})"
    );
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a key came back: {ids:?}");
    assert!(ids.len() >= 3, "{ids:?}");
    // Each rotation that happened is in the operator log once, in order, whether the command
    // or the start after its kill finished it; a killed one that changed nothing is not.
    let log = RocksLog::open(data.join("log")).unwrap();
    let recorded: Vec<(String, String)> = api::operator_log::read(&log)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, event)| match event {
            domain::event::Event::RootKeyRotated(r) => (r.previous_key_id, r.key_id),
            other => panic!("{other:?} in the operator log"),
        })
        .collect();
    let happened: Vec<(String, String)> = ids
        .windows(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    assert_eq!(recorded, happened);
    eprintln!(
        "{mid_rotation} of {ROUNDS} kills between the new key's writing and its rename; run {whole:?}"
    );
}
