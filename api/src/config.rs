//! idemd's configuration: every setting of the HTTP contract's table, from a flag, else its
//! environment variable, else an optional TOML file (`--config` / `IDEM_CONFIG`), else the
//! default. Checked once at start; each problem is reported with the setting's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::metrics_token::MetricsGate;

/// Whether anyone may sign up an MSP tenant over HTTP.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Signup {
    Open,
    Closed,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where `/metrics` is served instead of `bind`, if set (`app::metrics_router`).
    pub metrics_bind: Option<SocketAddr>,
    pub base_domain: String,
    /// `http` or `https`: the scheme of the URLs the service hands out.
    pub public_scheme: String,
    pub data_dir: PathBuf,
    pub root_key_file: PathBuf,
    /// Where the copy of the key store that restores need is kept (`crate::key_mirror`);
    /// backups need one.
    pub key_mirror: Option<PathBuf>,
    pub database_url: Option<String>,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub signup: Signup,
    /// What directory passwords must satisfy.
    pub password_policy: domain::validate::PasswordPolicy,
    /// The cost of new password verifiers (existing ones keep theirs).
    pub argon2: domain::crypto::Argon2Params,
    /// Password logins allowed per device and username in 5 minutes.
    pub agent_login_rate: u32,
    /// Proxies whose `X-Forwarded-For` names the client (see `client_addr`).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// What the folded tenant states kept in memory may weigh together, in bytes
    /// (`command::HistoryCache`).
    pub history_cache_bytes: usize,
    /// How long a connection may take to deliver a request head (`serve`).
    pub header_read_timeout: std::time::Duration,
    /// How long a request may take to deliver its body, counted from its head (`body_deadline`).
    pub body_read_timeout: std::time::Duration,
    /// Connections served at once; `None`: half the file descriptors the process may open,
    /// at most [`crate::serve::DEFAULT_MAX_CONNECTIONS`] (`serve::connection_limit`).
    pub max_connections: Option<usize>,
    /// Connections one client address may hold open (`per_address`); trusted proxies are
    /// not capped.
    pub max_connections_per_address: usize,
    /// The bearer token `/metrics` asks for, if one is configured; else it answers anyone.
    pub metrics_token: Option<MetricsGate>,
}

