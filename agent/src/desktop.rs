//! The desktop agent: enrolled into one customer tenant, it follows the tenant's directory
//! change feed into a local cache and applies it to the workstation's accounts, checks
//! password logins with the service (and offline, only a password that worked online before,
//! for the same password version), and prepares the shared admin account for elevated access
//! approved on a technician's phone.
//!
//! Its state (credential, cursor, cached directory, offline verifiers) is one JSON file,
//! written atomically after each applied page, so a crash at any point replays at most the
//! last page, and applying a page twice gives the same accounts. Several processes share it
//! (the service that follows the feed, a login at the screen): every change is made under the
//! state directory's lock on the file as it is on disk then ([`Agent::update`]), so none
//! writes back an older copy over another's change.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use domain::crypto::{Argon2Params, PasswordVerifier};
use domain::customer::{DEFAULT_ELEVATION_MINUTES, ELEVATION_MINUTES};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

use crate::accounts::{Account, AccountError, LocalAccounts};
use crate::files::{Mode, write_atomically};
use crate::http::{self, Client};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("state {0}: {1}")]
    State(PathBuf, String),
    #[error(transparent)]
    Http(#[from] http::Error),
    #[error(transparent)]
    Accounts(#[from] AccountError),
    #[error("{0}")]
    Refused(String),
    /// The password was right but is a temporary one: the user must choose a new one
    /// ([`Agent::change_password`]) before the account opens.
    #[error("{0}")]
    PasswordChangeRequired(String),
}

/// The longest pause between two failed syncs.
const MOST_BACKOFF: Duration = Duration::from_secs(60);

impl AgentError {
    /// How long the service asked to wait before the next call, if it did.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            AgentError::Http(http::Error::Refused { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

/// The pause after a failed sync: `backoff`, or the wait the service asked for in `error` if
/// longer (at most [`MOST_BACKOFF`], so that a mistaken header cannot park the agent), plus a
/// jitter of up to half of it drawn by `jitter` (given the most, in ms).
fn pause_after(backoff: Duration, error: &AgentError, jitter: impl FnOnce(u64) -> u64) -> Duration {
    let asked = error
        .retry_after()
        .map_or(Duration::ZERO, |asked| asked.min(MOST_BACKOFF));
    let base = backoff.max(asked);
    base + Duration::from_millis(jitter(base.as_millis() as u64 / 2))
}

/// A directory user as the feed last described them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedUser {
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub enabled: bool,
    pub password_version: u32,
    pub login_method: String,
    /// The tenant's log seq of the change that last touched the user (0 from older state).
    #[serde(default)]
    pub seq: u64,
}

impl CachedUser {
    /// Whether the feed disabled the user after the service's check of a login at seq
    /// `checked_at` said yes: the later word wins.
    fn disabled_since(&self, checked_at: u64) -> bool {
        !self.enabled && self.seq > checked_at
    }
}

/// A verifier of a password that worked online, for offline logins.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct OfflineVerifier {
    password_version: u32,
    /// argon2id PHC string, made on this workstation.
    phc: String,
}

/// Everything the agent keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub url: String,
    pub device_id: Uuid,
    device_token: String,
    /// The tenant seq up to which the feed has been applied; `None` before the first snapshot.
    pub cursor: Option<u64>,
    pub users: BTreeMap<Uuid, CachedUser>,
    pub desktop_login: Option<(bool, Option<String>)>,
    pub shared_account: Option<String>,
    /// The tenant's elevation lifetime as the feed last said it (minutes; absent from state
    /// written before the setting, and then [`DEFAULT_ELEVATION_MINUTES`]).
    #[serde(default)]
    pub elevation_minutes: Option<u32>,
    pub branding_version: u32,
    /// The branding version whose text and images are in `branding/` beside the state.
    #[serde(default)]
    pub branding_cached: u32,
    /// The login screen's text, as of `branding_cached`.
    #[serde(default)]
    pub branding_text: Option<String>,
    offline: BTreeMap<Uuid, OfflineVerifier>,
    /// Local accounts (lowercase names) the agent opened at a login or disabled itself: the
    /// only ones the feed may enable again. An account a local administrator locked stays
    /// locked until its directory user logs in.
    #[serde(default)]
    managed: BTreeSet<String>,
    /// The elevation whose password is the shared admin account's now, if any.
    #[serde(default)]
    pub elevated: Option<Elevation>,
    /// Elevations that ended, until the service has recorded them (oldest first).
    #[serde(default)]
    pub elevations_ended: Vec<EndedElevation>,
    /// Accounts whose sessions are still to be ended (an elevation of theirs expired, or
    /// their directory user was disabled or removed, and stopping their sessions failed),
    /// each with what went wrong; tried again at each sync.
    #[serde(default)]
    pub sessions_to_end: BTreeMap<String, String>,
}

/// An elevation whose password is the shared account's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elevation {
    pub account: String,
    /// When its password stops being the one shown (seconds since the Unix epoch).
    pub expires: u64,
    /// The tenant log seq of the service's record of its approval (absent from state
    /// written before it was kept): the report of its end names it.
    #[serde(default)]
    pub elevation_seq: Option<u64>,
}

/// An elevation that ended, as the agent reports it to the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedElevation {
    /// Made here; a report sent again keeps it.
    pub report_id: Uuid,
    pub account: String,
    /// The approval's [`Elevation::elevation_seq`]; the service takes the technician from it.
    #[serde(default)]
    pub elevation_seq: Option<u64>,
    /// `expired` (its time was up) or `replaced` (a newer elevation replaced its password).
    pub reason: String,
    /// Seconds since the Unix epoch, by this workstation's clock.
    pub ended_at: u64,
}

