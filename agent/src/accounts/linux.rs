//! [`LinuxAccounts`]: `etc/passwd`, `etc/shadow` and `etc/group` under a root directory,
//! edited under the shadow suite's lock file.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Account, AccountError, LocalAccounts, replace};

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

#[cfg(test)]
mod tests {
    use super::super::tests::exercise;
    use super::*;

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
}