/// Settings as given, before defaults and checks. Field names are the TOML file's keys.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "IDEM_BIND")]
    pub bind: Option<String>,
    /// A listener of its own for /metrics (and /healthz, /readyz), e.g. 127.0.0.1:9464: the
    /// listen address no longer serves /metrics [default: none, /metrics on the listen address]
    #[arg(long, env = "IDEM_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Tenants live at {label}.{base domain} [default: localhost]
    #[arg(long, env = "IDEM_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// Scheme of the URLs the service hands out: http, or https behind a TLS proxy [default: http]
    #[arg(long, env = "IDEM_PUBLIC_SCHEME")]
    pub public_scheme: Option<String>,
    /// Event log, SQLite read models, root key, development mail [default: ./data]
    #[arg(long, env = "IDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The operator's root key, created with mode 0600 if absent [default: $IDEM_DATA_DIR/root.key]
    #[arg(long, env = "IDEM_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// The copy of the tenants' wrapped keys kept apart from the data directory, which
    /// backups leave out and restores need; backups refuse to run without it [default: none]
    #[arg(long, env = "IDEM_KEY_MIRROR")]
    pub key_mirror: Option<PathBuf>,
    /// postgres://... puts the read models in PostgreSQL [default: SQLite in the data directory]
    #[arg(long, env = "IDEM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// smtp://host:port or smtps://... relay for outgoing mail [default: the development mailer]
    #[arg(long, env = "IDEM_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Sender address [default: idem at the base domain]
    #[arg(long, env = "IDEM_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// open, or closed (only the operator's CLI creates MSP tenants) [default: open]
    #[arg(long, env = "IDEM_SIGNUP")]
    pub signup: Option<String>,
    /// Shortest directory password, 8 to 64 characters [default: 8]
    #[arg(long, env = "IDEM_PASSWORD_MIN_LENGTH")]
    pub password_min_length: Option<usize>,
    /// argon2id memory per password hash, in KiB (at least 7168) [default: 19456, OWASP's]
    #[arg(long, env = "IDEM_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id passes (1 to 10) [default: 2]
    #[arg(long, env = "IDEM_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<u32>,
    /// argon2id lanes (1 to 8) [default: 1]
    #[arg(long, env = "IDEM_ARGON2_PARALLELISM")]
    pub argon2_parallelism: Option<u32>,
    /// Workstation password logins allowed per device and username in 5 minutes [default: 10]
    #[arg(long, env = "IDEM_AGENT_LOGIN_RATE")]
    pub agent_login_rate: Option<u32>,
    /// Reverse proxies whose X-Forwarded-For names the client, for the limits kept per client
    /// address: addresses and networks, comma-separated (e.g. 127.0.0.1,10.0.0.0/8) [default: none]
    #[arg(long, env = "IDEM_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// MiB of folded tenant states kept in memory for the next commands, estimated from their
    /// encoded size (they take ~1.6 times that); 0 keeps none [default: 256]
    #[arg(long, env = "IDEM_HISTORY_CACHE_MIB")]
    pub history_cache_mib: Option<usize>,
    /// Seconds a connection may take to send a request head, idle keep-alive time included;
    /// slower connections are closed, 1 to 3600 [default: 30]
    #[arg(long, env = "IDEM_HEADER_READ_TIMEOUT_SECONDS")]
    pub header_read_timeout_seconds: Option<u64>,
    /// Seconds a request may take to send its body once its head has arrived; a slower one is
    /// answered 408 and its connection closed, 1 to 3600 [default: 60]
    #[arg(long, env = "IDEM_BODY_READ_TIMEOUT_SECONDS")]
    pub body_read_timeout_seconds: Option<u64>,
    /// Connections served at once; more wait in the listen backlog until one closes, 1 to
    /// 1000000 [default: half the process's file descriptor limit, at most 65536]
    #[arg(long, env = "IDEM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections one client address (an IPv6 /64) may hold open; more are answered 503
    /// and closed. Trusted proxies are not capped. 1 to 1000000 [default: 1000]
    #[arg(long, env = "IDEM_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// A file (mode 0600) holding the token /metrics asks for as `Authorization: Bearer`, at
    /// least 32 visible characters; without it /metrics answers anyone [default: none]
    #[arg(long, env = "IDEM_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
}

/// A setting that cannot work, named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
    #[error("configuration file {path}: {problem}")]
    File { path: PathBuf, problem: String },
}

/// The most connections `IDEM_MAX_CONNECTIONS` accepts.
const MAX_CONNECTIONS: usize = 1_000_000;

/// The largest history cache accepted, in MiB.
const MAX_HISTORY_CACHE_MIB: usize = 1 << 20;

