//! The operator's commands. `restore` works on a stopped service's data directory.
//! `rebuild`, `export`, `verify`, `state`, `backup` and `rotate-root-key` ask the running service through its
//! control socket (`crate::control`) and, when none runs on the data directory, open the log
//! themselves; the functions taking a `&RocksLog` are what both sides run.
//! (Checking an exported file needs no data directory: see [`crate::audit::verify_file`].)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlog::{EventLog, Reservation, RestoreReport, RocksLog, StreamId, VerifyReport};
use indicatif::{ProgressBar, ProgressStyle};
use projections::{Backend, Options, Projection, Projections};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::StartError;
use crate::config::Config;
use crate::control::{self, client, client::ClientError};
use crate::key_mirror::KeyMirror;
use crate::operator_identity::OperatorIdentity;

/// One projection rebuilt: the generation now served, and how long the rebuild took.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Rebuilt {
    pub projection: String,
    pub generation: u64,
    pub seconds: f64,
}

/// Rebuilds each of `which` from position 0 into a new generation: by the running service
/// through its control socket (it goes on serving the current generation meanwhile and
/// swaps the new one in once caught up), or, with idemd stopped, here with a progress bar.
pub async fn rebuild(config: &Config, which: &[Projection]) -> Result<Vec<Rebuilt>, OperatorError> {
    let names: Vec<&str> = which.iter().map(|p| p.name()).collect();
    let request = json!({ "projections": names });
    match client::call(&control::socket_path(config), "/v1/rebuild", &request).await {
        Ok(done) => Ok(serde_json::from_value(done)?),
        Err(ClientError::NotRunning(_)) => Ok(rebuild_stopped(config, which)
            .await?
            .into_iter()
            .map(|(projection, generation, took)| Rebuilt {
                projection: projection.name().to_owned(),
                generation,
                seconds: took.as_secs_f64(),
            })
            .collect()),
        Err(e) => Err(e.into()),
    }
}

/// Rebuilds each of `which` in a stopped service's data directory (the event log is opened
/// exclusively), with a progress bar on a terminal; answers each projection's new
/// generation and how long it took.
async fn rebuild_stopped(
    config: &Config,
    which: &[Projection],
) -> Result<Vec<(Projection, u64, Duration)>, OperatorError> {
    let log = Arc::new(open(config)?);
    let backend = Backend::from_config(
        &config.data_dir.join("readmodels"),
        config.database_url.as_deref(),
    )
    .map_err(StartError::from)?;
    // Rebuilding is also how read models of another log (ahead of this one) are replaced.
    let options = Options {
        allow_other_log: true,
        ..Options::default()
    };
    let projections = Projections::start(log.clone(), backend, options)
        .await
        .map_err(StartError::from)?;
    let head = log.head_position();
    let mut done = Vec::new();
    for &projection in which {
        let started = Instant::now();
        let bar = ProgressBar::new(head);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} events, eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("rebuilding {projection}"));
        let mut status = projections
            .watch(projection)
            .ok_or(StartError::from(projections::Error::Closed))?;
        let draw = async {
            loop {
                if let Some(progress) = status.borrow_and_update().rebuilding {
                    bar.set_position(progress.checkpoint.min(head));
                }
                if status.changed().await.is_err() {
                    break;
                }
            }
        };
        let generation = tokio::select! {
            generation = projections.rebuild(projection) => generation.map_err(StartError::from)?,
            () = draw => return Err(StartError::from(projections::Error::Closed).into()),
        };
        bar.finish_and_clear();
        record_rebuilt(
            &log,
            projection,
            generation,
            &OperatorIdentity::of_this_process(),
        )
        .await?;
        done.push((projection, generation, started.elapsed()));
    }
    projections.shutdown().await;
    Ok(done)
}

/// Records in the operator log that `projection` was rebuilt into `generation` at the request
/// of `by`.
pub async fn record_rebuilt(
    log: &RocksLog,
    projection: Projection,
    generation: u64,
    by: &OperatorIdentity,
) -> Result<(), OperatorError> {
    let event = domain::event::ReadModelsRebuilt {
        projection: projection.name().to_owned(),
        generation,
    };
    crate::operator_log::record(log, event, &by.actor()).await?;
    Ok(())
}

