//! Operator commands that work on the data directory while the service is stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlog::{EventLog, RocksLog};
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
