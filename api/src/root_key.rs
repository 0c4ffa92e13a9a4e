//! The operator's root key in the running service: read (or made) at start and checked against
//! the key store, and rotated: a new root key wraps every tenant's data key again, in place of
//! the old one, without a stop.
//!
//! A rotation writes the new key beside the key file (`root.key.new`, mode 0600) before it
//! changes anything, then switches the service to it (it still opens keys the old one wrapped),
//! rewraps the stored keys in commits that replace each wrapping only if it is still the one
//! read ([`eventlog::KeyRewrap`]), and last renames the new file over the old. Whatever stops
//! it on the way, the state on disk is one a start finishes: a `root.key.new` beside the key
//! file means "rotate to this", and a start does so before it serves.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use domain::crypto::{CodeKey, CryptoError, DataKey, RootKey};
use eventlog::{Commit, EventLog, KeyRewrap, RocksLog, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Rewraps per commit: a rotation of many tenants is several commits (a stop between them is
/// finished by the next start).
const REWRAPS_PER_COMMIT: usize = 1_000;
/// Times the store is read again when a tenant deleted meanwhile made a commit conflict.
const MAX_PASSES: usize = 20;

/// The service's root keys: the one that wraps new data keys, and during a rotation the one
/// being replaced, which still opens what it wrapped.
pub struct RootKeys {
    ring: std::sync::RwLock<Ring>,
    /// Held shared from wrapping a new data key until its commit is answered, and exclusively
    /// by a rotation to switch keys: no key wrapped by the old root key is committed after a
    /// rotation has read the store.
    wrapping: tokio::sync::RwLock<()>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Ring {
    current: RootKey,
    code_key: CodeKey,
    retiring: Option<RootKey>,
}

impl RootKeys {
    pub fn new(current: RootKey) -> Self {
        RootKeys {
            ring: std::sync::RwLock::new(Ring {
                code_key: current.code_key(),
                current,
                retiring: None,
            }),
            wrapping: tokio::sync::RwLock::new(()),
            rotating: tokio::sync::Mutex::new(()),
        }
    }

    fn ring(&self) -> Ring {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, ring: Ring) {
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
    }

    /// The key that wraps new data keys.
    pub fn current(&self) -> RootKey {
        self.ring().current
    }

    /// Whether a rotation this process began is not finished: the old key still opens some
    /// stored keys, and `root.key.new` is beside the key file.
    pub fn is_rotating(&self) -> bool {
        self.ring().retiring.is_some()
    }

    /// Keys one-time onboarding codes (derived from the current root key).
    pub fn code_key(&self) -> CodeKey {
        self.ring().code_key
    }

    /// Unwraps a stored data key with whichever root key wrapped it.
    pub fn unwrap(
        &self,
        tenant: Uuid,
        version: u32,
        wrapped: &[u8],
    ) -> Result<DataKey, CryptoError> {
        let ring = self.ring();
        let key = match ring.retiring {
            Some(old) if old.wrapped(wrapped) => old,
            _ => ring.current,
        };
        DataKey::unwrap(&key, tenant, version, wrapped)
    }

    /// The key to wrap a new data key with, and a guard to hold until that key's commit is
    /// answered.
    pub async fn for_wrapping(&self) -> (tokio::sync::RwLockReadGuard<'_, ()>, RootKey) {
        let guard = self.wrapping.read().await;
        (guard, self.current())
    }
}

/// Why the root key could not be read, checked or rotated.
#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    #[error("root key file {0}: {1}")]
    File(String, String),
    /// What was asked cannot be done as things stand.
    #[error("{0}")]
    Refused(String),
    #[error("event log: {0}")]
    Log(#[from] eventlog::Error),
    /// Every tenant key is wrapped by the new key, but the rotation is not in the operator log
    /// yet: the new key stays beside the key file, and running the rotation again (or a start)
    /// records it and finishes.
    #[error("the rotation could not be recorded in the operator log ({0}); run it again")]
    Record(String),
}

/// What a rotation did.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Rotated {
    /// The public fingerprints of the replaced key and of the new one.
    pub previous_key_id: String,
    pub key_id: String,
    /// Data keys wrapped again.
    pub rewrapped: usize,
    /// Where the new key is now (the key file the service was started with).
    pub key_file: PathBuf,
}

/// Where a rotation keeps the new key until it is done: beside the key file.
pub fn pending_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Reads the root key at `path` (absent: `None`), refusing a file others may read.
pub fn read_file(path: &Path) -> Result<Option<RootKey>, RootKeyError> {
    let err =
        |e: &dyn std::fmt::Display| RootKeyError::File(path.display().to_string(), e.to_string());
    let contents = match std::fs::read_to_string(path) {
        Ok(contents) => zeroize::Zeroizing::new(contents),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&e)),
    };
    let mode = std::fs::metadata(path)
        .map_err(|e| err(&e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(&format!(
            "is readable by others (mode {:o}); chmod 600 it",
            mode & 0o777
        )));
    }
    RootKey::from_file_contents(&contents)
        .map(Some)
        .map_err(|e| err(&e))
}

