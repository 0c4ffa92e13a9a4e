//! The key mirror: the one copy of the tenants' wrapped data keys kept apart from the data
//! directory, which is what makes backups restorable without putting keys in them.
//!
//! Backups of the log hold no data keys (see `eventlog`'s backup module): a restore takes them
//! from this file. Deleting a tenant removes its keys from the live key store and, right after,
//! from the mirror, so the tenant's sealed data stays unreadable in every backup taken before,
//! as the product brief promises (crypto-shredding, backups included). The mirror only ever
//! gains the live store's keys and loses those of deleted tenants: a service started on an
//! older restored log must not drop the keys a newer backup needs.
//!
//! The mirror also remembers every tenant deleted (ids only, never dropped): a backup taken
//! before a deletion brings the tenant's events back when it is restored, and idemd deletes
//! such a tenant again as it starts (`crate::redelete`).
//!
//! The file is JSON (`{"format": "idem-key-mirror", "version": 2, "keys": [...], "deleted":
//! [...]}`; version 1 had no `deleted`), each key still wrapped by the root key, written whole
//! under a temporary name, synced and renamed, mode 0600. It must not itself go into
//! long-lived backups: a copy of it escapes deletions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use eventlog::{EventLog, RocksLog, StreamId, WrappedKey};
use serde::{Deserialize, Serialize};

const FORMAT: &str = "idem-key-mirror";
/// What this idemd writes; it reads every version up to it.
const VERSION: u32 = 2;

/// Why the mirror could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("key mirror {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key mirror {path} is not one idemd wrote: {reason}")]
    Format { path: String, reason: String },
    #[error("reading the key store: {0}")]
    Log(#[from] eventlog::Error),
}

#[derive(Serialize, Deserialize)]
struct File {
    format: String,
    version: u32,
    keys: Vec<Entry>,
    /// Every tenant deleted so far (version 2).
    #[serde(default)]
    deleted: Vec<uuid::Uuid>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    tenant: uuid::Uuid,
    version: u32,
    /// The data key wrapped by the root key, base64.
    wrapped: String,
}

/// What a mirror file holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// Wrapped data keys, by stream then version.
    pub keys: Vec<(StreamId, WrappedKey)>,
    /// Every tenant deleted while this mirror was kept.
    pub deleted: BTreeSet<StreamId>,
}

/// What a refresh left in the mirror.
#[derive(Debug, PartialEq, Eq)]
pub struct Refreshed {
    /// How many keys the mirror holds.
    pub keys: usize,
    /// How many deleted tenants it remembers.
    pub deleted: usize,
    /// Deleted tenants whose events the log holds again (it was restored from a backup taken
    /// before they were deleted): they must be deleted again.
    pub undeleted: Vec<StreamId>,
}

/// A turn to write a key mirror ([`KeyMirror::turn`]).
pub struct MirrorTurn<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

/// The mirror file at one path; one writer at a time.
pub struct KeyMirror {
    path: PathBuf,
    writing: tokio::sync::Mutex<()>,
    /// The last refresh failed: the file may hold keys of tenants deleted since.
    behind: AtomicBool,
}

impl KeyMirror {
    pub fn new(path: PathBuf) -> Self {
        KeyMirror {
            path,
            writing: tokio::sync::Mutex::new(()),
            behind: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the last refresh failed, so that the file may still hold the keys of tenants
    /// deleted since (and lack new tenants' keys): readiness and metrics report it.
    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// While the service runs, refreshes the mirror every `every` for as long as it is
    /// behind, so that a deletion's shredding of the backups does not wait for the next
    /// deletion, backup or start once the mirror's storage is back.
    pub async fn keep_current(
        &self,
        log: &RocksLog,
        every: std::time::Duration,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(every) => {}
            }
            if !self.is_behind() {
                continue;
            }
            match self.refresh(log).await {
                Ok(refreshed) => {
                    tracing::info!(keys = refreshed.keys, "the key mirror is up to date again");
                }
                Err(e) => tracing::warn!(error = %e, "the key mirror is still behind"),
            }
        }
    }