impl EndedElevation {
    fn new(elevation: &Elevation, reason: &str, ended_at: SystemTime) -> EndedElevation {
        EndedElevation {
            report_id: uuid::Builder::from_random_bytes(rand::random()).into_uuid(),
            account: elevation.account.clone(),
            elevation_seq: elevation.elevation_seq,
            reason: reason.into(),
            ended_at: unix_seconds(ended_at),
        }
    }

    /// The body of `POST /api/v1/agent/elevations/ended`.
    fn body(&self) -> Value {
        let ended_at = chrono::DateTime::from_timestamp(self.ended_at as i64, 0)
            .unwrap_or_default()
            .to_rfc3339();
        json!({
            "report_id": self.report_id,
            "account": self.account,
            "elevation_seq": self.elevation_seq,
            "reason": self.reason,
            "ended_at": ended_at,
        })
    }
}

/// Whether the service's refusal of a report means it will never take it (the report is
/// then dropped, so that one bad report does not hold back the others): any 4xx but those
/// that say "not now" or "not you" (the device may be revoked, and then nothing matters).
fn refused_for_good(error: &AgentError) -> bool {
    matches!(
        error,
        AgentError::Http(http::Error::Refused { status, .. })
            if (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429)
    )
}

/// How long the password an elevation shows stays the shared account's, given the tenant's
/// setting in minutes (from the approval, else the feed; [`DEFAULT_ELEVATION_MINUTES`]
/// without either): then the agent gives the account a new random password nobody has seen
/// (sessions already open go on). A value outside what the service accepts is brought
/// into [`ELEVATION_MINUTES`] rather than trusted.
pub fn elevation_lifetime(minutes: Option<u32>) -> Duration {
    let minutes = minutes
        .unwrap_or(DEFAULT_ELEVATION_MINUTES)
        .clamp(*ELEVATION_MINUTES.start(), *ELEVATION_MINUTES.end());
    Duration::from_secs(u64::from(minutes) * 60)
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A passwordless login's outcome: the local account opened, `create` or `takeover`, and the
/// password it was given for the login screen to sign in with (no `Debug`: it holds it).
pub struct OpenedAccount {
    pub account: String,
    pub action: String,
    pub password: String,
}

/// How a login ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// Checked by the service; the local account was created or taken over.
    Online { account: String, action: String },
    /// The service was unreachable; a password that worked online before, unchanged since.
    Offline { account: String },
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn load(dir: &Path) -> Result<State, AgentError> {
    let path = state_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        AgentError::State(path.clone(), format!("{e} (enroll this workstation first)"))
    })?;
    serde_json::from_str(&text).map_err(|e| AgentError::State(path.clone(), e.to_string()))
}

/// Holds the state directory's lock (`state.lock`, an advisory lock every `idem-agent`
/// process takes before it reads the state to change it) until dropped.
fn lock(dir: &Path) -> Result<std::fs::File, AgentError> {
    let path = dir.join("state.lock");
    let err = |e: std::io::Error| AgentError::State(path.clone(), e.to_string());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    file.lock().map_err(err)?;
    Ok(file)
}