/// Writes `bytes` to `path` whole or not at all, readable by its owner only: a temporary file
/// beside it, synced, renamed over it, and the directory synced.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let parent = directory_of(path);
    let temporary = parent.join(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover of a stop midway may have any mode: made anew, it gets 0600.
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    out.write_all(bytes).and_then(|()| out.sync_all())?;
    drop(out);
    std::fs::rename(&temporary, path)?;
    sync_dir(&parent)
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|dir| dir.sync_all())
}

/// A new random root key.
pub fn generate() -> RootKey {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::fill(&mut *bytes);
    RootKey::from_bytes(*bytes)
}

/// The root key of the service whose key file is `key_file` and whose log is `log`: read, or
/// made (mode 0600) only if the file does not exist and the log holds no event yet. A missing
/// or different root key in front of an existing log stops idemd at start: a new key would
/// open none of the tenants' sealed data, and tenants created with it would mix two root keys
/// in one log. A rotation a stop interrupted (its new key beside the key file) is finished.
pub async fn load(key_file: &Path, log: &RocksLog) -> Result<RootKeys, RootKeyError> {
    let key = match read_file(key_file)? {
        Some(key) => key,
        None if log.head_position() > 0 => {
            return Err(RootKeyError::File(
                key_file.display().to_string(),
                "not found, and the event log already holds events: restore the root key it \
                 was written with (a new one would open none of the tenants' sealed data)"
                    .into(),
            ));
        }
        None => {
            let key = generate();
            write_private_file(key_file, key.to_file_contents().as_bytes())
                .map_err(|e| RootKeyError::File(key_file.display().to_string(), e.to_string()))?;
            tracing::warn!(path = %key_file.display(), "created a new root key: back it up, and keep it apart from the data");
            key
        }
    };
    let keys = RootKeys::new(key);
    if let Some(new) = read_file(&pending_path(key_file))? {
        begin(&keys, keys.current(), new).await;
        let done = rotate(log, &keys, key_file, crate::operator_log::START_ACTOR).await?;
        tracing::warn!(
            previous_key_id = %done.previous_key_id,
            key_id = %done.key_id,
            rewrapped = done.rewrapped,
            "finished the root key rotation a stop interrupted"
        );
    }
    check_store(log, &keys).await?;
    Ok(keys)
}

/// Checks that `keys`' current root key wrapped every data key in the store (and opens the
/// first, so a file whose fingerprint matches by chance is still caught).
pub async fn check_store(log: &RocksLog, keys: &RootKeys) -> Result<(), RootKeyError> {
    let current = keys.current();
    let store = log.data_key_store().await?;
    if let Some((tenant, wrapped)) = store.first() {
        DataKey::unwrap(&current, tenant.0, wrapped.version, &wrapped.wrapped).map_err(|e| {
            RootKeyError::Refused(format!(
                "the root key does not open the tenant keys stored in the log ({e}): is it \
                 this data directory's root key?"
            ))
        })?;
    }
    let foreign = store
        .iter()
        .filter(|(_, key)| !current.wrapped(&key.wrapped))
        .count();
    if foreign > 0 {
        return Err(RootKeyError::Refused(format!(
            "{foreign} of the {} tenant keys in the log were wrapped by another root key than \
             {} (put back from a key mirror written before a rotation?): start with the root \
             key they were wrapped with, then rotate",
            store.len(),
            current.id()
        )));
    }
    Ok(())
}

/// Rotates the root key of the service whose key file is `key_file`: see the module's doc. A
/// rotation this process began and could not finish (the log refused a write) is taken up
/// where it stopped. Recorded in the operator log as `actor`'s, once every key is rewrapped
/// and before the new key file replaces the old one, so that a rotation done is a rotation
/// recorded (a start that finishes one recorded before a stop does not record it again).
pub async fn rotate(
    log: &RocksLog,
    keys: &RootKeys,
    key_file: &Path,
    actor: &str,
) -> Result<Rotated, RootKeyError> {
    let _one = keys.rotating.lock().await;
    let ring = keys.ring();
    let pending = pending_path(key_file);
    let (old, new) = match ring.retiring {
        Some(old) => {
            // Taken up again: the new key must still be on disk before anything more is
            // wrapped with it (a key only in memory would be lost with the process).
            let on_disk = read_file(&pending)?;
            if on_disk.as_ref().map(RootKey::id) != Some(ring.current.id()) {
                write_private_file(&pending, ring.current.to_file_contents().as_bytes()).map_err(
                    |e| RootKeyError::File(pending.display().to_string(), e.to_string()),
                )?;
            }
            (old, ring.current)
        }
        None => {
            if pending.exists() {
                return Err(RootKeyError::Refused(format!(
                    "{} exists: a rotation left it; restart idemd to finish that rotation",
                    pending.display()
                )));
            }
            let new = generate();
            write_private_file(&pending, new.to_file_contents().as_bytes()).map_err(|e| {
                RootKeyError::File(
                    pending.display().to_string(),
                    format!("{e}; nothing was changed"),
                )
            })?;
            begin(keys, ring.current.clone(), new.clone()).await;
            (ring.current, new)
        }
    };
    let rewrapped = rewrap_store(log, &old, &new).await?;
    record(log, &old, &new, actor).await?;
    std::fs::rename(&pending, key_file)
        .and_then(|()| sync_dir(&directory_of(key_file)))
        .map_err(|e| {
            RootKeyError::File(
                key_file.display().to_string(),
                format!(
                    "{e}: every tenant key is wrapped by the new root key, which is in {}; \
                     move it there",
                    pending.display()
                ),
            )
        })?;
    keys.set(Ring {
        code_key: new.code_key(),
        current: new.clone(),
        retiring: None,
    });
    Ok(Rotated {
        previous_key_id: old.id(),
        key_id: new.id(),
        rewrapped,
        key_file: key_file.to_path_buf(),
    })
}