    /// Brings the mirror up to date with `log`: every key the log holds is added, every
    /// stream the log deleted is remembered as deleted, the keys of deleted streams are
    /// removed, other keys are kept. Answers what the mirror holds, and which deleted tenants
    /// the log holds events of again.
    pub async fn refresh(&self, log: &RocksLog) -> Result<Refreshed, MirrorError> {
        let turn = self.turn().await;
        self.refresh_in(&turn, log).await
    }

    /// This mirror's turn to be written: no other refresh runs until it is dropped. A root
    /// key rotation holds it throughout, so that no refresh (a backup's, a deletion's) writes
    /// the store's keys while some are wrapped by the old root key and some by the new.
    pub async fn turn(&self) -> MirrorTurn<'_> {
        MirrorTurn {
            _held: self.writing.lock().await,
        }
    }

    /// [`KeyMirror::refresh`] with this mirror's `turn` already taken.
    pub async fn refresh_in(
        &self,
        _turn: &MirrorTurn<'_>,
        log: &RocksLog,
    ) -> Result<Refreshed, MirrorError> {
        let refreshed = self.refresh_now(log).await;
        self.behind.store(refreshed.is_err(), Ordering::Relaxed);
        refreshed
    }

    async fn refresh_now(&self, log: &RocksLog) -> Result<Refreshed, MirrorError> {
        let stored = match read(&self.path) {
            Ok(contents) => contents,
            Err(MirrorError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Contents::default()
            }
            // Never overwrite what cannot be read: it may hold the only copy of a key.
            Err(e) => return Err(e),
        };
        let mut keys: BTreeMap<(StreamId, u32), Vec<u8>> = stored
            .keys
            .into_iter()
            .map(|(stream, key)| ((stream, key.version), key.wrapped))
            .collect();
        let tombstones: BTreeSet<StreamId> = log.deleted_streams().await?.into_iter().collect();
        let mut undeleted = Vec::new();
        for stream in stored.deleted.difference(&tombstones) {
            // Deleted since the log's backup was taken, or before its stream was created.
            if log.stream_head(*stream).await?.is_some() {
                undeleted.push(*stream);
            }
        }
        let mut deleted = stored.deleted;
        deleted.extend(tombstones);
        keys.retain(|(stream, _), _| !deleted.contains(stream));
        for (stream, key) in log.data_key_store().await? {
            if !deleted.contains(&stream) {
                keys.insert((stream, key.version), key.wrapped);
            }
        }
        let refreshed = Refreshed {
            keys: keys.len(),
            deleted: deleted.len(),
            undeleted,
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write(&path, &keys, &deleted))
            .await
            .map_err(|e| MirrorError::Io {
                path: self.path.display().to_string(),
                source: std::io::Error::other(e),
            })??;
        Ok(refreshed)
    }
}

/// What the mirror at `path` holds.
pub fn read(path: &Path) -> Result<Contents, MirrorError> {
    let shown = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| MirrorError::Io {
        path: shown(),
        source,
    })?;
    let format = |reason: String| MirrorError::Format {
        path: shown(),
        reason,
    };
    let file: File = serde_json::from_slice(&bytes).map_err(|e| format(e.to_string()))?;
    if file.format != FORMAT || !(1..=VERSION).contains(&file.version) {
        return Err(format(format!(
            "its format is {:?} version {}, this idemd reads {FORMAT:?} versions 1 to {VERSION}",
            file.format, file.version
        )));
    }
    let keys = file
        .keys
        .into_iter()
        .map(|entry| {
            let wrapped = BASE64.decode(&entry.wrapped).map_err(|e| {
                format(format!(
                    "tenant {}'s key version {}: {e}",
                    entry.tenant, entry.version
                ))
            })?;
            Ok((
                StreamId(entry.tenant),
                WrappedKey {
                    version: entry.version,
                    wrapped,
                },
            ))
        })
        .collect::<Result<_, MirrorError>>()?;
    Ok(Contents {
        keys,
        deleted: file.deleted.into_iter().map(StreamId).collect(),
    })
}

