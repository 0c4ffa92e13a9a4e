//! The workstation's local accounts, as the agent manages them: find one by name
//! (case-insensitively, as Windows does), create it, set its password, disable or enable it,
//! make it an administrator. Two implementations:
//!
//! - [`LinuxAccounts`] edits `etc/passwd`, `etc/shadow` and `etc/group` under a root
//!   directory (`/` on a real machine, a throwaway directory in tests), holding the shadow
//!   suite's lock file while it reads and rewrites them, replacing each file atomically.
//!   Passwords are stored as SHA-512 crypt (`$6$`) hashes, which every Linux PAM accepts.
//! - [`FileAccounts`] keeps them in one JSON file, for tests of the sync logic.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What went wrong with the local accounts.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A local account as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The name as the system has it (its case may differ from the cloud username).
    pub name: String,
    pub disabled: bool,
    pub admin: bool,
}

/// The local account store of a workstation.
pub trait LocalAccounts: Send {
    /// The account named `name`, compared case-insensitively.
    fn find(&self, name: &str) -> Result<Option<Account>, AccountError>;
    /// Creates `name` (enabled, without a usable password until one is set).
    fn create(&mut self, name: &str, full_name: &str) -> Result<(), AccountError>;
    fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccountError>;
    /// Whether `password` is the account's (for tests and offline checks of the system).
    fn check_password(&self, name: &str, password: &str) -> Result<bool, AccountError>;
    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<(), AccountError>;
    fn make_admin(&mut self, name: &str) -> Result<(), AccountError>;
}

/// Either implementation, chosen at run time.
impl LocalAccounts for Box<dyn LocalAccounts> {
    fn find(&self, name: &str) -> Result<Option<Account>, AccountError> {
        (**self).find(name)
    }
    fn create(&mut self, name: &str, full_name: &str) -> Result<(), AccountError> {
        (**self).create(name, full_name)
    }
    fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccountError> {
        (**self).set_password(name, password)
    }
    fn check_password(&self, name: &str, password: &str) -> Result<bool, AccountError> {
        (**self).check_password(name, password)
    }
    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<(), AccountError> {
        (**self).set_disabled(name, disabled)
    }
    fn make_admin(&mut self, name: &str) -> Result<(), AccountError> {
        (**self).make_admin(name)
    }
}

/// A Windows-style account name is also acceptable to Linux only in its lowercase, portable
/// form: letters, digits, `.`, `_`, `-`, not starting with `-`.
fn linux_name(name: &str) -> Result<String, AccountError> {
    let lower = name.trim().to_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= 32
        && !lower.starts_with('-')
        && lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(lower)
    } else {
        Err(AccountError::Invalid(format!(
            "{name:?} cannot be a Linux account name"
        )))
    }
}

