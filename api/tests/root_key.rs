//! Root key rotation on a real log: every tenant's data key is wrapped again by the new key and
//! still opens what it sealed, the key file is replaced whole (0600), the old key no longer
//! opens the store, and a rotation stopped at any point is finished by the next start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use api::operator_log::{ACTOR, START_ACTOR};
use api::root_key::{self, RootKeys};
use domain::crypto::{DataKey, RootKey, Sealed};
use domain::event::{Event, RootKeyRotated};
use eventlog::testkit::event;
use eventlog::{
    Commit, EventLog, Expected, KeyRewrap, RocksLog, StreamAppend, StreamId, WrappedKey,
};
use uuid::Uuid;

/// A tenant with a data key, and something it sealed.
struct Tenant {
    stream: StreamId,
    sealed: Sealed,
}

/// Stores a data key for a new tenant, wrapped by `root`.
async fn tenant_with_a_key(log: &RocksLog, root: &RootKey) -> Tenant {
    let stream = StreamId(Uuid::now_v7());
    let key = DataKey::new(1, rand::random());
    let wrapped = key.wrap(root, stream.0, rand::random()).unwrap();
    log.append(
        StreamAppend::new(stream, Expected::NoStream)
            .event(event("MasterKeyEnabled", ""))
            .key(WrappedKey {
                version: 1,
                wrapped,
            }),
    )
    .await
    .unwrap();
    let sealed = key
        .seal(stream.0, "password", stream.0.as_bytes(), rand::random())
        .unwrap();
    Tenant { stream, sealed }
}

/// Every stored key is wrapped by `root`, and opens what its tenant sealed before.
async fn all_wrapped_by(log: &RocksLog, root: &RootKey, tenants: &[Tenant]) {
    let store = log.data_key_store().await.unwrap();
    assert_eq!(store.len(), tenants.len());
    for tenant in tenants {
        let (_, key) = store.iter().find(|(s, _)| *s == tenant.stream).unwrap();
        assert!(root.wrapped(&key.wrapped), "wrapped by {}", root.id());
        let key = DataKey::unwrap(root, tenant.stream.0, 1, &key.wrapped).unwrap();
        let opened = key
            .open(tenant.stream.0, "password", &tenant.sealed)
            .unwrap();
        assert_eq!(&*opened, tenant.stream.0.as_bytes());
    }
}

/// The rotations the operator log records: each one's actor and event.
async fn rotations(log: &RocksLog) -> Vec<(String, RootKeyRotated)> {
    api::operator_log::read(log)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(recorded, event)| match event {
            Event::RootKeyRotated(rotated) => Some((recorded.actor, rotated)),
            _ => None,
        })
        .collect()
}

fn rotation_of(previous: &RootKey, new: &RootKey) -> RootKeyRotated {
    RootKeyRotated {
        previous_key_id: previous.id(),
        key_id: new.id(),
    }
}

fn key_file_of(dir: &Path) -> std::path::PathBuf {
    dir.join("root.key")
}

/// A new data directory: its key file's path, its log, and the root key a start made there.
async fn fresh() -> (tempfile::TempDir, std::path::PathBuf, RocksLog, RootKeys) {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file_of(dir.path());
    let log = RocksLog::open(dir.path().join("log")).unwrap();
    let keys = root_key::load(&file, &log).await.unwrap();
    (dir, file, log, keys)
}