fn save(dir: &Path, state: &State) -> Result<(), AgentError> {
    let path = state_path(dir);
    let err = |e: &dyn std::fmt::Display| AgentError::State(path.clone(), e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let text = serde_json::to_vec_pretty(state).map_err(|e| err(&e))?;
    write_atomically(&path, &text, Mode::Exactly(0o600)).map_err(|e| err(&e))
}

/// Enrolls this workstation into the tenant at `url` with a one-time `token`; the state goes
/// to `dir` (0600).
pub async fn enroll(
    dir: &Path,
    url: &str,
    token: &str,
    hostname: &str,
) -> Result<State, AgentError> {
    let base = http::parse_url(url)?;
    let client = Client::for_url(&base)?;
    #[derive(Deserialize)]
    struct Enrolled {
        device_id: Uuid,
        device_token: String,
    }
    let enrolled: Enrolled = client
        .post_json(
            &base,
            "/api/v1/agent/enroll",
            &json!({"enrollment_token": token.trim(), "hostname": hostname}),
        )
        .await?
        .json()?;
    let state = State {
        url: base.as_str().trim_end_matches('/').to_owned(),
        device_id: enrolled.device_id,
        device_token: enrolled.device_token,
        cursor: None,
        users: BTreeMap::new(),
        desktop_login: None,
        shared_account: None,
        elevation_minutes: None,
        branding_version: 0,
        branding_cached: 0,
        branding_text: None,
        offline: BTreeMap::new(),
        managed: BTreeSet::new(),
        elevated: None,
        elevations_ended: Vec::new(),
        sessions_to_end: BTreeMap::new(),
    };
    save(dir, &state)?;
    Ok(state)
}

/// An enrolled agent with its local accounts.
pub struct Agent<A: LocalAccounts> {
    dir: PathBuf,
    pub state: State,
    pub accounts: A,
    base: Url,
    client: Client,
}

impl<A: LocalAccounts> Agent<A> {
    /// The agent enrolled in `dir`.
    pub fn open(dir: &Path, accounts: A) -> Result<Agent<A>, AgentError> {
        let state = load(dir)?;
        let base = http::parse_url(&state.url)?;
        let client = Client::for_url(&base)?;
        Ok(Agent {
            dir: dir.to_owned(),
            state,
            accounts,
            base,
            client,
        })
    }

    /// Changes the state as `change` says, under the state directory's lock, starting from the
    /// file as it is now (another process may have changed it since this one read it), and
    /// writes it back. If `change` fails, nothing is written.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let _lock = lock(&self.dir)?;
        self.state = load(&self.dir)?;
        let answer = change(self)?;
        save(&self.dir, &self.state)?;
        Ok(answer)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AgentError> {
        Ok(self
            .client
            .send(
                method,
                &self.base,
                path,
                Some(&self.state.device_token),
                body,
            )
            .await?
            .json()?)
    }

    /// Follows the feed for good, as `idem-agent run` does: long-polls of `wait`, each applied
    /// page reported to `applied` (its number of entries, 0 when a long-poll ended empty), and
    /// after a failure a pause that doubles up to a minute, never shorter than the service
    /// asked for (`Retry-After` on a 429 or 503), with jitter so that agents restarted
    /// together do not come back in step.
    pub async fn run(
        &mut self,
        wait: Duration,
        mut applied: impl FnMut(&Self, usize),
        mut failed: impl FnMut(&AgentError, Duration),
    ) -> ! {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.sync_once(wait).await {
                Ok(count) => {
                    backoff = Duration::from_secs(1);
                    applied(self, count);
                }
                Err(e) => {
                    let pause = pause_after(backoff, &e, |most| rand::random_range(0..=most));
                    failed(&e, pause);
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MOST_BACKOFF);
                }
            }
        }
    }

    /// Pulls one page of the feed (waiting up to `wait` for a change) and applies it; answers
    /// how many entries it had.
    pub async fn sync_once(&mut self, wait: Duration) -> Result<usize, AgentError> {
        // First, and whether the service answers or not.
        self.expire_elevation(SystemTime::now())?;
        self.report_ended_elevations().await?;
        let mut wait = wait;
        let applied = loop {
            let cursor = self.state.cursor;
            let after = cursor.map(|c| c.to_string()).unwrap_or_default();
            let page = self
                .call(
                    Method::GET,
                    &format!(
                        "/api/v1/agent/changes?after={after}&wait={}&limit=500",
                        wait.as_secs()
                    ),
                    None,
                )
                .await?;
            // A page is applied only onto the cursor it was asked from: if another process
            // moved the cursor meanwhile, this page may be older than what it applied.
            let applied = self.update(|agent| {
                if agent.state.cursor != cursor {
                    return Ok(None);
                }
                agent.apply_page(&page).map(Some)
            })?;
            match applied {
                Some(count) => break count,
                None => wait = Duration::ZERO,
            }
        };
        if self.state.branding_version != self.state.branding_cached {
            self.fetch_branding().await?;
        }
        Ok(applied)
    }

    /// Applies one page of the feed to the cache and the accounts, and moves the cursor past
    /// it (saved by the caller: a crash before that replays the page).
    fn apply_page(&mut self, page: &Value) -> Result<usize, AgentError> {
        let changes = page["changes"].as_array().cloned().unwrap_or_default();
        let snapshot = page["snapshot"].as_bool().unwrap_or(false);
        if snapshot {
            // Whoever the snapshot does not name is gone.
            let named: Vec<Uuid> = changes
                .iter()
                .filter_map(|c| c["user_id"].as_str().and_then(|id| id.parse().ok()))
                .collect();
            let gone: Vec<Uuid> = self
                .state
                .users
                .keys()
                .filter(|id| !named.contains(id))
                .copied()
                .collect();
            for id in gone {
                self.remove_user(id)?;
            }
        }
        for change in &changes {
            self.apply(change)?;
        }
        self.end_pending_sessions()?;
        if let Some(next) = page["next"].as_u64() {
            self.state.cursor = Some(next);
        }
        Ok(changes.len())
    }

    /// Where the login screen's images are kept: `branding/background` and `branding/logo`.
    pub fn branding_dir(&self) -> PathBuf {
        self.dir.join("branding")
    }

    /// Downloads the current branding (text and images) for the login screen.
    async fn fetch_branding(&mut self) -> Result<(), AgentError> {
        let branding = self
            .call(Method::GET, "/api/v1/agent/branding", None)
            .await?;
        let dir = self.branding_dir();
        let err = |e: &dyn std::fmt::Display| AgentError::State(dir.clone(), e.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| err(&e))?;
        for which in ["background", "logo"] {
            let path = dir.join(which);
            match branding[which].as_str() {
                Some(url) => {
                    let image = self
                        .client
                        .send(
                            Method::GET,
                            &self.base,
                            url,
                            Some(&self.state.device_token),
                            None,
                        )
                        .await?;
                    write_atomically(&path, image.bytes(), Mode::Exactly(0o644))
                        .map_err(|e| err(&e))?;
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let text = branding["text"].as_str().map(str::to_owned);
        let version = branding["version"].as_u64().unwrap_or(0) as u32;
        self.update(|agent| {
            agent.state.branding_text = text;
            agent.state.branding_cached = version;
            Ok(())
        })
    }

    fn remove_user(&mut self, id: Uuid) -> Result<(), AgentError> {
        self.state.offline.remove(&id);
        if let Some(user) = self.state.users.remove(&id) {
            self.shut_out(&user.username)?;
        }
        Ok(())
    }

    /// Whether `username` names the shared admin account (any case). The domain keeps
    /// directory users from that name; a tenant's history from before it may not.
    fn is_shared_account(&self, username: &str) -> bool {
        self.state
            .shared_account
            .as_deref()
            .is_some_and(|shared| shared.trim().to_lowercase() == username.trim().to_lowercase())
    }

    /// The local account a directory user `username` may log into, if it exists: never the
    /// shared admin account nor an account of the system.
    fn user_account(&self, username: &str) -> Result<Option<Account>, AgentError> {
        if self.is_shared_account(username) {
            return Err(AgentError::Refused(format!(
                "{username} is the shared admin account: it is opened by elevated access only"
            )));
        }
        let account = self.accounts.find(username)?;
        if let Some(account) = &account
            && account.system
        {
            return Err(AgentError::Refused(format!(
                "{} is an account of the system: idem does not take it over",
                account.name
            )));
        }
        Ok(account)
    }

    /// The local account of a disabled or removed directory user, if it is one the agent may
    /// manage: not the shared admin account, not an account of the system.
    fn managed_account(&self, username: &str) -> Result<Option<Account>, AgentError> {
        if self.is_shared_account(username) {
            return Ok(None);
        }
        Ok(self.accounts.find(username)?.filter(|a| !a.system))
    }

    /// A directory user disabled or removed: their local account is disabled, and the
    /// sessions open as it are to end (an offboarded employee keeps no session either).
    fn shut_out(&mut self, username: &str) -> Result<(), AgentError> {
        if let Some(account) = self.disable_local(username)? {
            self.state
                .sessions_to_end
                .insert(account.name, String::new());
        }
        Ok(())
    }

    /// Ends the sessions of the accounts in [`State::sessions_to_end`]; those it could not
    /// stay there with the reason, to be tried again at the next sync. Never an error of its
    /// own: a stuck session must not stop the directory's sync.
    fn end_pending_sessions(&mut self) -> Result<(), AgentError> {
        let pending: Vec<String> = std::mem::take(&mut self.state.sessions_to_end)
            .into_keys()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        // What could not be done, and why.
        let failures: Vec<(String, String)> = match self.accounts.end_sessions(&pending) {
            Ok(ended) => pending
                .into_iter()
                .zip(ended)
                .filter_map(|(account, result)| Some((account, result.err()?.to_string())))
                .collect(),
            Err(e) => {
                let reason = e.to_string();
                pending
                    .into_iter()
                    .map(|account| (account, reason.clone()))
                    .collect()
            }
        };
        for (account, reason) in failures {
            // Gone since: no session of it can be open.
            if self.accounts.find(&account)?.is_some() {
                self.state.sessions_to_end.insert(account, reason);
            }
        }
        Ok(())
    }

    /// Disables the local account of `username` if the agent may manage it; answers that
    /// account, disabled now whether or not it was before.
    fn disable_local(&mut self, username: &str) -> Result<Option<Account>, AgentError> {
        let account = self.managed_account(username)?;
        if let Some(account) = &account
            && !account.disabled
        {
            self.accounts.set_disabled(&account.name, true)?;
            // Disabled by the agent: the directory may enable it again.
            self.state.managed.insert(account.name.to_lowercase());
        }
        Ok(account)
    }

    fn apply(&mut self, change: &Value) -> Result<(), AgentError> {
        let text = |key: &str| change[key].as_str().unwrap_or_default().to_owned();
        match change["type"].as_str() {
            Some("user_upserted") => {
                let Ok(id) = text("user_id").parse::<Uuid>() else {
                    return Ok(());
                };
                let user = CachedUser {
                    username: text("username"),
                    first_name: text("first_name"),
                    last_name: text("last_name"),
                    enabled: change["enabled"].as_bool().unwrap_or(false),
                    password_version: change["password_version"].as_u64().unwrap_or(0) as u32,
                    login_method: text("login_method"),
                    seq: change["seq"].as_u64().unwrap_or(0),
                };
                let cached_version = self.state.offline.get(&id).map(|o| o.password_version);
                if cached_version.is_some_and(|v| v != user.password_version) || !user.enabled {
                    // A changed password or a disabled user: no offline login any more.
                    self.state.offline.remove(&id);
                }
                if let Some(old) = self.state.users.get(&id)
                    && old.username.to_lowercase() != user.username.to_lowercase()
                {
                    self.disable_local(&old.username.clone())?;
                }
                if !user.enabled {
                    self.shut_out(&user.username)?;
                } else if let Some(account) = self.managed_account(&user.username)?
                    && account.disabled
                    && self.state.managed.contains(&account.name.to_lowercase())
                {
                    self.accounts.set_disabled(&account.name, false)?;
                }
                self.state.users.insert(id, user);
            }
            Some("user_removed") => {
                if let Ok(id) = text("user_id").parse::<Uuid>() {
                    self.remove_user(id)?;
                }
            }
            Some("desktop_login") => {
                self.state.desktop_login = Some((
                    change["enabled"].as_bool().unwrap_or(false),
                    change["method"].as_str().map(str::to_owned),
                ));
            }
            Some("shared_account") => {
                self.state.shared_account = Some(text("username"));
                self.state.elevation_minutes = change["elevation_minutes"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok());
            }
            Some("branding") => {
                self.state.branding_version = change["version"].as_u64().unwrap_or(0) as u32
            }
            _ => {}
        }
        Ok(())
    }

    /// A login at the workstation. Online: the service checks the password, and the local
    /// account is created or taken over with it. Offline (the service unreachable): only a
    /// password that worked online before, for the user's current password version. A
    /// temporary password is [`AgentError::PasswordChangeRequired`].
    pub async fn login(&mut self, username: &str, password: &str) -> Result<Login, AgentError> {
        // What the service following the feed has written since this process read the state.
        self.state = load(&self.dir)?;
        let exists = self.user_account(username)?.is_some();
        let body = json!({
            "username": username,
            "password": password,
            "local_account_exists": exists,
        });
        match self.send_check("/api/v1/agent/login", &body).await {
            Ok(answer) => self.open_online(&answer.json()?, username, password),
            Err(http::Error::Unreachable(..)) => self.login_offline(username, password),
            Err(http::Error::Refused { kind, detail, .. })
                if kind == http::PASSWORD_CHANGE_REQUIRED =>
            {
                Err(AgentError::PasswordChangeRequired(detail))
            }
            Err(http::Error::Refused { detail, .. }) => Err(AgentError::Refused(detail)),
            Err(e) => Err(e.into()),
        }
    }

    /// A user changes their password at the workstation, proving the one they have (a
    /// temporary one an administrator set, or their own), and is logged in with the new one:
    /// the local account is created or taken over with it, and only the new one works offline
    /// from now on. Online only: the service keeps the password.
    pub async fn change_password(
        &mut self,
        username: &str,
        password: &str,
        new_password: &str,
    ) -> Result<Login, AgentError> {
        self.state = load(&self.dir)?;
        let exists = self.user_account(username)?.is_some();
        let body = json!({
            "username": username,
            "password": password,
            "new_password": new_password,
            "local_account_exists": exists,
        });
        match self.send_check("/api/v1/agent/password", &body).await {
            Ok(answer) => self.open_online(&answer.json()?, username, new_password),
            Err(http::Error::Unreachable(..)) => {
                self.after_a_lost_change(username, new_password, exists)
                    .await
            }
            Err(http::Error::Refused { detail, .. }) => Err(AgentError::Refused(detail)),
            Err(e) => Err(e.into()),
        }
    }

    /// A change whose answer never came: the service may have made it and lost the
    /// connection before answering, or never received it. A login with the new password
    /// tells which, so the person at the screen is not told "not changed" about a password
    /// that was changed (and then refused the old one they go back to).
    async fn after_a_lost_change(
        &mut self,
        username: &str,
        new_password: &str,
        exists: bool,
    ) -> Result<Login, AgentError> {
        let body = json!({
            "username": username,
            "password": new_password,
            "local_account_exists": exists,
        });
        match self.send_check("/api/v1/agent/login", &body).await {
            Ok(answer) => self.open_online(&answer.json()?, username, new_password),
            Err(http::Error::Unreachable(..)) => Err(AgentError::Refused(
                "offline: a password can only be changed while the service is reachable (if \
                 it went away during the change, the new password may be the one that works \
                 once it is back)"
                    .into(),
            )),
            Err(_) => Err(AgentError::Refused(
                "the service could not be reached during the change, which was not made: try \
                 again"
                    .into(),
            )),
        }
    }

    /// Sends a password for the service to check. A check refused as busy (the service's
    /// hashing queue is full) was neither made nor recorded: it is sent again after the wait
    /// the service asks for, a few times, so a flood elsewhere costs the person at the screen
    /// a pause rather than an error.
    async fn send_check(&self, path: &str, body: &Value) -> Result<http::Answer, http::Error> {
        self.client
            .send_patiently(
                Method::POST,
                &self.base,
                path,
                Some(&self.state.device_token),
                Some(body),
            )
            .await
    }

    /// Opens the local account of a login the service accepted (`answer`) with `password`,
    /// and keeps a verifier of it for offline logins at this password version.
    fn open_online(
        &mut self,
        answer: &Value,
        username: &str,
        password: &str,
    ) -> Result<Login, AgentError> {
        let id: Uuid = answer["user_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| AgentError::Refused("the service answered no user".into()))?;
        let name = answer["local_account"]["username"]
            .as_str()
            .unwrap_or(username)
            .to_owned();
        let action = answer["local_account"]["action"]
            .as_str()
            .unwrap_or("create")
            .to_owned();
        let full = format!(
            "{} {}",
            answer["first_name"].as_str().unwrap_or_default(),
            answer["last_name"].as_str().unwrap_or_default()
        );
        let version = answer["password_version"].as_u64().unwrap_or(0) as u32;
        let checked_at = answer["seq"].as_u64().unwrap_or(0);
        // Hashed before the state's lock is taken: it takes a while.
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        let phc = PasswordVerifier::create(password, salt, Argon2Params::default())
            .map_err(|e| AgentError::Refused(e.to_string()))?
            .as_phc()
            .to_owned();
        let account = self.update(|agent| {
            if agent
                .state
                .users
                .get(&id)
                .is_some_and(|u| u.disabled_since(checked_at))
            {
                return Err(AgentError::Refused(format!(
                    "{name} was disabled in the directory just now"
                )));
            }
            // The service's word on create or takeover is the one recorded and answered.
            agent.user_account(&name)?;
            let (account, _) = agent.local_account(&name, full.trim())?;
            agent.accounts.set_password(&account, password)?;
            agent.accounts.set_disabled(&account, false)?;
            agent.state.managed.insert(account.to_lowercase());
            agent.state.offline.insert(
                id,
                OfflineVerifier {
                    password_version: version,
                    phc,
                },
            );
            if let Some(user) = agent.state.users.get_mut(&id) {
                user.password_version = version;
            }
            Ok(account)
        })?;
        Ok(Login::Online { account, action })
    }

    fn login_offline(&mut self, username: &str, password: &str) -> Result<Login, AgentError> {
        let refused = || AgentError::Refused("offline: this password cannot be checked".into());
        // The tenant's last word on password logins holds offline too.
        if self.state.desktop_login != Some((true, Some("password".into()))) {
            return Err(AgentError::Refused(
                "offline: desktop login with a password is not enabled on this tenant".into(),
            ));
        }
        self.user_account(username)?;
        let key = username.trim().to_lowercase();
        let (id, user) = self
            .state
            .users
            .iter()
            .find(|(_, u)| u.username.to_lowercase() == key)
            .ok_or_else(refused)?;
        let verifier = self.state.offline.get(id).ok_or_else(refused)?;
        if !user.enabled || verifier.password_version != user.password_version {
            return Err(refused());
        }
        let ok = PasswordVerifier::parse(&verifier.phc)
            .and_then(|v| v.verify(password))
            .unwrap_or(false);
        if !ok {
            return Err(refused());
        }
        let account = self
            .accounts
            .find(&user.username)?
            .map(|a| a.name)
            .ok_or_else(refused)?;
        Ok(Login::Offline { account })
    }

    /// Shows a QR challenge for `purpose` (through `show`) and waits, up to `timeout`, for a
    /// phone's approval; the service's answer once approved.
    async fn approved(
        &mut self,
        purpose: &str,
        show: impl Fn(&str),
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let challenge = self
            .call(
                Method::POST,
                "/api/v1/agent/challenges",
                Some(&json!({"purpose": purpose})),
            )
            .await?;
        let id = challenge["id"].as_str().unwrap_or_default().to_owned();
        show(challenge["qr"].as_str().unwrap_or_default());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Long-polls of at most 30 s, and none past the deadline.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.as_secs().min(30);
            let answer = self
                .call(
                    Method::GET,
                    &format!("/api/v1/agent/challenges/{id}?wait={wait}"),
                    None,
                )
                .await?;
            match answer["status"].as_str() {
                Some("approved") => return Ok(answer),
                Some("pending") if tokio::time::Instant::now() < deadline => continue,
                other => {
                    return Err(AgentError::Refused(format!(
                        "{purpose} not approved ({})",
                        other.unwrap_or("unknown")
                    )));
                }
            }
        }
    }

    /// Finds local account `name` (any case) or creates it as `full_name`; answers its name
    /// as the system spells it and whether it was `create`d or taken over (`takeover`). An
    /// account of the system is never taken over.
    fn local_account(
        &mut self,
        name: &str,
        full_name: &str,
    ) -> Result<(String, String), AgentError> {
        if let Some(existing) = self.accounts.find(name)? {
            if existing.system {
                return Err(AgentError::Refused(format!(
                    "{} is an account of the system: idem does not take it over",
                    existing.name
                )));
            }
            return Ok((existing.name, "takeover".into()));
        }
        self.accounts.create(name, full_name)?;
        let created = self
            .accounts
            .find(name)?
            .map_or(name.to_owned(), |a| a.name);
        Ok((created, "create".into()))
    }

    /// A random password for an account nobody types in (the shared admin account, or a
    /// passwordless user's), base64url of 18 random bytes.
    fn random_password() -> String {
        use base64::Engine;
        let mut secret = [0u8; 18];
        rand::fill(&mut secret);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    }

    /// A passwordless login at the workstation: shows a QR challenge (through `show`); the
    /// user approves it with their own enrolled phone; the service answers who they are, and
    /// their local account is created or taken over, enabled, with a fresh random password
    /// the login screen signs in with (nobody types it). Online only: there is nothing to
    /// check offline.
    pub async fn login_passwordless(
        &mut self,
        show: impl Fn(&str),
        timeout: Duration,
    ) -> Result<OpenedAccount, AgentError> {
        self.state = load(&self.dir)?;
        let answer = self.approved("desktop", show, timeout).await?;
        let user = &answer["user"];
        let username = user["username"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| AgentError::Refused("approved without a username".into()))?;
        let full_name = format!(
            "{} {}",
            user["first_name"].as_str().unwrap_or_default(),
            user["last_name"].as_str().unwrap_or_default()
        );
        let password = Self::random_password();
        let (account, action) = self.update(|agent| {
            agent.user_account(username)?;
            let (account, action) = agent.local_account(username, full_name.trim())?;
            agent.accounts.set_password(&account, &password)?;
            agent.accounts.set_disabled(&account, false)?;
            agent.state.managed.insert(account.to_lowercase());
            Ok((account, action))
        })?;
        Ok(OpenedAccount {
            account,
            action,
            password,
        })
    }

    /// Elevated access: shows a QR challenge (through `show`), waits for a technician's
    /// approval, then makes sure the shared admin account exists, is an administrator and
    /// has a fresh random password, which it answers.
    pub async fn elevate(
        &mut self,
        show: impl Fn(&str),
        timeout: Duration,
    ) -> Result<(String, String), AgentError> {
        self.state = load(&self.dir)?;
        // Refused before a technician is asked to approve anything.
        if let Some(shared) = &self.state.shared_account
            && let Some(account) = self.accounts.find(shared)?
            && account.system
        {
            return Err(AgentError::Refused(format!(
                "the shared admin account {} is an account of the system: configure another",
                account.name
            )));
        }
        let answer = self.approved("elevate", show, timeout).await?;
        let account = answer["account"]["username"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| AgentError::Refused("approved without an account".into()))?;
        let elevation_seq = answer["account"]["elevation_seq"].as_u64();
        let lifetime = elevation_lifetime(
            answer["account"]["elevation_minutes"]
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .or(self.state.elevation_minutes),
        );
        let password = Self::random_password();
        let now = SystemTime::now();
        let name = self.update(|agent| {
            let (name, _) = agent.local_account(&account, "idem shared admin")?;
            agent.accounts.set_password(&name, &password)?;
            agent.accounts.set_disabled(&name, false)?;
            agent.accounts.make_admin(&name)?;
            // The password of the elevation before, if it still lived, is gone now.
            if let Some(previous) = agent.state.elevated.take() {
                let ended = EndedElevation::new(&previous, "replaced", now);
                agent.state.elevations_ended.push(ended);
            }
            agent.state.elevated = Some(Elevation {
                account: name.clone(),
                expires: unix_seconds(now + lifetime),
                elevation_seq,
            });
            Ok(name)
        })?;
        Ok((name, password))
    }

    /// Once an elevation's password has lived its [`elevation_lifetime`] (at `now`), gives the
    /// shared account a new random password that is shown to nobody, ends the sessions open
    /// as it (whoever logged in with the password shown keeps no administrator session past
    /// its time), and keeps a report of the end for the service. Answers whether it did.
    /// `sync_once` calls it, so `run` does within one long-poll of the expiry, and so do the
    /// login screen's commands, for a workstation whose `run` is not running.
    ///
    /// Sessions that could not be ended are tried again at each call; that failure is kept
    /// in [`State::sessions_to_end`] (and shown by `status`), not returned, so that it never
    /// stops the directory's sync.
    pub fn expire_elevation(&mut self, now: SystemTime) -> Result<bool, AgentError> {
        let due = |state: &State| {
            state
                .elevated
                .as_ref()
                .is_some_and(|elevation| elevation.expires <= unix_seconds(now))
        };
        if !due(&self.state) && self.state.sessions_to_end.is_empty() {
            return Ok(false);
        }
        self.update(|agent| {
            let mut expired = false;
            if due(&agent.state)
                && let Some(elevation) = agent.state.elevated.take()
            {
                if agent.accounts.find(&elevation.account)?.is_some() {
                    agent
                        .accounts
                        .set_password(&elevation.account, &Self::random_password())?;
                    // The password first: nobody logs in again once the sessions are gone.
                    agent
                        .state
                        .sessions_to_end
                        .insert(elevation.account.clone(), String::new());
                }
                let ended = EndedElevation::new(&elevation, "expired", now);
                agent.state.elevations_ended.push(ended);
                expired = true;
            }
            agent.end_pending_sessions()?;
            Ok(expired)
        })
    }

    /// Sends the reports of ended elevations, oldest first, each forgotten once the service
    /// recorded it (a crash in between sends it again, with its id). One the service refuses
    /// for good (a clock too far ahead, say) is dropped; any other failure leaves it and the
    /// rest for the next round, and is not the feed's business: the round goes on.
    pub async fn report_ended_elevations(&mut self) -> Result<usize, AgentError> {
        let mut reported = 0;
        while let Some(report) = self.state.elevations_ended.first().cloned() {
            let sent = self
                .client
                .send(
                    Method::POST,
                    &self.base,
                    "/api/v1/agent/elevations/ended",
                    Some(&self.state.device_token),
                    Some(&report.body()),
                )
                .await
                .map_err(AgentError::from);
            match sent {
                Ok(_) => reported += 1,
                Err(e) if refused_for_good(&e) => {}
                Err(_) => break,
            }
            self.update(|agent| {
                agent
                    .state
                    .elevations_ended
                    .retain(|r| r.report_id != report.report_id);
                Ok(())
            })?;
        }
        Ok(reported)
    }

    /// One line per fact, for `idem-agent status`.
    pub fn status(&self) -> String {
        format!(
            "tenant: {}\ndevice: {}\ncursor: {}\nusers: {}\ndesktop login: {}\nshared account: {}\nelevated: {}\nbranding version: {}\n",
            self.state.url,
            self.state.device_id,
            self.state
                .cursor
                .map_or_else(|| "none (snapshot next)".into(), |c| c.to_string()),
            self.state.users.len(),
            match &self.state.desktop_login {
                Some((true, method)) => format!("enabled ({})", method.as_deref().unwrap_or("?")),
                Some((false, _)) => "disabled".into(),
                None => "unknown".into(),
            },
            self.state.shared_account.as_deref().unwrap_or("none"),
            match (&self.state.elevated, self.state.elevations_ended.len()) {
                (Some(elevation), _) => format!(
                    "{}, its password replaced in {} s",
                    elevation.account,
                    elevation
                        .expires
                        .saturating_sub(unix_seconds(SystemTime::now()))
                ),
                (None, 0) => "no".into(),
                (None, waiting) => format!("no ({waiting} ended elevation(s) to report)"),
            },
            self.state.branding_version,
        ) + &self
            .state
            .sessions_to_end
            .iter()
            .map(|(account, failure)| {
                format!("sessions of {account} not ended yet: {failure} (tried at each sync)\n")
            })
            .collect::<String>()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// An agent enrolled (as far as its state says) with the service at `url`, keeping its
    /// accounts in a JSON file in `dir`.
    fn enrolled_with(dir: &Path, url: &Url) -> Agent<crate::accounts::FileAccounts> {
        let state = json!({
            "url": url.as_str(), "device_id": Uuid::nil(), "device_token": "token",
            "cursor": 1, "users": {}, "desktop_login": [true, "password"],
            "shared_account": null, "branding_version": 0, "offline": {},
        });
        std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
        let accounts = crate::accounts::FileAccounts::new(dir.join("accounts.json"));
        Agent::open(dir, accounts).unwrap()
    }

    const ACCEPTED: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        connection: close\r\ncontent-length: 153\r\n\r\n\
        {\"user_id\":\"00000000-0000-0000-0000-000000000001\",\"username\":\"billy\",\
        \"password_version\":2,\"seq\":9,\"local_account\":{\"username\":\"billy\",\"action\":\"create\"}}";
    const WRONG: &str = "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/problem+json\r\n\
        connection: close\r\ncontent-length: 56\r\n\r\n\
        {\"title\":\"Not authenticated\",\"detail\":\"wrong password!\"}";

    /// The path each request of a scripted peer asked for, and its body.
    fn asked(requests: &std::sync::Mutex<Vec<String>>) -> Vec<(String, Value)> {
        requests
            .lock()
            .unwrap()
            .iter()
            .map(|request| {
                let (head, body) = request.split_once("\r\n\r\n").unwrap();
                let path = head.split(' ').nth(1).unwrap().to_owned();
                (path, serde_json::from_str(body).unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_change_whose_answer_was_lost_is_known_by_the_new_password() {
        // The service made the change and lost the connection: the new password logs in.
        let dir = tempfile::tempdir().unwrap();
        let (url, requests) = http::peer::scripted(vec![None, Some(ACCEPTED)]).await;
        let mut agent = enrolled_with(dir.path(), &url);
        let login = agent
            .change_password("billy", "old-password", "new-password")
            .await
            .unwrap();
        assert_eq!(
            login,
            Login::Online {
                account: "billy".into(),
                action: "create".into()
            }
        );
        assert!(
            agent
                .accounts
                .check_password("billy", "new-password")
                .unwrap()
        );
        let asked = asked(&requests);
        assert_eq!(asked[0].0, "/api/v1/agent/password");
        assert_eq!(asked[1].0, "/api/v1/agent/login");
        assert_eq!(asked[1].1["password"], "new-password");

        // The change never reached it: the new password is refused, and the person is told
        // nothing was changed.
        let dir = tempfile::tempdir().unwrap();
        let (url, _) = http::peer::scripted(vec![None, Some(WRONG)]).await;
        let mut agent = enrolled_with(dir.path(), &url);
        match agent
            .change_password("billy", "old-password", "new-password")
            .await
        {
            Err(AgentError::Refused(why)) => assert!(why.contains("was not made"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(agent.accounts.find("billy").unwrap().is_none());
    }

    #[test]
    fn a_disable_the_feed_applied_after_the_check_wins() {
        let user = |enabled, seq| CachedUser {
            username: "billy".into(),
            first_name: "Billy".into(),
            last_name: "Jones".into(),
            enabled,
            password_version: 1,
            login_method: "password".into(),
            seq,
        };
        assert!(user(false, 8).disabled_since(7), "disabled after the check");
        assert!(
            !user(false, 7).disabled_since(7),
            "the check saw it (and refused)"
        );
        assert!(
            !user(false, 6).disabled_since(7),
            "the cache is behind the check"
        );
        assert!(!user(true, 8).disabled_since(7));
    }

    #[test]
    fn an_elevation_lives_the_tenants_minutes_within_what_the_service_accepts() {
        let minutes = |m: Option<u32>| elevation_lifetime(m).as_secs() / 60;
        assert_eq!(minutes(None), 60, "no setting seen yet: the default");
        assert_eq!(minutes(Some(15)), 15);
        assert_eq!(minutes(Some(1)), 5, "never shorter than the service allows");
        assert_eq!(minutes(Some(0)), 5);
        assert_eq!(minutes(Some(10_000)), 480, "nor longer");
    }

    #[test]
    fn an_elevation_kept_by_the_build_before_still_reads() {
        // The twenty-fifth session's state kept `[account, expires]`.
        let old: Option<Elevation> = serde_json::from_str(r#"["idem-admin", 1800000000]"#).unwrap();
        assert_eq!(
            old,
            Some(Elevation {
                account: "idem-admin".into(),
                expires: 1_800_000_000,
                elevation_seq: None,
            })
        );
    }

    #[test]
    fn a_failed_sync_waits_at_least_what_the_service_asked() {
        let busy = |retry_after| {
            AgentError::Http(http::Error::Refused {
                status: 503,
                kind: String::new(),
                title: String::new(),
                detail: String::new(),
                retry_after,
            })
        };
        let none = |_| 0;
        let second = Duration::from_secs(1);
        assert_eq!(pause_after(second, &busy(None), none), second);
        assert_eq!(
            pause_after(second, &busy(Some(Duration::from_secs(5))), none),
            Duration::from_secs(5),
            "the service's wait over a shorter backoff"
        );
        assert_eq!(
            pause_after(Duration::from_secs(8), &busy(Some(second)), none),
            Duration::from_secs(8),
            "a longer backoff stands"
        );
        assert_eq!(
            pause_after(second, &busy(Some(Duration::from_secs(86_400))), none),
            MOST_BACKOFF,
            "a day is not believed"
        );
        let unreachable = AgentError::Http(http::Error::Unreachable("u".into(), "down".into()));
        assert_eq!(pause_after(second, &unreachable, none), second);
        // The jitter is drawn up to half the pause.
        let mut most = 0;
        let paused = pause_after(second, &busy(Some(Duration::from_secs(5))), |m| {
            most = m;
            m
        });
        assert_eq!(most, 2_500);
        assert_eq!(paused, Duration::from_millis(7_500));
    }

    #[test]
    fn a_report_is_dropped_only_when_the_service_will_never_take_it() {
        let refused = |status| {
            AgentError::Http(http::Error::Refused {
                status,
                kind: String::new(),
                title: String::new(),
                detail: String::new(),
                retry_after: None,
            })
        };
        for status in [400, 404, 409, 422] {
            assert!(refused_for_good(&refused(status)), "{status}");
        }
        for status in [401, 403, 408, 429, 500, 503] {
            assert!(!refused_for_good(&refused(status)), "{status}");
        }
        let unreachable = AgentError::Http(http::Error::Unreachable("u".into(), "down".into()));
        assert!(!refused_for_good(&unreachable));
    }

    #[test]
    fn a_report_says_when_in_rfc_3339() {
        let report = EndedElevation {
            report_id: Uuid::from_u128(7),
            account: "idem-admin".into(),
            elevation_seq: Some(12),
            reason: "expired".into(),
            ended_at: 1_800_000_000,
        };
        assert_eq!(report.body()["ended_at"], "2027-01-15T08:00:00+00:00");
        assert_eq!(report.body()["elevation_seq"], 12);
    }
}
