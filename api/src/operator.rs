//! Operator commands that work on the data directory while the service is stopped: rebuild
//! read models, export a tenant's log, verify chains, replay a tenant's state at a time, back
//! up the log. (`idemd signup` and `idemd backup` reach a running service through its control
//! socket: `crate::control`.)
//! (Checking an exported file needs no data directory: see [`crate::audit::verify_file`].)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlog::{EventLog, Reservation, RocksLog, StreamId, VerifyReport};
use indicatif::{ProgressBar, ProgressStyle};
use projections::{Backend, Options, Projection, Projections};

use crate::app::StartError;
use crate::config::Config;

/// Rebuilds each of `which` from position 0 into a new generation, with a progress bar on a
/// terminal; answers each projection's new generation and how long it took. The event log
/// is opened exclusively: idemd must be stopped (a running service rebuilds online through
/// the projections library instead).
pub async fn rebuild(
    config: &Config,
    which: &[Projection],
) -> Result<Vec<(Projection, u64, Duration)>, StartError> {
    let log = Arc::new(RocksLog::open(config.data_dir.join("log"))?);
    let backend = Backend::from_config(
        &config.data_dir.join("readmodels"),
        config.database_url.as_deref(),
    )?;
    let projections = Projections::start(log.clone(), backend, Options::default()).await?;
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
            .ok_or(projections::Error::Closed)?;
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
            generation = projections.rebuild(projection) => generation?,
            () = draw => return Err(projections::Error::Closed.into()),
        };
        bar.finish_and_clear();
        done.push((projection, generation, started.elapsed()));
    }
    projections.shutdown().await;
    Ok(done)
}

/// A tenant named by its id or its host label (`acme`, `contoso-acme`).
async fn tenant_stream(log: &RocksLog, tenant: &str) -> Result<StreamId, OperatorError> {
    if let Ok(id) = uuid::Uuid::parse_str(tenant) {
        return Ok(StreamId(id));
    }
    log.reservation_owner(&Reservation::new("host", tenant.to_ascii_lowercase()))
        .await?
        .ok_or_else(|| OperatorError::Usage(format!("no tenant is named {tenant:?}")))
}

/// Writes a consistent copy of the log into the new directory `to`, with idemd stopped (a
/// running service backs up through its control socket instead: `crate::control`).
pub async fn backup(config: &Config, to: &Path) -> Result<eventlog::BackupReport, OperatorError> {
    let log = RocksLog::open(config.data_dir.join("log"))?;
    log.backup(to).await.map_err(|e| match e {
        eventlog::Error::BackupTarget { .. } => OperatorError::Usage(e.to_string()),
        other => OperatorError::Log(other),
    })
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{0}")]
    Usage(String),
    #[error("event log: {0} (is idemd running? stop it first)")]
    Log(#[from] eventlog::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Export(#[from] crate::audit::NotJson),
    #[error("the history does not fold: {0}")]
    Fold(#[from] domain::decision::DomainError),
    #[error("an event does not decode: {0}")]
    Decode(#[from] domain::event::DecodeError),
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

/// Writes `tenant`'s whole log as NDJSON to `out`; answers the number of events.
pub async fn export(
    config: &Config,
    tenant: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64, OperatorError> {
    let log = RocksLog::open(config.data_dir.join("log"))?;
    let stream = tenant_stream(&log, tenant).await?;
    let head = log.stream_head(stream).await?.map_or(0, |h| h.seq);
    let bar = progress(head, "exporting");
    let mut seq = 1;
    let mut count = 0;
    loop {
        let page = log.read_stream(stream, seq, 1000).await?;
        let Some(last) = page.last() else { break };
        seq = last.seq + 1;
        for event in &page {
            writeln!(out, "{}", crate::audit::line(event)?)?;
            count += 1;
        }
        bar.set_position(count);
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(count)
}

/// Verifies the chain of one tenant, or of every tenant in the log when `tenant` is `None`.
pub async fn verify(
    config: &Config,
    tenant: Option<&str>,
) -> Result<Vec<VerifyReport>, OperatorError> {
    let log = RocksLog::open(config.data_dir.join("log"))?;
    let streams = match tenant {
        Some(tenant) => vec![tenant_stream(&log, tenant).await?],
        None => {
            // Every stream that still has events, found by walking the log once.
            let bar = progress(log.head_position(), "finding tenants");
            let mut seen = std::collections::BTreeSet::new();
            let mut position = 1;
            loop {
                let page = log.read_all(position, 10_000).await?;
                let Some(last) = page.last() else { break };
                position = last.position + 1;
                seen.extend(page.iter().map(|e| e.stream));
                bar.set_position(last.position);
            }
            bar.finish_and_clear();
            seen.into_iter().collect()
        }
    };
    let bar = progress(streams.len() as u64, "verifying");
    let mut reports = Vec::new();
    for stream in streams {
        reports.push(eventlog::verify(&log, stream).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(reports)
}

/// `tenant`'s state as it stood at `at`, replayed from its log (as the audit route shows it).
pub async fn state_at(
    config: &Config,
    tenant: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<serde_json::Value, OperatorError> {
    let log = RocksLog::open(config.data_dir.join("log"))?;
    let stream = tenant_stream(&log, tenant).await?;
    let recorded = log.read_stream(stream, 1, usize::MAX).await?;
    let mut events = Vec::new();
    for event in recorded.iter().take_while(|e| e.occurred_at <= at) {
        events.push(projections::codec::decode(event)?);
    }
    let state = match events.first() {
        Some(domain::event::Event::MspTenantCreated(_)) => {
            domain::msp::MspTenant::replay(&events)?.map(|t| crate::routes::audit::msp_json(&t))
        }
        Some(_) => domain::customer::CustomerTenant::replay(&events)?
            .map(|t| crate::routes::audit::customer_json(&t)),
        None => None,
    };
    Ok(serde_json::json!({
        "tenant": stream.0,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "state": state,
    }))
}
