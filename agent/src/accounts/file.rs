//! [`FileAccounts`]: local accounts in one JSON file, for tests of the sync logic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Account, AccountError, LocalAccounts, replace};

/// Accounts in a JSON file (tests of the sync logic).
pub struct FileAccounts {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    /// By lowercase name.
    accounts: BTreeMap<String, (Account, Option<String>)>,
    /// Sessions open, by lowercase name (see [`FileAccounts::open_session`]).
    #[serde(default)]
    sessions: BTreeMap<String, usize>,
}

impl FileAccounts {
    pub fn new(path: impl Into<PathBuf>) -> FileAccounts {
        FileAccounts { path: path.into() }
    }

    /// Someone logs into `name` (a test's stand-in for a session at the workstation).
    pub fn open_session(&mut self, name: &str) -> Result<(), AccountError> {
        let mut stored = self.load()?;
        let key = name.trim().to_lowercase();
        if !stored.accounts.contains_key(&key) {
            return Err(AccountError::Invalid(format!("no account {name}")));
        }
        *stored.sessions.entry(key).or_default() += 1;
        self.save(&stored)
    }

    /// How many sessions are open as `name`.
    pub fn sessions(&self, name: &str) -> Result<usize, AccountError> {
        let stored = self.load()?;
        Ok(stored
            .sessions
            .get(&name.trim().to_lowercase())
            .copied()
            .unwrap_or(0))
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
                    system: false,
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

    fn end_sessions(&mut self, names: &[String]) -> Result<super::Ended, AccountError> {
        let mut stored = self.load()?;
        let mut changed = false;
        let ended = names
            .iter()
            .map(|name| {
                let key = name.trim().to_lowercase();
                match stored.accounts.get(&key) {
                    None => Err(AccountError::Invalid(format!("no account {name}"))),
                    Some((account, _)) if account.system => Err(AccountError::Invalid(format!(
                        "{name} is an account of the system"
                    ))),
                    Some(_) => {
                        let ended = stored.sessions.remove(&key).unwrap_or(0);
                        changed |= ended > 0;
                        Ok(ended)
                    }
                }
            })
            .collect();
        if changed {
            self.save(&stored)?;
        }
        Ok(ended)
    }
}
