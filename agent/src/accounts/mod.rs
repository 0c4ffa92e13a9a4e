//! The workstation's local accounts, as the agent manages them: find one by name
//! (case-insensitively, as Windows does), create it, set its password, disable or enable it,
//! make it an administrator, end its sessions. Two implementations:
//!
//! - [`LinuxAccounts`] edits `etc/passwd`, `etc/shadow` and `etc/group` under a root
//!   directory (`/` on a real machine, a throwaway directory in tests), holding the shadow
//!   suite's lock file while it reads and rewrites them, replacing each file atomically
//!   (mode, owner and group kept), and gives each new account a home from `etc/skel` and an
//!   id that `etc/login.defs` calls regular; an account outside that range is the system's.
//!   Passwords are stored as SHA-512 crypt (`$6$`) hashes, which every Linux PAM accepts.
//!   An account's sessions end with its processes, found under the root's `proc`.
//! - [`FileAccounts`] keeps them in one JSON file, for tests of the sync logic.

mod file;
mod home;
mod linux;
mod login_defs;
mod sessions;

use std::path::{Path, PathBuf};

use crate::files::{Mode, write_atomically};
use serde::{Deserialize, Serialize};

pub use file::FileAccounts;
pub use linux::LinuxAccounts;

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
    /// An account of the system itself (on Linux: root and every uid outside the regular
    /// range), which the agent never takes over, disables or enables.
    #[serde(default)]
    pub system: bool,
}

/// What [`LocalAccounts::end_sessions`] did for each account asked: how many sessions it
/// ended, or why it could not.
pub type Ended = Vec<Result<usize, AccountError>>;

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
    /// Ends every session open as any of `names` (on Linux: stops each of their processes,
    /// in one scan of the process table); answers, for each name in order, how many it ended
    /// or why it could not (no such account; the system's own accounts are refused). An
    /// error of its own (the process table unreadable) concerns every name.
    fn end_sessions(&mut self, names: &[String]) -> Result<Ended, AccountError>;
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
    fn end_sessions(&mut self, names: &[String]) -> Result<Ended, AccountError> {
        (**self).end_sessions(names)
    }
}

/// Writes `contents` to `path` atomically, keeping an existing file's mode, owner and group
/// (see [`write_atomically`]).
fn replace(path: &Path, contents: &str, mode: u32) -> Result<(), AccountError> {
    write_atomically(path, contents.as_bytes(), Mode::KeepOr(mode))
        .map_err(|e| AccountError::Io(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every implementation must do alike.
    pub(super) fn exercise(accounts: &mut dyn LocalAccounts) {
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
        let ended = accounts
            .end_sessions(&["Billy".into(), "nobody".into()])
            .unwrap();
        assert_eq!(ended.len(), 2);
        assert_eq!(*ended[0].as_ref().unwrap(), 0, "none open");
        assert!(ended[1].is_err(), "no such account");
        assert!(accounts.end_sessions(&[]).unwrap().is_empty());
    }

    /// `end_sessions` for one account.
    pub(super) fn end_one(
        accounts: &mut dyn LocalAccounts,
        name: &str,
    ) -> Result<usize, AccountError> {
        accounts
            .end_sessions(&[name.to_owned()])?
            .pop()
            .expect("one answer per name")
    }

    #[test]
    fn file_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let mut accounts = FileAccounts::new(dir.path().join("accounts.json"));
        exercise(&mut accounts);
        accounts.open_session("billy").unwrap();
        accounts.open_session("Billy").unwrap();
        assert!(accounts.open_session("nobody").is_err());
        assert_eq!(accounts.sessions("BILLY").unwrap(), 2);
        accounts.create("alice", "").unwrap();
        accounts.open_session("alice").unwrap();
        let ended = accounts
            .end_sessions(&["billy".into(), "ALICE".into()])
            .unwrap();
        assert_eq!(
            ended.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(accounts.sessions("billy").unwrap(), 0);
        assert_eq!(accounts.sessions("alice").unwrap(), 0);
        assert_eq!(end_one(&mut accounts, "billy").unwrap(), 0);
    }
}