/// Writes `contents` to `path` atomically with `mode`: a temporary file, synced, renamed.
fn replace(path: &Path, contents: &str, mode: u32) -> Result<(), AccountError> {
    let io = |e| AccountError::Io(path.to_owned(), e);
    let temporary = path.with_extension("idem-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// Accounts in `etc/passwd`, `etc/shadow` and `etc/group` under `root`.
pub struct LinuxAccounts {
    root: PathBuf,
}

/// The files, read under the lock.
struct Files {
    passwd: Vec<Vec<String>>,
    shadow: Vec<Vec<String>>,
    group: Vec<Vec<String>>,
}

fn parse(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

fn render(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| r.join(":") + "\n").collect()
}

/// Days since the epoch, for shadow's "last changed" field.
fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl LinuxAccounts {
    pub fn new(root: impl Into<PathBuf>) -> LinuxAccounts {
        LinuxAccounts { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join("etc").join(name)
    }

    /// Runs `change` on the files while holding the shadow suite's lock (`etc/.pwd.lock`), then
    /// writes back the ones it changed.
    fn edit<T>(
        &self,
        change: impl FnOnce(&mut Files) -> Result<(T, [bool; 3]), AccountError>,
    ) -> Result<T, AccountError> {
        let lock_path = self.path(".pwd.lock");
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e| AccountError::Io(p, e)
        };
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let read = |name: &str| -> Result<Vec<Vec<String>>, AccountError> {
            let path = self.path(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(parse(&text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(AccountError::Io(path, e)),
            }
        };
        let mut files = Files {
            passwd: read("passwd")?,
            shadow: read("shadow")?,
            group: read("group")?,
        };
        let (answer, changed) = change(&mut files)?;
        // Shadow first: an account never appears in passwd without its shadow entry.
        if changed[1] {
            replace(&self.path("shadow"), &render(&files.shadow), 0o640)?;
        }
        if changed[2] {
            replace(&self.path("group"), &render(&files.group), 0o644)?;
        }
        if changed[0] {
            replace(&self.path("passwd"), &render(&files.passwd), 0o644)?;
        }
        drop(lock);
        Ok(answer)
    }

    fn read_only<T>(&self, look: impl FnOnce(&Files) -> T) -> Result<T, AccountError> {
        self.edit(|files| Ok((look(files), [false; 3])))
    }
}

/// The index of `name`'s row in passwd-like rows, case-insensitively.
fn row(rows: &[Vec<String>], name: &str) -> Option<usize> {
    let name = name.trim().to_lowercase();
    rows.iter()
        .position(|r| r.first().is_some_and(|n| n.to_lowercase() == name))
}

fn admin_group(files: &Files) -> Option<usize> {
    ["sudo", "wheel"]
        .iter()
        .find_map(|group| row(&files.group, group))
}

impl LocalAccounts for LinuxAccounts {
    fn find(&self, name: &str) -> Result<Option<Account>, AccountError> {
        self.read_only(|files| {
            let index = row(&files.passwd, name)?;
            let account = files.passwd[index][0].clone();
            let disabled = row(&files.shadow, &account)
                .and_then(|i| files.shadow[i].get(1).cloned())
                .is_some_and(|hash| hash.starts_with('!'));
            let admin = admin_group(files).is_some_and(|g| {
                files.group[g]
                    .get(3)
                    .is_some_and(|members| members.split(',').any(|m| m == account))
            });
            Some(Account {
                name: account,
                disabled,
                admin,
            })
        })
    }

    fn create(&mut self, name: &str, full_name: &str) -> Result<(), AccountError> {
        let name = linux_name(name)?;
        let gecos: String = full_name
            .chars()
            .filter(|c| !matches!(c, ':' | ',' | '\n'))
            .collect();
        self.edit(|files| {
            if row(&files.passwd, &name).is_some() {
                return Err(AccountError::Invalid(format!("{name} exists")));
            }
            // Regular users from 1000 up, as useradd allocates them.
            let uid = files
                .passwd
                .iter()
                .filter_map(|r| r.get(2)?.parse::<u32>().ok())
                .filter(|uid| (1000..60_000).contains(uid))
                .max()
                .map_or(1000, |max| max + 1);
            files.group.push(vec![
                name.clone(),
                "x".into(),
                uid.to_string(),
                String::new(),
            ]);
            files.passwd.push(vec![
                name.clone(),
                "x".into(),
                uid.to_string(),
                uid.to_string(),
                gecos,
                format!("/home/{name}"),
                "/bin/bash".into(),
            ]);
            files.shadow.push(vec![
                name.clone(),
                "!".into(),
                today().to_string(),
                "0".into(),
                "99999".into(),
                "7".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            Ok(((), [true, true, true]))
        })
    }

    fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccountError> {
        let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
            .map_err(|e| AccountError::Invalid(format!("{e:?}")))?;
        let hash = sha_crypt::sha512_simple(password, &params)
            .map_err(|e| AccountError::Invalid(format!("{e:?}")))?;
        self.edit(|files| {
            let index = row(&files.shadow, name)
                .ok_or_else(|| AccountError::Invalid(format!("no account {name}")))?;
            let entry = &mut files.shadow[index];
            // A disabled account stays disabled: its hash keeps the leading `!`.
            let locked = entry
                .get(1)
                .is_some_and(|h| h.starts_with('!') && h.len() > 1);
            entry[1] = if locked { format!("!{hash}") } else { hash };
            if let Some(changed) = entry.get_mut(2) {
                *changed = today().to_string();
            }
            Ok(((), [false, true, false]))
        })
    }

    fn check_password(&self, name: &str, password: &str) -> Result<bool, AccountError> {
        self.read_only(|files| {
            row(&files.shadow, name)
                .and_then(|i| files.shadow[i].get(1).cloned())
                .is_some_and(|hash| {
                    !hash.starts_with('!') && sha_crypt::sha512_check(password, &hash).is_ok()
                })
        })
    }

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<(), AccountError> {
        self.edit(|files| {
            let index = row(&files.shadow, name)
                .ok_or_else(|| AccountError::Invalid(format!("no account {name}")))?;
            let hash = files.shadow[index][1].clone();
            let new = match (disabled, hash.strip_prefix('!')) {
                (true, None) => format!("!{hash}"),
                (false, Some(rest)) if !rest.is_empty() => rest.to_owned(),
                _ => hash.clone(),
            };
            let changed = new != hash;
            files.shadow[index][1] = new;
            Ok(((), [false, changed, false]))
        })
    }

    fn make_admin(&mut self, name: &str) -> Result<(), AccountError> {
        self.edit(|files| {
            let account = row(&files.passwd, name)
                .map(|i| files.passwd[i][0].clone())
                .ok_or_else(|| AccountError::Invalid(format!("no account {name}")))?;
            let group = match admin_group(files) {
                Some(g) => g,
                None => {
                    files
                        .group
                        .push(vec!["sudo".into(), "x".into(), "27".into(), String::new()]);
                    files.group.len() - 1
                }
            };
            let entry = &mut files.group[group];
            while entry.len() < 4 {
                entry.push(String::new());
            }
            let mut members: Vec<String> = entry[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            if members.contains(&account) {
                return Ok(((), [false; 3]));
            }
            members.push(account);
            entry[3] = members.join(",");
            Ok(((), [false, false, true]))
        })
    }
}

/// Accounts in a JSON file (tests of the sync logic).
pub struct FileAccounts {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    /// By lowercase name.
    accounts: BTreeMap<String, (Account, Option<String>)>,
}

impl FileAccounts {
    pub fn new(path: impl Into<PathBuf>) -> FileAccounts {
        FileAccounts { path: path.into() }
    }

    fn load(&self) -> Result<Stored, AccountError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| AccountError::Invalid(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
            Err(e) => Err(AccountError::Io(self.path.clone(), e)),
        }
    }

    fn save(&self, stored: &Stored) -> Result<(), AccountError> {
        let text = serde_json::to_string_pretty(stored)
            .map_err(|e| AccountError::Invalid(e.to_string()))?;
        replace(&self.path, &text, 0o600)
    }

    fn change(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut (Account, Option<String>)),
    ) -> Result<(), AccountError> {
        let mut stored = self.load()?;
        let entry = stored
            .accounts
            .get_mut(&name.trim().to_lowercase())
            .ok_or_else(|| AccountError::Invalid(format!("no account {name}")))?;
        f(entry);
        self.save(&stored)
    }
}

impl LocalAccounts for FileAccounts {
    fn find(&self, name: &str) -> Result<Option<Account>, AccountError> {
        Ok(self
            .load()?
            .accounts
            .get(&name.trim().to_lowercase())
            .map(|(a, _)| a.clone()))
    }

    fn create(&mut self, name: &str, _full_name: &str) -> Result<(), AccountError> {
        let mut stored = self.load()?;
        let key = name.trim().to_lowercase();
        if stored.accounts.contains_key(&key) {
            return Err(AccountError::Invalid(format!("{name} exists")));
        }
        stored.accounts.insert(
            key,
            (
                Account {
                    name: name.trim().to_owned(),
                    disabled: false,
                    admin: false,
                },
                None,
            ),
        );
        self.save(&stored)
    }

    fn set_password(&mut self, name: &str, password: &str) -> Result<(), AccountError> {
        let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_MIN)
            .map_err(|e| AccountError::Invalid(format!("{e:?}")))?;
        let hash = sha_crypt::sha512_simple(password, &params)
            .map_err(|e| AccountError::Invalid(format!("{e:?}")))?;
        self.change(name, |(_, stored)| *stored = Some(hash))
    }

    fn check_password(&self, name: &str, password: &str) -> Result<bool, AccountError> {
        Ok(self
            .load()?
            .accounts
            .get(&name.trim().to_lowercase())
            .is_some_and(|(account, hash)| {
                !account.disabled
                    && hash
                        .as_deref()
                        .is_some_and(|h| sha_crypt::sha512_check(password, h).is_ok())
            }))
    }

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<(), AccountError> {
        self.change(name, |(account, _)| account.disabled = disabled)
    }

    fn make_admin(&mut self, name: &str) -> Result<(), AccountError> {
        self.change(name, |(account, _)| account.admin = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(accounts: &mut dyn LocalAccounts) {
        assert_eq!(accounts.find("Billy").unwrap(), None);
        accounts.create("billy", "Billy Jones").unwrap();
        assert!(
            accounts.create("BILLY", "again").is_err(),
            "names are case-insensitive"
        );
        let found = accounts.find("BILLY").unwrap().unwrap();
        assert_eq!(found.name, "billy");
        assert!(!found.admin);
        assert!(!accounts.check_password("billy", "pw-one-1234").unwrap());
        accounts.set_password("Billy", "pw-one-1234").unwrap();
        assert!(accounts.check_password("billy", "pw-one-1234").unwrap());
        assert!(!accounts.check_password("billy", "pw-two-1234").unwrap());
        accounts.set_disabled("billy", true).unwrap();
        assert!(accounts.find("billy").unwrap().unwrap().disabled);
        assert!(!accounts.check_password("billy", "pw-one-1234").unwrap());
        accounts.set_disabled("billy", false).unwrap();
        assert!(accounts.check_password("billy", "pw-one-1234").unwrap());
        accounts.make_admin("billy").unwrap();
        accounts.make_admin("billy").unwrap();
        assert!(accounts.find("billy").unwrap().unwrap().admin);
        assert!(accounts.set_password("nobody", "x").is_err());
    }

    #[test]
    fn linux_accounts_under_a_root_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\nsudo:x:27:alice\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/shadow"),
            "root:*:19000:0:99999:7:::\n",
        )
        .unwrap();
        let mut accounts = LinuxAccounts::new(root.path());
        exercise(&mut accounts);
        let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("billy:x:1001:1001:Billy Jones:/home/billy:/bin/bash"),
            "{passwd}"
        );
        let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
        assert!(group.contains("sudo:x:27:alice,billy"), "{group}");
        let shadow = std::fs::read_to_string(root.path().join("etc/shadow")).unwrap();
        assert!(shadow.contains("billy:$6$"), "{shadow}");
        assert!(!shadow.contains("pw-one-1234"));
        // Untouched lines stay as they were.
        assert!(shadow.starts_with("root:*:19000:0:99999:7:::\n"));
        assert!(
            LinuxAccounts::new(root.path())
                .create("bad name", "")
                .is_err()
        );
    }

    #[test]
    fn file_accounts() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&mut FileAccounts::new(dir.path().join("accounts.json")));
    }
}