fn read_key(path: &Path) -> RootKey {
    root_key::read_file(path).unwrap().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_rotation_rewraps_every_key_and_replaces_the_key_file() {
    let (dir, file, log, keys) = fresh().await;
    let old = keys.current();
    assert_eq!(mode(&file), 0o600);
    let mut tenants = Vec::new();
    for _ in 0..3 {
        tenants.push(tenant_with_a_key(&log, &old).await);
    }
    // A deleted tenant's key is gone with it, and is not brought back.
    let gone = tenant_with_a_key(&log, &old).await;
    log.commit(Commit::new().delete(gone.stream)).await.unwrap();
    let head = log.head_position();

    let rotated = root_key::rotate(&log, &keys, &file, ACTOR).await.unwrap();
    let new = read_key(&file);
    assert_eq!(rotated.previous_key_id, old.id());
    assert_eq!(rotated.key_id, new.id());
    assert_ne!(new.id(), old.id());
    assert_eq!(rotated.rewrapped, 3);
    assert_eq!(
        keys.current().id(),
        new.id(),
        "the service wraps with the new key"
    );
    assert_eq!(mode(&file), 0o600);
    assert!(!root_key::pending_path(&file).exists());
    // The log's only change: the rotation, in the operator log, as the operator's.
    assert_eq!(log.head_position(), head + 1);
    assert_eq!(
        rotations(&log).await,
        vec![(ACTOR.to_owned(), rotation_of(&old, &new))]
    );
    all_wrapped_by(&log, &new, &tenants).await;
    // The running service opens them with the keys it holds now.
    for (stream, stored) in log.data_key_store().await.unwrap() {
        keys.unwrap(stream.0, stored.version, &stored.wrapped)
            .unwrap();
    }

    // A start takes the new key; the old one back in the file is refused.
    drop(log);
    let log = RocksLog::open(dir.path().join("log")).unwrap();
    assert_eq!(
        root_key::load(&file, &log).await.unwrap().current().id(),
        new.id()
    );
    root_key::write_private_file(&file, old.to_file_contents().as_bytes()).unwrap();
    let refused = root_key::load(&file, &log).await.err().unwrap().to_string();
    assert!(
        refused.contains("does not open the tenant keys"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_start_finishes_a_rotation_a_stop_interrupted() {
    // Where the stop came: the new key written and nothing rewrapped, some keys rewrapped,
    // all rewrapped but not recorded yet, all rewrapped and recorded but the file not
    // renamed yet.
    for (rewrapped_before_the_stop, recorded) in [(0, false), (2, false), (4, false), (4, true)] {
        let (dir, file, log, keys) = fresh().await;
        let old = keys.current();
        let mut tenants = Vec::new();
        for _ in 0..4 {
            tenants.push(tenant_with_a_key(&log, &old).await);
        }
        let new = root_key::generate();
        let pending = root_key::pending_path(&file);
        root_key::write_private_file(&pending, new.to_file_contents().as_bytes()).unwrap();
        let store = log.data_key_store().await.unwrap();
        let mut commit = Commit::new();
        for (stream, key) in store.iter().take(rewrapped_before_the_stop) {
            commit = commit.rewrap(KeyRewrap {
                stream: *stream,
                version: key.version,
                from: key.wrapped.clone(),
                to: DataKey::rewrap(&old, &new, stream.0, 1, &key.wrapped, rand::random()).unwrap(),
            });
        }
        if rewrapped_before_the_stop > 0 {
            log.commit(commit).await.unwrap();
        }
        if recorded {
            api::operator_log::record(&log, rotation_of(&old, &new), ACTOR)
                .await
                .unwrap();
        }
        drop(log);

        let log = RocksLog::open(dir.path().join("log")).unwrap();
        let keys = root_key::load(&file, &log).await.unwrap();
        assert_eq!(keys.current().id(), new.id());
        assert_eq!(read_key(&file).id(), new.id());
        assert!(!pending.exists());
        all_wrapped_by(&log, &new, &tenants).await;
        // Recorded once: by the start that finished it, unless the stopped run had.
        let by = if recorded { ACTOR } else { START_ACTOR };
        assert_eq!(
            rotations(&log).await,
            vec![(by.to_owned(), rotation_of(&old, &new))],
            "stopped after {rewrapped_before_the_stop} rewraps, recorded: {recorded}"
        );
    }
}

#[tokio::test]
async fn a_key_wrapped_while_the_rotation_waits_is_rewrapped_too() {
    let (_dir, file, log, keys) = fresh().await;
    let (log, keys) = (std::sync::Arc::new(log), std::sync::Arc::new(keys));
    let first = tenant_with_a_key(&log, &keys.current()).await;

    // A master key being enabled: wrapped with the current key, not committed yet.
    let (wrapping, old) = keys.for_wrapping().await;
    let rotation = tokio::spawn({
        let (log, keys, file) = (log.clone(), keys.clone(), file.clone());
        async move { root_key::rotate(&log, &keys, &file, ACTOR).await }
    });
    let late = tenant_with_a_key(&log, &old).await;
    drop(wrapping);
    let rotated = rotation.await.unwrap().unwrap();
    assert_eq!(rotated.rewrapped, 2);
    all_wrapped_by(&log, &read_key(&file), &[first, late]).await;
}

#[tokio::test]
async fn a_rotation_left_by_another_process_is_not_started_over() {
    let (_dir, file, log, keys) = fresh().await;
    let old = keys.current();
    let tenant = tenant_with_a_key(&log, &old).await;
    let pending = root_key::pending_path(&file);
    let left = root_key::generate();
    root_key::write_private_file(&pending, left.to_file_contents().as_bytes()).unwrap();

    let refused = root_key::rotate(&log, &keys, &file, ACTOR)
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("restart idemd"), "{refused}");
    assert_eq!(rotations(&log).await, Vec::new(), "nothing recorded");
    assert_eq!(read_key(&file).id(), old.id(), "the key file is untouched");
    assert_eq!(read_key(&pending).id(), left.id());
    all_wrapped_by(&log, &old, &[tenant]).await;
}

#[tokio::test]
async fn a_key_file_others_can_read_is_refused() {
    let (_dir, file, log, _) = fresh().await;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = root_key::load(&file, &log).await.err().unwrap().to_string();
    assert!(refused.contains("chmod 600"), "{refused}");
}

#[tokio::test]
async fn a_start_refuses_keys_wrapped_by_another_root_key() {
    let (_dir, file, log, keys) = fresh().await;
    // The first key opens with this root key; a later one (put back from a key mirror written
    // before a rotation, say) was wrapped by another.
    tenant_with_a_key(&log, &keys.current()).await;
    tenant_with_a_key(&log, &root_key::generate()).await;
    let refused = root_key::load(&file, &log).await.err().unwrap().to_string();
    assert!(
        refused.contains("1 of the 2 tenant keys in the log were wrapped by another root key"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_rotation_that_failed_at_the_end_is_taken_up_with_its_key_put_back_on_disk() {
    let (_dir, file, log, keys) = fresh().await;
    let old = keys.current();
    let tenant = tenant_with_a_key(&log, &old).await;

    // The new file cannot be renamed over the key file (a directory stands there now).
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("in-the-way"), b"").unwrap();
    assert!(!keys.is_rotating());
    let failed = root_key::rotate(&log, &keys, &file, ACTOR)
        .await
        .err()
        .unwrap();
    assert!(failed.to_string().contains("move it there"), "{failed}");
    assert!(
        keys.is_rotating(),
        "the old key still opens what it wrapped"
    );
    let new = keys.current();
    all_wrapped_by(&log, &new, std::slice::from_ref(&tenant)).await;

    // Its new key then went missing from disk; the next try writes it back before it
    // finishes, so the key that wraps the store is never only in memory.
    let pending = root_key::pending_path(&file);
    std::fs::remove_file(&pending).unwrap();
    std::fs::remove_dir_all(&file).unwrap();
    let done = root_key::rotate(&log, &keys, &file, ACTOR).await.unwrap();
    assert_eq!(
        (done.key_id.as_str(), done.rewrapped),
        (new.id().as_str(), 0)
    );
    assert!(!keys.is_rotating());
    assert_eq!(read_key(&file).id(), new.id());
    assert_eq!(mode(&file), 0o600);
    all_wrapped_by(&log, &new, &[tenant]).await;
    // The first try recorded the rotation before its rename failed; the second did not
    // record it again.
    assert_eq!(
        rotations(&log).await,
        vec![(ACTOR.to_owned(), rotation_of(&old, &new))]
    );
}