/// Writes the mirror whole: a temporary file beside it, synced, renamed over it, and the
/// directory synced, so that a crash leaves the old mirror or the new one.
fn write(
    path: &Path,
    keys: &BTreeMap<(StreamId, u32), Vec<u8>>,
    deleted: &BTreeSet<StreamId>,
) -> Result<(), MirrorError> {
    let io = |source| MirrorError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File {
        format: FORMAT.into(),
        version: VERSION,
        keys: keys
            .iter()
            .map(|((stream, version), wrapped)| Entry {
                tenant: stream.0,
                version: *version,
                wrapped: BASE64.encode(wrapped),
            })
            .collect(),
        deleted: deleted.iter().map(|stream| stream.0).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
    crate::root_key::write_private_file(path, &bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use eventlog::testkit::{event, stream};
    use eventlog::{Commit, Expected, StreamAppend};
    use std::os::unix::fs::PermissionsExt;

    fn opened(stream: StreamId, key: &[u8]) -> StreamAppend {
        StreamAppend::new(stream, Expected::NoStream)
            .event(event("Opened", "{}"))
            .key(WrappedKey {
                version: 1,
                wrapped: key.to_vec(),
            })
    }

    #[tokio::test]
    async fn the_mirror_gains_live_keys_loses_deleted_ones_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        let (a, b) = (stream(), stream());
        log.append(opened(a, b"key of a")).await.unwrap();
        log.append(opened(b, b"key of b")).await.unwrap();
        let mirror = KeyMirror::new(dir.path().join("keys.json"));
        assert_eq!(mirror.refresh(&log).await.unwrap().keys, 2);
        let mode = std::fs::metadata(mirror.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A key the live log does not hold (a tenant of a newer backup) stays; a deleted
        // tenant's key goes.
        drop(log);
        let other = RocksLog::open(dir.path().join("older")).unwrap();
        other.append(opened(b, b"key of b")).await.unwrap();
        other.commit(Commit::new().delete(b)).await.unwrap();
        assert_eq!(
            mirror.refresh(&other).await.unwrap(),
            Refreshed {
                keys: 1,
                deleted: 1,
                undeleted: Vec::new()
            }
        );
        let contents = read(mirror.path()).unwrap();
        assert_eq!(
            contents.keys,
            vec![(
                a,
                WrappedKey {
                    version: 1,
                    wrapped: b"key of a".to_vec()
                }
            )]
        );
        assert_eq!(contents.deleted, BTreeSet::from([b]));
    }

    #[tokio::test]
    async fn deletions_outlive_the_log_and_a_log_holding_a_deleted_tenant_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = KeyMirror::new(dir.path().join("keys.json"));
        let (kept, gone, never_keyed) = (stream(), stream(), stream());
        let older = RocksLog::open(dir.path().join("older")).unwrap();
        older.append(opened(kept, b"key of kept")).await.unwrap();
        older.append(opened(gone, b"key of gone")).await.unwrap();
        older
            .append(StreamAppend::new(never_keyed, Expected::NoStream).event(event("Opened", "{}")))
            .await
            .unwrap();
        mirror.refresh(&older).await.unwrap();
        // The same tenants, then both deleted: a tenant without a key is remembered too.
        let newer = RocksLog::open(dir.path().join("newer")).unwrap();
        for s in [kept, gone] {
            newer.append(opened(s, b"key")).await.unwrap();
        }
        newer
            .append(StreamAppend::new(never_keyed, Expected::NoStream).event(event("Opened", "{}")))
            .await
            .unwrap();
        newer
            .commit(Commit::new().delete(gone).delete(never_keyed))
            .await
            .unwrap();
        let refreshed = mirror.refresh(&newer).await.unwrap();
        assert_eq!((refreshed.keys, refreshed.deleted), (1, 2));
        assert!(refreshed.undeleted.is_empty());
        drop(newer);

        // The older log (a backup taken before the deletion) holds both again: it is told, and
        // the gone tenant's key, still in that log's key store, does not come back.
        let mut expected = vec![gone, never_keyed];
        expected.sort();
        for _ in 0..2 {
            let refreshed = mirror.refresh(&older).await.unwrap();
            assert_eq!(refreshed.undeleted, expected);
            assert_eq!((refreshed.keys, refreshed.deleted), (1, 2));
        }
        let contents = read(mirror.path()).unwrap();
        assert_eq!(
            contents.keys.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![kept]
        );
        // A log that never held them (restored from a backup older than both) is not told.
        let oldest = RocksLog::open(dir.path().join("oldest")).unwrap();
        assert!(mirror.refresh(&oldest).await.unwrap().undeleted.is_empty());
    }

    #[tokio::test]
    async fn a_mirror_behind_is_tried_again_until_it_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        let tenant = stream();
        log.append(opened(tenant, b"key")).await.unwrap();
        // Its directory is gone, and a file is in its place: nothing can be written there.
        let folder = dir.path().join("mirror");
        let mirror = KeyMirror::new(folder.join("keys.json"));
        std::fs::write(&folder, b"not a directory").unwrap();
        assert!(mirror.refresh(&log).await.is_err());
        assert!(mirror.is_behind());

        let (stop, stopping) = tokio::sync::watch::channel(false);
        let retrying = mirror.keep_current(&log, std::time::Duration::from_millis(5), stopping);
        let storage_back = async {
            // Still behind while the storage is away...
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert!(mirror.is_behind());
            std::fs::remove_file(&folder).unwrap();
            std::fs::create_dir(&folder).unwrap();
            // ...current once a retry could write it.
            for _ in 0..2000 {
                if !mirror.is_behind() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert!(!mirror.is_behind());
            stop.send(true).unwrap();
        };
        tokio::join!(retrying, storage_back);
        let keys: Vec<StreamId> = read(mirror.path())
            .unwrap()
            .keys
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(keys, vec![tenant]);
    }

    #[tokio::test]
    async fn a_version_1_mirror_is_read_and_rewritten_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        let path = dir.path().join("keys.json");
        let tenant = stream();
        std::fs::write(
            &path,
            format!(
                "{{\"format\": \"idem-key-mirror\", \"version\": 1, \"keys\": [{{\"tenant\": \"{}\", \"version\": 3, \"wrapped\": \"a2V5\"}}]}}",
                tenant.0
            ),
        )
        .unwrap();
        let expected = vec![(
            tenant,
            WrappedKey {
                version: 3,
                wrapped: b"key".to_vec(),
            },
        )];
        assert_eq!(read(&path).unwrap().keys, expected);
        KeyMirror::new(path.clone()).refresh(&log).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert_eq!(read(&path).unwrap().keys, expected);
    }

    #[tokio::test]
    async fn a_mirror_that_does_not_read_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path().join("log")).unwrap();
        let path = dir.path().join("keys.json");
        for (contents, why) in [
            (&b"{\"format\": \"idem-key-mirror\", \"version\": 1, \"ke"[..], "EOF"),
            (
                &b"{\"format\": \"something-else\", \"version\": 1, \"keys\": []}"[..],
                "something-else",
            ),
            (
                &b"{\"format\": \"idem-key-mirror\", \"version\": 3, \"keys\": []}"[..],
                "version 3",
            ),
            (
                &b"{\"format\": \"idem-key-mirror\", \"version\": 1, \"keys\": [{\"tenant\": \"0190f7b5-0000-7000-8000-000000000000\", \"version\": 1, \"wrapped\": \"***\"}]}"[..],
                "key version 1",
            ),
        ] {
            std::fs::write(&path, contents).unwrap();
            let err = KeyMirror::new(path.clone()).refresh(&log).await.unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), contents);
        }
    }
}