/// A tenant named by its id or its host label (`acme`, `contoso-acme`), or the operator log
/// by its name (`operator`, see `domain::operator`).
pub async fn tenant_stream(log: &RocksLog, tenant: &str) -> Result<StreamId, OperatorError> {
    if tenant.eq_ignore_ascii_case(domain::operator::OPERATOR_LOG_NAME) {
        return Ok(crate::operator_log::stream());
    }
    if let Ok(id) = uuid::Uuid::parse_str(tenant) {
        return Ok(StreamId(id));
    }
    log.reservation_owner(&Reservation::new("host", tenant.to_ascii_lowercase()))
        .await?
        .ok_or_else(|| OperatorError::Usage(format!("no tenant is named {tenant:?}")))
}

/// Creates an MSP tenant through the running service (which mails its admin the onboarding
/// code); answers the tenant and admin as the public signup does.
pub async fn signup(
    config: &Config,
    name: &str,
    display_name: &str,
    admin_email: &str,
) -> Result<Value, OperatorError> {
    let request = json!({ "name": name, "display_name": display_name, "admin_email": admin_email });
    match client::call(&control::socket_path(config), "/v1/signup", &request).await {
        Ok(created) => Ok(created),
        Err(e @ ClientError::NotRunning(_)) => Err(OperatorError::Usage(format!(
            "signup needs the running service, which mails the admin: {e}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// How many tenants of a projection stay quarantined after a retry.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct StillQuarantined {
    pub projection: String,
    pub quarantined: usize,
}

/// Retries the quarantined tenants of every projection in the running service (a start
/// retries them too, so there is nothing to do while it is stopped).
pub async fn retry_quarantined(config: &Config) -> Result<Vec<StillQuarantined>, OperatorError> {
    match client::call(
        &control::socket_path(config),
        "/v1/retry-quarantined",
        &json!({}),
    )
    .await
    {
        Ok(left) => Ok(serde_json::from_value(left)?),
        Err(e @ ClientError::NotRunning(_)) => Err(OperatorError::Usage(format!(
            "{e}; quarantined tenants are retried when it starts"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// What a backup holds and where its keys went, as the control socket answers it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct BackupDone {
    /// The log's head position the copy reaches.
    pub head: u64,
    pub events: u64,
    pub entries: u64,
    pub bytes: u64,
    /// The tenants' data keys the copy left out (restores take them from the key mirror).
    pub keys_left_out: u64,
    /// The key mirror brought up to date after the copy, and how many keys it holds.
    pub key_mirror: PathBuf,
    pub mirrored_keys: usize,
}

/// Writes a consistent copy of the log into the new directory `to`: through the running
/// service's control socket, or, with idemd stopped, directly.
pub async fn backup(config: &Config, to: &Path) -> Result<BackupDone, OperatorError> {
    let request = json!({ "to": to });
    match client::call(&control::socket_path(config), "/v1/backup", &request).await {
        Ok(done) => Ok(serde_json::from_value(done)?),
        Err(ClientError::NotRunning(_)) => {
            let log = open(config)?;
            let mirror = config.key_mirror.clone().map(KeyMirror::new);
            backup_log(
                &log,
                mirror.as_ref(),
                to,
                &OperatorIdentity::of_this_process(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// Backs `log` up into `to`, then brings `mirror` up to date, so that it holds every key the
/// backup left out: a backup is done only once its keys are in the mirror (if they cannot be
/// written there, the backup is removed). `by` asked for it.
pub async fn backup_log(
    log: &RocksLog,
    mirror: Option<&KeyMirror>,
    to: &Path,
    by: &OperatorIdentity,
) -> Result<BackupDone, OperatorError> {
    let mirror = mirror.ok_or_else(|| {
        OperatorError::Refused(
            "backups hold no tenant keys, and a restore takes them from the key mirror: set \
             IDEM_KEY_MIRROR (--key-mirror) to a file kept apart from the data directory and \
             from the backups"
                .into(),
        )
    })?;
    let report = log.backup(to).await.map_err(|e| match e {
        eventlog::Error::BackupTarget { .. } => OperatorError::Refused(e.to_string()),
        other => OperatorError::Log(other),
    })?;
    let mirrored_keys = match mirror.refresh(log).await {
        Ok(refreshed) => refreshed.keys,
        Err(e) => {
            let removed = std::fs::remove_dir_all(to);
            return Err(OperatorError::Refused(format!(
                "{e}; the backup in {} {}, as it could not be restored without its keys",
                to.display(),
                match removed {
                    Ok(()) => "was removed".to_string(),
                    Err(e) => format!("could not be removed ({e}): delete it"),
                }
            )));
        }
    };
    let event = domain::event::BackupWritten {
        directory: to.display().to_string(),
        head_position: report.head,
        events: report.events,
    };
    crate::operator_log::record(log, event, &by.actor())
        .await
        .map_err(|e| {
            OperatorError::Refused(format!(
                "the backup in {} is complete, but could not be recorded in the operator log: {e}",
                to.display()
            ))
        })?;
    Ok(BackupDone {
        head: report.head,
        events: report.events,
        entries: report.entries,
        bytes: report.bytes,
        keys_left_out: report.keys_left_out,
        key_mirror: mirror.path().to_path_buf(),
        mirrored_keys,
    })
}

/// What a root key rotation did, and whether the key mirror holds the keys as now wrapped.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RootKeyRotated {
    #[serde(flatten)]
    pub rotated: crate::root_key::Rotated,
    pub key_mirror: Option<PathBuf>,
    /// False if the mirror could not be written: it still holds keys wrapped by the replaced
    /// root key (the service tries again every 30 s; `/readyz` says when it is current).
    pub key_mirror_current: bool,
}

/// Rotates the root key (see [`crate::root_key`]): through the running service's control
/// socket, or, with idemd stopped, directly (finishing first a rotation a stop interrupted).
pub async fn rotate_root_key(config: &Config) -> Result<RootKeyRotated, OperatorError> {
    match client::call(
        &control::socket_path(config),
        "/v1/rotate-root-key",
        &json!({}),
    )
    .await
    {
        Ok(done) => Ok(serde_json::from_value(done)?),
        Err(ClientError::NotRunning(_)) => {
            let log = open(config)?;
            let keys = crate::root_key::load(&config.root_key_file, &log).await?;
            let mirror = config.key_mirror.clone().map(KeyMirror::new);
            let by = OperatorIdentity::of_this_process();
            rotate_with(&log, &keys, &config.root_key_file, mirror.as_ref(), &by).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Rotates `keys`, whose file is `key_file`, over `log`, then brings `mirror` up to date;
/// `by` asked for it.
pub async fn rotate_with(
    log: &RocksLog,
    keys: &crate::root_key::RootKeys,
    key_file: &Path,
    mirror: Option<&KeyMirror>,
    by: &OperatorIdentity,
) -> Result<RootKeyRotated, OperatorError> {
    // No other refresh of the mirror while keys are wrapped both ways (see `KeyMirror::turn`).
    let turn = match mirror {
        Some(mirror) => Some(mirror.turn().await),
        None => None,
    };
    let rotated = crate::root_key::rotate(log, keys, key_file, &by.actor()).await?;
    tracing::warn!(
        previous_key_id = %rotated.previous_key_id,
        key_id = %rotated.key_id,
        rewrapped = rotated.rewrapped,
        "root key rotated"
    );
    let key_mirror_current = match mirror.zip(turn.as_ref()) {
        Some((mirror, turn)) => match mirror.refresh_in(turn, log).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "the key mirror still holds keys wrapped by the replaced root key; it is tried again until it is current");
                false
            }
        },
        None => true,
    };
    Ok(RootKeyRotated {
        rotated,
        key_mirror: mirror.map(|m| m.path().to_path_buf()),
        key_mirror_current,
    })
}

/// What `idemd restore` did.
#[derive(Debug)]
pub struct Restored {
    pub report: RestoreReport,
    pub key_mirror: PathBuf,
    /// Tenants the restored log holds that were deleted after the backup was taken: idemd
    /// deletes them again as it starts.
    pub to_delete_again: Vec<StreamId>,
}

/// Makes the backup in `backup` the event log of the configured data directory, which must
/// not have one, with the tenants' keys put back from the key mirror. idemd must be stopped;
/// the read models are projected again when it starts, after it has deleted again the
/// tenants deleted since the backup.
pub async fn restore(config: &Config, backup: &Path) -> Result<Restored, OperatorError> {
    let mirror = config.key_mirror.clone().ok_or_else(|| {
        OperatorError::Refused(
            "a restore takes the tenants' keys from the key mirror: set IDEM_KEY_MIRROR \
             (--key-mirror) to the file the service kept them in"
                .into(),
        )
    })?;
    let mirrored =
        crate::key_mirror::read(&mirror).map_err(|e| OperatorError::Refused(e.to_string()))?;
    let into = config.data_dir.join("log");
    let readmodels = config.data_dir.join("readmodels");
    if config.database_url.is_none() && readmodels.exists() {
        return Err(OperatorError::Refused(format!(
            "{} holds read models projected from another log: remove it (they are projected \
             again from the restored log when idemd starts)",
            readmodels.display()
        )));
    }
    let from = backup.to_path_buf();
    let restored_into = into.clone();
    let keys = mirrored.keys;
    let report = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(into.parent().unwrap_or(Path::new(".")))?;
        RocksLog::restore(&from, &into, &keys).map_err(|e| match e {
            eventlog::Error::RestoreTarget { .. } | eventlog::Error::NotABackup { .. } => {
                OperatorError::Refused(e.to_string())
            }
            other => OperatorError::Log(other),
        })
    })
    .await
    .map_err(|e| OperatorError::Io(std::io::Error::other(e)))??;
    let log = RocksLog::open(&restored_into)?;
    let event = domain::event::BackupRestored {
        backup: backup.display().to_string(),
        head_position: report.head,
        keys_restored: report.restored,
        keys_missing: report.missing.len() as u64,
    };
    let by = OperatorIdentity::of_this_process();
    crate::operator_log::record(&log, event, &by.actor())
        .await
        .map_err(|e| {
            OperatorError::Refused(format!(
                "the log is restored in {}, but the restore could not be recorded in its \
                 operator log: {e}",
                restored_into.display()
            ))
        })?;
    let to_delete_again = log
        .streams()
        .await?
        .into_iter()
        .filter(|stream| mirrored.deleted.contains(stream))
        .collect();
    Ok(Restored {
        report,
        key_mirror: mirror,
        to_delete_again,
    })
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{0}")]
    Usage(String),
    /// What was asked cannot be done as things stand (a setting missing, a target taken).
    #[error("{0}")]
    Refused(String),
    #[error("event log: {0}")]
    Log(#[from] eventlog::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Export(#[from] crate::audit::NotJson),
    #[error("the history does not fold: {0}")]
    Fold(#[from] domain::decision::DomainError),
    #[error("an event does not decode: {0}")]
    Decode(#[from] domain::event::DecodeError),
    /// The running service refused, or could not be reached.
    #[error("{0}")]
    Service(#[from] ClientError),
    #[error("the service's answer is not what this idemd expects: {0}")]
    Answer(#[from] serde_json::Error),
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("not recorded in the operator log: {0}")]
    Record(#[from] crate::operator_log::RecordError),
}

impl From<crate::root_key::RootKeyError> for OperatorError {
    fn from(error: crate::root_key::RootKeyError) -> Self {
        match error {
            crate::root_key::RootKeyError::Log(e) => OperatorError::Log(e),
            refused => OperatorError::Refused(refused.to_string()),
        }
    }
}

/// The log of a stopped service (the commands that find none running on the data directory).
fn open(config: &Config) -> Result<RocksLog, OperatorError> {
    Ok(RocksLog::open(config.data_dir.join("log"))?)
}

fn progress(total: u64, message: &str) -> ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len}, eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

/// The most NDJSON lines one page of an export carries over the control socket.
pub const EXPORT_PAGE: usize = 10_000;

/// One page of a tenant's log as NDJSON lines, from `from_seq` on.
#[derive(Serialize, Deserialize, Debug)]
pub struct ExportPage {
    pub lines: Vec<String>,
    /// Where the next page starts, if there may be one.
    pub next: Option<u64>,
}

/// Up to [`EXPORT_PAGE`] lines of `stream`'s log from `from_seq` on.
pub async fn export_page(
    log: &RocksLog,
    stream: StreamId,
    from_seq: u64,
) -> Result<ExportPage, OperatorError> {
    let page = log.read_stream(stream, from_seq, EXPORT_PAGE).await?;
    let lines = page
        .iter()
        .map(crate::audit::line)
        .collect::<Result<Vec<_>, _>>()?;
    let next = match page.last() {
        Some(last) if page.len() == EXPORT_PAGE => Some(last.seq + 1),
        _ => None,
    };
    Ok(ExportPage { lines, next })
}

/// Writes `tenant`'s whole log as NDJSON to `out`, from the running service or, with idemd
/// stopped, from the log itself; answers the number of events.
pub async fn export(
    config: &Config,
    tenant: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64, OperatorError> {
    let socket = control::socket_path(config);
    let mut count = 0;
    let mut from_seq = 1;
    let first = json!({ "tenant": tenant, "from_seq": from_seq });
    let mut online = match client::call(&socket, "/v1/export", &first).await {
        Ok(page) => Some(page),
        Err(ClientError::NotRunning(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if online.is_none() {
        let log = open(config)?;
        let stream = tenant_stream(&log, tenant).await?;
        let bar = progress(
            log.stream_head(stream).await?.map_or(0, |h| h.seq),
            "exporting",
        );
        loop {
            let page = export_page(&log, stream, from_seq).await?;
            count += write_lines(out, &page.lines)?;
            bar.set_position(count);
            let Some(next) = page.next else { break };
            from_seq = next;
        }
        bar.finish_and_clear();
    }
    while let Some(answer) = online.take() {
        let page: ExportPage = serde_json::from_value(answer)?;
        count += write_lines(out, &page.lines)?;
        if let Some(next) = page.next {
            let request = json!({ "tenant": tenant, "from_seq": next });
            online = Some(client::call(&socket, "/v1/export", &request).await?);
        }
    }
    out.flush()?;
    Ok(count)
}

fn write_lines(out: &mut dyn std::io::Write, lines: &[String]) -> Result<u64, OperatorError> {
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(lines.len() as u64)
}

/// One tenant's chain as `idemd verify` reports it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ChainCheck {
    pub tenant: uuid::Uuid,
    /// Events found sound, from seq 1 up to the first broken link.
    pub events: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// The first event that does not verify: its seq and why.
    pub broken: Option<(u64, String)>,
}

impl ChainCheck {
    pub fn is_valid(&self) -> bool {
        self.broken.is_none()
    }
}

impl From<VerifyReport> for ChainCheck {
    fn from(report: VerifyReport) -> Self {
        ChainCheck {
            tenant: report.stream.0,
            events: report.events,
            head_seq: report.head_seq,
            head_hash: report.head_hash.to_string(),
            broken: report.first_broken.map(|b| (b.seq, b.reason)),
        }
    }
}

/// Verifies the chain of one tenant, or of every tenant in `log` when `tenant` is `None`.
pub async fn verify_log(
    log: &RocksLog,
    tenant: Option<&str>,
    show_progress: bool,
) -> Result<Vec<ChainCheck>, OperatorError> {
    let streams = match tenant {
        Some(tenant) => vec![tenant_stream(log, tenant).await?],
        None => log.streams().await?,
    };
    let bar = if show_progress {
        progress(streams.len() as u64, "verifying")
    } else {
        ProgressBar::hidden()
    };
    let mut checks = Vec::new();
    for stream in streams {
        checks.push(eventlog::verify(log, stream).await?.into());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(checks)
}

/// [`verify_log`] on the running service, or, with idemd stopped, on the log itself.
pub async fn verify(
    config: &Config,
    tenant: Option<&str>,
) -> Result<Vec<ChainCheck>, OperatorError> {
    let request = json!({ "tenant": tenant });
    match client::call(&control::socket_path(config), "/v1/verify", &request).await {
        Ok(checks) => Ok(serde_json::from_value(checks)?),
        Err(ClientError::NotRunning(_)) => verify_log(&open(config)?, tenant, true).await,
        Err(e) => Err(e.into()),
    }
}

/// `stream`'s state as it stood at `at`, replayed from its log (as the audit route shows it).
pub async fn state_of(
    log: &RocksLog,
    stream: StreamId,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Value, OperatorError> {
    if stream == crate::operator_log::stream() {
        return Err(OperatorError::Usage(
            "the operator log is a record of actions, not a tenant with a state: read it with \
             `idemd export operator`"
                .into(),
        ));
    }
    let (_, state) = crate::routes::audit::replay_until::<_, OperatorError>(
        log,
        domain::ids::TenantId(stream.0),
        at,
    )
    .await?;
    Ok(json!({
        "tenant": stream.0,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "state": state,
    }))
}

/// [`state_of`] a tenant named by id or host label, from the running service or, with idemd
/// stopped, from the log itself.
pub async fn state_at(
    config: &Config,
    tenant: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Value, OperatorError> {
    let request = json!({ "tenant": tenant, "at": at });
    match client::call(&control::socket_path(config), "/v1/state", &request).await {
        Ok(state) => Ok(state),
        Err(ClientError::NotRunning(_)) => {
            let log = open(config)?;
            let stream = tenant_stream(&log, tenant).await?;
            state_of(&log, stream, at).await
        }
        Err(e) => Err(e.into()),
    }
}