/// A timeout setting in seconds (`default` if not given), from 1 s to an hour.
fn timeout(
    given: Option<u64>,
    default: u64,
    setting: &'static str,
) -> Result<std::time::Duration, ConfigError> {
    let seconds = given.unwrap_or(default);
    if !(1..=3600).contains(&seconds) {
        return Err(invalid(
            setting,
            format!("{seconds} must be between 1 and 3600"),
        ));
    }
    Ok(std::time::Duration::from_secs(seconds))
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
    }

    /// These settings, with `fallback`'s where these have none.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            bind: self.bind.or(fallback.bind),
            metrics_bind: self.metrics_bind.or(fallback.metrics_bind),
            base_domain: self.base_domain.or(fallback.base_domain),
            public_scheme: self.public_scheme.or(fallback.public_scheme),
            data_dir: self.data_dir.or(fallback.data_dir),
            root_key_file: self.root_key_file.or(fallback.root_key_file),
            key_mirror: self.key_mirror.or(fallback.key_mirror),
            database_url: self.database_url.or(fallback.database_url),
            smtp_url: self.smtp_url.or(fallback.smtp_url),
            mail_from: self.mail_from.or(fallback.mail_from),
            signup: self.signup.or(fallback.signup),
            password_min_length: self.password_min_length.or(fallback.password_min_length),
            argon2_memory_kib: self.argon2_memory_kib.or(fallback.argon2_memory_kib),
            argon2_iterations: self.argon2_iterations.or(fallback.argon2_iterations),
            argon2_parallelism: self.argon2_parallelism.or(fallback.argon2_parallelism),
            agent_login_rate: self.agent_login_rate.or(fallback.agent_login_rate),
            trusted_proxies: self.trusted_proxies.or(fallback.trusted_proxies),
            history_cache_mib: self.history_cache_mib.or(fallback.history_cache_mib),
            header_read_timeout_seconds: self
                .header_read_timeout_seconds
                .or(fallback.header_read_timeout_seconds),
            body_read_timeout_seconds: self
                .body_read_timeout_seconds
                .or(fallback.body_read_timeout_seconds),
            max_connections: self.max_connections.or(fallback.max_connections),
            max_connections_per_address: self
                .max_connections_per_address
                .or(fallback.max_connections_per_address),
            metrics_token_file: self.metrics_token_file.or(fallback.metrics_token_file),
        }
    }

    /// Applies defaults and checks every setting.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let bind = self.bind.as_deref().unwrap_or("127.0.0.1:8080");
        let bind: SocketAddr = bind
            .parse()
            .map_err(|_| invalid("IDEM_BIND", format!("{bind:?} is not an address:port")))?;
        let metrics_bind = match self.metrics_bind.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let address: SocketAddr = text.parse().map_err(|_| {
                    invalid(
                        "IDEM_METRICS_BIND",
                        format!("{text:?} is not an address:port"),
                    )
                })?;
                if address == bind && address.port() != 0 {
                    return Err(invalid(
                        "IDEM_METRICS_BIND",
                        format!("{text} is the listen address (IDEM_BIND): give it another"),
                    ));
                }
                Some(address)
            }
        };

        let base_domain = self
            .base_domain
            .unwrap_or_else(|| "localhost".into())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let labels_ok = !base_domain.is_empty()
            && base_domain.len() <= 200
            && base_domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !labels_ok {
            return Err(invalid(
                "IDEM_BASE_DOMAIN",
                format!("{base_domain:?} is not a DNS name (labels of a-z, 0-9 and -)"),
            ));
        }

        let public_scheme = self.public_scheme.unwrap_or_else(|| "http".into());
        if public_scheme != "http" && public_scheme != "https" {
            return Err(invalid(
                "IDEM_PUBLIC_SCHEME",
                format!("{public_scheme:?} must be http or https"),
            ));
        }

        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("data"));
        let root_key_file = self
            .root_key_file
            .unwrap_or_else(|| data_dir.join("root.key"));

        let key_mirror = self.key_mirror.filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &key_mirror
            && (path.file_name().is_none() || path.is_dir())
        {
            return Err(invalid(
                "IDEM_KEY_MIRROR",
                format!("{} must name a file", path.display()),
            ));
        }

        let database_url = self.database_url.filter(|u| !u.is_empty());
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "IDEM_DATABASE_URL",
                "must start with postgres:// or postgresql:// (leave it unset for SQLite)",
            ));
        }

        let smtp_url = self.smtp_url.filter(|u| !u.is_empty());
        if let Some(url) = &smtp_url {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(invalid(
                    "IDEM_SMTP_URL",
                    "must start with smtp:// or smtps://",
                ));
            }
            crate::mail::Mailer::check_smtp_url(url).map_err(|e| invalid("IDEM_SMTP_URL", e))?;
        }

        let mail_from = self
            .mail_from
            .unwrap_or_else(|| format!("idem@{base_domain}"));
        // Loose on purpose (the default, idem@localhost, has a dotless domain), strict on what
        // could break a mail header.
        let shape_ok = matches!(mail_from.split_once('@'), Some((local, host))
            if !local.is_empty() && !host.is_empty() && !host.contains('@'))
            && !mail_from
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>');
        if !shape_ok {
            return Err(invalid(
                "IDEM_MAIL_FROM",
                format!("{mail_from:?} is not an email address"),
            ));
        }

        let signup = match self.signup.as_deref().unwrap_or("open") {
            "open" => Signup::Open,
            "closed" => Signup::Closed,
            other => {
                return Err(invalid(
                    "IDEM_SIGNUP",
                    format!("{other:?} must be open or closed"),
                ));
            }
        };

        let defaults = domain::validate::PasswordPolicy::default();
        let min_chars = self.password_min_length.unwrap_or(defaults.min_chars);
        if !(domain::validate::LEAST_MIN_PASSWORD_CHARS..=64).contains(&min_chars) {
            return Err(invalid(
                "IDEM_PASSWORD_MIN_LENGTH",
                format!("{min_chars} must be between 8 and 64"),
            ));
        }
        let password_policy = domain::validate::PasswordPolicy {
            min_chars,
            max_chars: defaults.max_chars,
        };
        let owasp = domain::crypto::Argon2Params::default();
        let argon2 = domain::crypto::Argon2Params {
            memory_kib: self.argon2_memory_kib.unwrap_or(owasp.memory_kib),
            iterations: self.argon2_iterations.unwrap_or(owasp.iterations),
            parallelism: self.argon2_parallelism.unwrap_or(owasp.parallelism),
        };
        // OWASP's floor is 7 MiB with 5 passes; below that a verifier is too cheap to guess.
        if !(7168..=4_194_304).contains(&argon2.memory_kib) {
            return Err(invalid(
                "IDEM_ARGON2_MEMORY_KIB",
                format!("{} must be between 7168 and 4194304", argon2.memory_kib),
            ));
        }
        if !(1..=10).contains(&argon2.iterations) {
            return Err(invalid(
                "IDEM_ARGON2_ITERATIONS",
                format!("{} must be between 1 and 10", argon2.iterations),
            ));
        }
        if !(1..=8).contains(&argon2.parallelism) {
            return Err(invalid(
                "IDEM_ARGON2_PARALLELISM",
                format!("{} must be between 1 and 8", argon2.parallelism),
            ));
        }

        let agent_login_rate = self.agent_login_rate.unwrap_or(10);
        if agent_login_rate == 0 {
            return Err(invalid("IDEM_AGENT_LOGIN_RATE", "must be at least 1"));
        }

        let trusted_proxies = crate::client_addr::TrustedProxies::parse(
            self.trusted_proxies.as_deref().unwrap_or(""),
        )
        .map_err(|problem| invalid("IDEM_TRUSTED_PROXIES", problem))?;

        let history_cache_mib = self
            .history_cache_mib
            .unwrap_or(crate::command::CACHED_HISTORY_BYTES >> 20);
        if history_cache_mib > MAX_HISTORY_CACHE_MIB {
            return Err(invalid(
                "IDEM_HISTORY_CACHE_MIB",
                format!("{history_cache_mib} must be at most {MAX_HISTORY_CACHE_MIB} (1 TiB)"),
            ));
        }

        let header_read_timeout = timeout(
            self.header_read_timeout_seconds,
            30,
            "IDEM_HEADER_READ_TIMEOUT_SECONDS",
        )?;
        let body_read_timeout = timeout(
            self.body_read_timeout_seconds,
            60,
            "IDEM_BODY_READ_TIMEOUT_SECONDS",
        )?;

        if let Some(max) = self.max_connections
            && !(1..=MAX_CONNECTIONS).contains(&max)
        {
            return Err(invalid(
                "IDEM_MAX_CONNECTIONS",
                format!("{max} must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }

        let max_connections_per_address = self
            .max_connections_per_address
            .unwrap_or(crate::per_address::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS);
        if !(1..=MAX_CONNECTIONS).contains(&max_connections_per_address) {
            return Err(invalid(
                "IDEM_MAX_CONNECTIONS_PER_ADDRESS",
                format!("{max_connections_per_address} must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }

        let metrics_token = match self
            .metrics_token_file
            .filter(|p| !p.as_os_str().is_empty())
        {
            Some(path) => Some(
                MetricsGate::open(path)
                    .map_err(|problem| invalid("IDEM_METRICS_TOKEN_FILE", problem))?,
            ),
            None => None,
        };

        Ok(Config {
            bind,
            metrics_bind,
            base_domain,
            public_scheme,
            data_dir,
            root_key_file,
            key_mirror,
            database_url,
            smtp_url,
            mail_from,
            signup,
            password_policy,
            argon2,
            agent_login_rate,
            trusted_proxies,
            history_cache_bytes: history_cache_mib << 20,
            header_read_timeout,
            body_read_timeout,
            max_connections: self.max_connections,
            max_connections_per_address,
            metrics_token,
        })
    }
}

impl Config {
    /// The URL of the tenant at `host_label`, as handed out.
    pub fn tenant_url(&self, host_label: &str) -> String {
        let port = match (self.public_scheme.as_str(), self.bind.port()) {
            ("http", 80) | ("https", 443) => String::new(),
            // Behind a TLS proxy the public port is the proxy's, not ours.
            ("https", _) => String::new(),
            (_, port) => format!(":{port}"),
        };
        format!(
            "{}://{host_label}.{}{port}",
            self.public_scheme, self.base_domain
        )
    }
}
