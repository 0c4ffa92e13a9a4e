//! Who may read `/metrics` when `IDEM_METRICS_TOKEN_FILE` is set: [`MetricsToken`], the
//! bearer token kept as a digest, and [`MetricsGate`], which reads the file again whenever it
//! changes, so a token is rotated by replacing the file, without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The token a scraper must show to read `/metrics`, kept as its digest: neither `Debug` nor
/// a comparison's timing gives the token away.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// The shortest token accepted (`openssl rand -hex 32` makes 64 characters).
    pub const MIN_LENGTH: usize = 32;

    fn digest(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::new()
            .chain_update(b"idem.metrics-token.v1\0")
            .chain_update(token.as_bytes())
            .finalize()
            .into()
    }

    /// A token as the file holds it: surrounding whitespace (a final newline) is not part of
    /// it; what is left must be at least [`Self::MIN_LENGTH`] visible ASCII characters, all a
    /// header can carry.
    pub fn parse(text: &str) -> Result<MetricsToken, String> {
        let token = text.trim();
        if token.len() < Self::MIN_LENGTH {
            return Err(format!(
                "the token must be at least {} characters (openssl rand -hex 32 makes one)",
                Self::MIN_LENGTH
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be visible ASCII characters, without spaces".into());
        }
        Ok(MetricsToken(Self::digest(token)))
    }

    /// Whether `given` is the token. Digests are compared, so the time taken tells nothing
    /// of how much of the token was right.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        Self::digest(given).ct_eq(&self.0).into()
    }

    /// Reads the token from `path`, refusing a file others may read (as the root key's).
    pub fn read_file(path: &Path) -> Result<MetricsToken, String> {
        use std::os::unix::fs::PermissionsExt;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
        MetricsToken::parse(&text).map_err(|problem| format!("{}: {problem}", path.display()))
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

/// What identifies one version of the token file: a rotation (a new file renamed over it, a
/// rewrite, a `chmod`) changes at least one of these.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    mode: u32,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            device: m.dev(),
            inode: m.ino(),
            size: m.size(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
        })
    }
}

/// The token file as last read: its stamp (none once it could not be looked at) and its
/// token (none once a version could not be used: then nobody is let in).
struct Loaded {
    stamp: Option<Stamp>,
    token: Option<MetricsToken>,
}

/// The token file of `/metrics`, looked at (one `stat`) at each scrape and read again when it
/// changed. A version that cannot be used (unreadable, readable by others, too short, gone)
/// shuts `/metrics` to everyone, logged once, until a good one replaces it: a rotation meant
/// to retire a token never leaves it working. At start a bad file is refused instead.
#[derive(Clone)]
pub struct MetricsGate {
    path: PathBuf,
    loaded: Arc<Mutex<Loaded>>,
}

impl std::fmt::Debug for MetricsGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsGate")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MetricsGate {
    /// Reads the token file for the first time; a file that cannot be used is an error.
    pub fn open(path: PathBuf) -> Result<MetricsGate, String> {
        let stamp = Stamp::of(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let token = MetricsToken::read_file(&path)?;
        Ok(MetricsGate {
            path,
            loaded: Arc::new(Mutex::new(Loaded {
                stamp: Some(stamp),
                token: Some(token),
            })),
        })
    }

    /// Whether `given` (the bearer token of a request, if any) is the file's token now.
    pub fn admits(&self, given: Option<&str>) -> bool {
        let stamp = Stamp::of(&self.path);
        let mut loaded = match self.loaded.lock() {
            Ok(loaded) => loaded,
            // A panic elsewhere while holding it: what it guards is two plain values.
            Err(poisoned) => poisoned.into_inner(),
        };
        match stamp {
            Ok(stamp) if loaded.stamp == Some(stamp) => {}
            Ok(stamp) => {
                loaded.stamp = Some(stamp);
                loaded.token = match MetricsToken::read_file(&self.path) {
                    Ok(token) => {
                        tracing::info!(file = %self.path.display(), "metrics token read again");
                        Some(token)
                    }
                    Err(problem) => {
                        tracing::error!(
                            problem = %problem,
                            "the metrics token file cannot be used: /metrics refuses every \
                             scraper until it is mended"
                        );
                        None
                    }
                };
            }
            Err(e) => {
                if loaded.stamp.is_some() {
                    tracing::error!(
                        file = %self.path.display(),
                        error = %e,
                        "the metrics token file is gone: /metrics refuses every scraper until \
                         it is back"
                    );
                }
                loaded.stamp = None;
                loaded.token = None;
            }
        }
        match (&loaded.token, given) {
            (Some(token), Some(given)) => token.matches(given),
            _ => false,
        }
    }
}
