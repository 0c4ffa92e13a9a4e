//! [`LinuxAccounts`]: `etc/passwd`, `etc/shadow` and `etc/group` under a root directory,
//! edited under the shadow suite's lock file.

use std::ops::RangeInclusive;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::home::{Owner, create_home, running_as_root};
use super::login_defs::IdRanges;
use super::sessions::stop_processes_of;
use super::{Account, AccountError, LocalAccounts, replace};
use crate::files::copy_atomically;

/// A Windows-style account name is also acceptable to Linux only in its lowercase, portable
/// form: letters, digits, `.`, `_`, `-`, starting with a letter, digit or `_`, and not all
/// digits (a numeric name reads as a uid to `chown` and friends). The name is also the home
/// directory's, so `.` and `..` must never pass.
fn linux_name(name: &str) -> Result<String, AccountError> {
    let lower = name.trim().to_lowercase();
    let ok = lower.len() <= 32
        && lower
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && !lower.chars().all(|c| c.is_ascii_digit())
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

/// The next id free as both a uid and a gid: one more than the highest regular one in use in
/// either file, as `useradd` allocates them, so that the account's own group can share its
/// number. The regular ranges are `login.defs`'s.
fn next_id(files: &Files) -> Result<u32, AccountError> {
    let ids = |rows: &[Vec<String>], range: &RangeInclusive<u32>| -> Vec<u32> {
        rows.iter()
            .filter_map(|r| r.get(2)?.parse::<u32>().ok())
            .filter(|id| range.contains(id))
            .collect()
    };
    let allowed = files.ids.shared();
    let none_left = || {
        AccountError::Invalid(format!(
            "no id left that is regular as both a user and a group ({}-{}, login.defs)",
            allowed.start(),
            allowed.end()
        ))
    };
    let next = match ids(&files.passwd, &files.ids.uid)
        .into_iter()
        .chain(ids(&files.group, &files.ids.gid))
        .max()
    {
        None => *allowed.start(),
        Some(highest) => highest
            .checked_add(1)
            .ok_or_else(none_left)?
            .max(*allowed.start()),
    };
    if allowed.contains(&next) {
        Ok(next)
    } else {
        Err(none_left())
    }
}

/// Accounts in `etc/passwd`, `etc/shadow` and `etc/group` under `root`.
pub struct LinuxAccounts {
    root: PathBuf,
    /// Whether homes are given to their accounts (only root may).
    chown: bool,
}

/// Whether a passwd row's uid is a regular one (an id that does not parse is nobody's to
/// manage either).
fn regular_uid(files: &Files, row: &[String]) -> Option<u32> {
    row.get(2)
        .and_then(|uid| uid.parse::<u32>().ok())
        .filter(|uid| files.ids.uid.contains(uid))
}

/// The files, read under the lock.
struct Files {
    passwd: Vec<Vec<String>>,
    shadow: Vec<Vec<String>>,
    group: Vec<Vec<String>>,
    /// The regular id ranges, from `etc/login.defs`.
    ids: IdRanges,
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
        LinuxAccounts {
            root: root.into(),
            chown: running_as_root(),
        }
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
            ids: IdRanges::read(&self.path("login.defs"))?,
        };
        let (answer, changed) = change(&mut files)?;
        // Shadow first: an account never appears in passwd without its shadow entry. Each
        // file's previous contents are kept as `NAME-`, as shadow-utils does.
        for (name, rows, mode, is_changed) in [
            ("shadow", &files.shadow, 0o640, changed[1]),
            ("group", &files.group, 0o644, changed[2]),
            ("passwd", &files.passwd, 0o644, changed[0]),
        ] {
            if is_changed {
                let path = self.path(name);
                let backup = self.path(&format!("{name}-"));
                copy_atomically(&path, &backup).map_err(io(&backup))?;
                replace(&path, &render(rows), mode)?;
            }
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
            let system = regular_uid(files, &files.passwd[index]).is_none();
            let admin = admin_group(files).is_some_and(|g| {
                files.group[g]
                    .get(3)
                    .is_some_and(|members| members.split(',').any(|m| m == account))
            });
            Some(Account {
                name: account,
                disabled,
                admin,
                system,
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
            let uid = next_id(files)?;
            // A group already named after the account (left by one removed earlier, or made
            // by an administrator for it) becomes its primary group, as `useradd -g` would.
            let gid = match row(&files.group, &name) {
                Some(index) => files.group[index]
                    .get(2)
                    .and_then(|gid| gid.parse::<u32>().ok())
                    .ok_or_else(|| {
                        AccountError::Invalid(format!("group {name} has no valid gid"))
                    })?,
                None => {
                    files.group.push(vec![
                        name.clone(),
                        "x".into(),
                        uid.to_string(),
                        String::new(),
                    ]);
                    uid
                }
            };
            // The home first: if it cannot be made, no account appears without one.
            create_home(&self.root, &name, Owner { uid, gid }, self.chown)?;
            files.passwd.push(vec![
                name.clone(),
                "x".into(),
                uid.to_string(),
                gid.to_string(),
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

    /// Stops every process of the accounts' uids under the root's `proc` (`/proc` on a real
    /// machine, where that ends their logins, desktop and remote sessions alike), in one
    /// scan for all of them.
    fn end_sessions(&mut self, names: &[String]) -> Result<super::Ended, AccountError> {
        let uids: Vec<Result<u32, AccountError>> = self.read_only(|files| {
            names
                .iter()
                .map(|name| {
                    let index = row(&files.passwd, name)
                        .ok_or_else(|| AccountError::Invalid(format!("no account {name}")))?;
                    regular_uid(files, &files.passwd[index]).ok_or_else(|| {
                        AccountError::Invalid(format!("{name} is an account of the system"))
                    })
                })
                .collect()
        })?;
        let wanted = uids
            .iter()
            .filter_map(|uid| uid.as_ref().ok().copied())
            .collect();
        let stopped = stop_processes_of(&self.root.join("proc"), &wanted)?;
        Ok(uids
            .into_iter()
            .map(|uid| uid.map(|uid| stopped.get(&uid).copied().unwrap_or(0)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{end_one, exercise};
    use super::*;

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A throwaway system directory with `etc/passwd`, `etc/group` and `etc/shadow` (mode
    /// 0640), and `group` appended to the group file.
    fn system(group: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            format!("root:x:0:\nsudo:x:27:alice\n{group}"),
        )
        .unwrap();
        std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        std::fs::set_permissions(etc.join("shadow"), PermissionsExt::from_mode(0o640)).unwrap();
        root
    }

    fn read(root: &tempfile::TempDir, file: &str) -> String {
        std::fs::read_to_string(root.path().join(file)).unwrap()
    }

    #[test]
    fn linux_accounts_under_a_root_directory() {
        let root = system("");
        // Debian's shadow belongs to the `shadow` group (42), which screen lockers read it by;
        // only root can hand a file to another group.
        // Fedora's is 0000, Debian's 0640; here a mode the agent would not pick itself.
        std::fs::set_permissions(
            root.path().join("etc/shadow"),
            PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let as_root = running_as_root();
        if as_root {
            std::os::unix::fs::chown(root.path().join("etc/shadow"), None, Some(42)).unwrap();
        }
        let mut accounts = LinuxAccounts::new(root.path());
        exercise(&mut accounts);
        let passwd = read(&root, "etc/passwd");
        assert!(
            passwd.contains("billy:x:1001:1001:Billy Jones:/home/billy:/bin/bash"),
            "{passwd}"
        );
        let group = read(&root, "etc/group");
        assert!(group.contains("sudo:x:27:alice,billy"), "{group}");
        assert!(group.contains("billy:x:1001:\n"), "{group}");
        let shadow = read(&root, "etc/shadow");
        assert!(shadow.contains("billy:$6$"), "{shadow}");
        assert!(!shadow.contains("pw-one-1234"));
        // Untouched lines stay as they were.
        assert!(shadow.starts_with("root:*:19000:0:99999:7:::\n"));
        // The rewritten shadow keeps its mode and group, and so does its backup copy.
        for file in ["etc/shadow", "etc/shadow-"] {
            let metadata = std::fs::metadata(root.path().join(file)).unwrap();
            assert_eq!(metadata.mode() & 0o7777, 0o600, "{file}");
            if as_root {
                assert_eq!(metadata.gid(), 42, "{file}");
            }
        }
        // Each file's previous contents are kept beside it, as shadow-utils keeps them.
        let before = read(&root, "etc/passwd");
        accounts.create("carol", "Carol").unwrap();
        assert_eq!(read(&root, "etc/passwd-"), before);
        assert!(read(&root, "etc/passwd").contains("carol:x:"));
        assert!(!read(&root, "etc/shadow-").contains("carol:"));
        assert!(read(&root, "etc/group-").contains("billy:x:1001:"));
        assert!(
            LinuxAccounts::new(root.path())
                .create("bad name", "")
                .is_err()
        );
    }

    #[test]
    fn accounts_outside_the_regular_id_range_belong_to_the_system() {
        let root = system("");
        let passwd = root.path().join("etc/passwd");
        let mut text = read(&root, "etc/passwd");
        text.push_str(
            "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
             nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
             odd:x:abc:1000::/home/odd:/bin/bash\n\
             last:x:60000:60000::/home/last:/bin/bash\n\
             beyond:x:60001:60001::/home/beyond:/bin/bash\n",
        );
        std::fs::write(&passwd, text).unwrap();
        let accounts = LinuxAccounts::new(root.path());
        let system = |name: &str| accounts.find(name).unwrap().unwrap().system;
        for name in ["ROOT", "daemon", "nobody", "odd", "beyond"] {
            assert!(system(name), "{name}");
        }
        for name in ["alice", "last"] {
            assert!(!system(name), "{name}");
        }

        // The system's login.defs says where its regular users are.
        std::fs::write(
            root.path().join("etc/login.defs"),
            "UID_MIN 2000\nUID_MAX 70000\n",
        )
        .unwrap();
        for name in ["alice", "daemon"] {
            assert!(system(name), "{name}");
        }
        for name in ["last", "beyond"] {
            assert!(!system(name), "{name}");
        }

        // A login.defs that cannot be read right is an error, not a guess.
        std::fs::write(root.path().join("etc/login.defs"), "UID_MIN 2k\n").unwrap();
        let refused = accounts.find("alice").unwrap_err().to_string();
        assert!(refused.contains("UID_MIN is not a number"), "{refused}");
    }

    #[test]
    fn ending_sessions_stops_the_accounts_processes_under_the_roots_proc() {
        use super::super::sessions::tests::{killed, list, sleeper};
        let root = system("");
        let mut accounts = LinuxAccounts::new(root.path());
        accounts.create("billy", "").unwrap();
        let uid: u32 = read(&root, "etc/passwd")
            .lines()
            .find_map(|l| l.strip_prefix("billy:x:")?.split(':').next()?.parse().ok())
            .unwrap();
        let proc = root.path().join("proc");
        let (mut billys, mut alices) = (sleeper(), sleeper());
        list(&proc, &billys, uid, uid, "S (sleeping)");
        list(&proc, &alices, 1000, 1000, "S (sleeping)");
        // The system's accounts are never the agent's to end (root's would be the agent):
        // refused, without holding back the others asked in the same call.
        let ended = accounts
            .end_sessions(&["root".into(), "BILLY".into(), "nobody".into()])
            .unwrap();
        let refused = ended[0].as_ref().unwrap_err().to_string();
        assert!(refused.contains("account of the system"), "{refused}");
        assert_eq!(*ended[1].as_ref().unwrap(), 1);
        assert!(ended[2].is_err());
        assert!(killed(&mut billys));
        assert_eq!(alices.try_wait().unwrap(), None);
        assert!(end_one(&mut accounts, "nobody").is_err());
        assert_eq!(alices.try_wait().unwrap(), None);
        alices.kill().unwrap();
        alices.wait().unwrap();
    }

    #[test]
    fn new_ids_are_regular_as_a_user_and_as_a_group_per_login_defs() {
        let root = system("");
        std::fs::write(
            root.path().join("etc/login.defs"),
            "UID_MIN 5000\nUID_MAX 6000\nGID_MIN 4000\nGID_MAX 5001\n",
        )
        .unwrap();
        let mut accounts = LinuxAccounts::new(root.path());
        accounts.create("billy", "").unwrap();
        assert!(read(&root, "etc/passwd").contains("billy:x:5000:5000::/home/billy:"));
        accounts.create("carol", "").unwrap();
        assert!(read(&root, "etc/passwd").contains("carol:x:5001:5001::/home/carol:"));
        let before = read(&root, "etc/passwd");
        let full = accounts.create("dave", "").unwrap_err().to_string();
        assert!(full.contains("no id left"), "{full}");
        assert_eq!(read(&root, "etc/passwd"), before);
        assert!(!root.path().join("home/dave").exists());
    }

    #[test]
    fn a_new_account_gets_a_home_copied_from_skel() {
        let root = system("");
        let skel = root.path().join("etc/skel");
        std::fs::create_dir_all(skel.join(".config/app")).unwrap();
        std::fs::write(skel.join(".bashrc"), "# the site's bashrc\n").unwrap();
        std::fs::set_permissions(skel.join(".bashrc"), PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(skel.join(".config/app/settings"), "theme=dark\n").unwrap();
        std::os::unix::fs::symlink(".bashrc", skel.join(".profile")).unwrap();
        LinuxAccounts::new(root.path())
            .create("Billy", "Billy Jones")
            .unwrap();

        let home = root.path().join("home/billy");
        let metadata = std::fs::metadata(&home).unwrap();
        assert!(metadata.is_dir());
        assert_eq!(metadata.mode() & 0o7777, 0o700);
        assert_eq!(
            std::fs::read_to_string(home.join(".bashrc")).unwrap(),
            "# the site's bashrc\n"
        );
        assert_eq!(
            std::fs::metadata(home.join(".bashrc")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_to_string(home.join(".config/app/settings")).unwrap(),
            "theme=dark\n"
        );
        assert_eq!(
            std::fs::read_link(home.join(".profile")).unwrap(),
            Path::new(".bashrc")
        );
        // Nothing of the temporary build is left beside it.
        let names: Vec<_> = std::fs::read_dir(root.path().join("home"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["billy"]);
        if running_as_root() {
            for path in [
                home.clone(),
                home.join(".bashrc"),
                home.join(".config/app/settings"),
                home.join(".profile"),
            ] {
                let owner = std::fs::symlink_metadata(&path).unwrap();
                assert_eq!((owner.uid(), owner.gid()), (1001, 1001), "{path:?}");
            }
        }
    }

    #[test]
    fn ids_are_free_as_both_user_and_group() {
        // A group at 1001 (a package's, or a removed user's) pushes the account to 1002.
        let root = system("docker:x:1001:\n");
        LinuxAccounts::new(root.path()).create("billy", "").unwrap();
        assert!(read(&root, "etc/passwd").contains("billy:x:1002:1002::/home/billy:"));
        assert!(read(&root, "etc/group").contains("billy:x:1002:\n"));
    }

    #[test]
    fn a_group_named_after_the_account_becomes_its_primary_group() {
        let root = system("billy:x:1500:\n");
        LinuxAccounts::new(root.path()).create("billy", "").unwrap();
        assert!(read(&root, "etc/passwd").contains("billy:x:1501:1500::/home/billy:"));
        let group = read(&root, "etc/group");
        assert_eq!(group.matches("billy:").count(), 1, "{group}");
    }

    #[test]
    fn names_that_are_not_portable_or_could_leave_the_home_directory_are_refused() {
        let root = system("");
        let before = (read(&root, "etc/passwd"), read(&root, "etc/shadow"));
        let mut accounts = LinuxAccounts::new(root.path());
        for name in [
            "", "..", ".", ".hidden", "-x", "1234", "a/b", "bad name", "b:c", "é",
        ] {
            let refused = accounts.create(name, "").unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("cannot be a Linux account name"),
                "{name:?}: {refused}"
            );
        }
        assert_eq!(
            (read(&root, "etc/passwd"), read(&root, "etc/shadow")),
            before
        );
        assert!(!root.path().join("home").exists());
        // Digits with a letter are fine.
        accounts.create("user2", "").unwrap();
    }

    #[test]
    fn an_existing_home_is_left_as_it_is() {
        let root = system("");
        std::fs::create_dir_all(root.path().join("etc/skel")).unwrap();
        std::fs::write(root.path().join("etc/skel/.bashrc"), "skel\n").unwrap();
        let home = root.path().join("home/billy");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, PermissionsExt::from_mode(0o750)).unwrap();
        std::fs::write(home.join("notes.txt"), "kept\n").unwrap();
        LinuxAccounts::new(root.path()).create("billy", "").unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join("notes.txt")).unwrap(),
            "kept\n"
        );
        assert!(!home.join(".bashrc").exists());
        assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o7777, 0o750);
    }

    #[test]
    fn no_account_is_written_when_its_home_cannot_be_made() {
        let root = system("");
        // `home` is a file: no directory can be made under it.
        std::fs::write(root.path().join("home"), "").unwrap();
        let before = (
            read(&root, "etc/passwd"),
            read(&root, "etc/shadow"),
            read(&root, "etc/group"),
        );
        let failed = LinuxAccounts::new(root.path())
            .create("billy", "")
            .unwrap_err();
        assert!(matches!(failed, AccountError::Io(..)), "{failed}");
        assert_eq!(
            (
                read(&root, "etc/passwd"),
                read(&root, "etc/shadow"),
                read(&root, "etc/group")
            ),
            before
        );
    }
}