/// Records the rotation from `old` to `new` in the operator log, unless it is there already
/// (recorded by a run that stopped before renaming the new key file).
async fn record(
    log: &RocksLog,
    old: &RootKey,
    new: &RootKey,
    actor: &str,
) -> Result<(), RootKeyError> {
    let failed = |e: &dyn std::fmt::Display| RootKeyError::Record(e.to_string());
    let (previous_key_id, key_id) = (old.id(), new.id());
    let recorded = crate::operator_log::read(log)
        .await
        .map_err(|e| failed(&e))?;
    let already = recorded.iter().any(
        |(_, event)| matches!(event, domain::event::Event::RootKeyRotated(r) if r.key_id == key_id),
    );
    if !already {
        let event = domain::event::RootKeyRotated {
            previous_key_id,
            key_id,
        };
        crate::operator_log::record(log, event, actor)
            .await
            .map_err(|e| failed(&e))?;
    }
    Ok(())
}

/// Switches `keys` to `new`, keeping `old` to open what it wrapped, once no data key wrapped
/// by `old` is on its way to the log.
async fn begin(keys: &RootKeys, old: RootKey, new: RootKey) {
    let _no_wrapping = keys.wrapping.write().await;
    keys.set(Ring {
        code_key: new.code_key(),
        current: new,
        retiring: Some(old),
    });
}

/// Wraps every stored data key that `new` did not wrap again with `new` (each must open with
/// `old`); how many.
async fn rewrap_store(log: &RocksLog, old: &RootKey, new: &RootKey) -> Result<usize, RootKeyError> {
    let mut rewrapped = 0;
    for _ in 0..MAX_PASSES {
        let store = log.data_key_store().await?;
        let stale: Vec<_> = store
            .into_iter()
            .filter(|(_, key)| !new.wrapped(&key.wrapped))
            .collect();
        if stale.is_empty() {
            return Ok(rewrapped);
        }
        let mut conflict = false;
        for chunk in stale.chunks(REWRAPS_PER_COMMIT) {
            let mut commit = Commit::new();
            for (stream, key) in chunk {
                commit = commit.rewrap(rewrap(old, new, *stream, key.version, &key.wrapped)?);
            }
            match log.commit(commit).await {
                Ok(_) => rewrapped += chunk.len(),
                // A tenant deleted since the store was read: read it again.
                Err(eventlog::Error::KeyChanged { .. }) => {
                    conflict = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !conflict {
            return Ok(rewrapped);
        }
    }
    Err(RootKeyError::Refused(format!(
        "the tenant keys kept changing while they were rewrapped ({MAX_PASSES} passes); run \
         the rotation again: it goes on from where it stopped"
    )))
}

fn rewrap(
    old: &RootKey,
    new: &RootKey,
    stream: StreamId,
    version: u32,
    wrapped: &[u8],
) -> Result<KeyRewrap, RootKeyError> {
    let mut nonce = [0u8; 24];
    rand::fill(&mut nonce);
    let to = DataKey::rewrap(old, new, stream.0, version, wrapped, nonce).map_err(|e| {
        RootKeyError::Refused(format!(
            "tenant {stream}'s data key version {version} cannot be rewrapped: {e}"
        ))
    })?;
    Ok(KeyRewrap {
        stream,
        version,
        from: wrapped.to_vec(),
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_key_file_name_lives_in_the_working_directory() {
        // The directory synced after the rename: an empty path would fail to open, after the
        // new key was already in place.
        assert_eq!(directory_of(Path::new("root.key")), Path::new("."));
        assert_eq!(directory_of(Path::new("keys/root.key")), Path::new("keys"));
        assert_eq!(
            directory_of(Path::new("/etc/idem/root.key")),
            Path::new("/etc/idem")
        );
        assert_eq!(
            pending_path(Path::new("/etc/idem/root.key")),
            Path::new("/etc/idem/root.key.new")
        );
    }
}
