//! Measures the read side: catch-up of every projection over a log of a realistic mix of
//! events (many MSPs, customers, technicians, delegations, directory users, logins), into
//! SQLite and, given a URL, into PostgreSQL; then a full online rebuild.
//!
//! ```text
//! projections-bench [--events N] [--batch B] [--postgres URL] [--dir DIR]
//! ```
//! Prints events/s and times. Run it in release mode (scripts/bench does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use eventlog::{EventLog, RocksLog};
use indicatif::{ProgressBar, ProgressStyle};
use projections::workload::Workload;
use projections::{Backend, Options, Projection, Projections};

struct Args {
    events: usize,
    batch: usize,
    postgres: Option<String>,
    dir: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        events: 1_000_000,
        batch: Options::default().batch_size,
        postgres: std::env::var("IDEM_BENCH_DATABASE_URL").ok(),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--batch" => args.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--postgres" => args.postgres = Some(value()?),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A progress bar on a terminal, nothing otherwise.
fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

async fn measure(
    log: Arc<RocksLog>,
    backend: Backend,
    label: &str,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    backend.remove_all().await?;
    let head = log.head_position();
    let started = Instant::now();
    let projections = Projections::start(
        log.clone(),
        backend.clone(),
        Options {
            batch_size: batch,
            ..Options::default()
        },
    )
    .await?;
    let progress = bar(head, &format!("{label} catch-up"));
    let mut each = Vec::new();
    for projection in Projection::ALL {
        let mut status = projections.watch(projection).ok_or("no projector")?;
        loop {
            let current = status.borrow_and_update().clone();
            progress.set_position(current.checkpoint);
            if current.checkpoint >= head {
                break;
            }
            if current.stopped {
                return Err(format!("{projection} stopped: {:?}", current.failure).into());
            }
            status.changed().await?;
        }
        each.push((projection, started.elapsed()));
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    println!(
        "{label}: catch-up of {head} events: {:.1} s, {:.0} events/s (both projections, concurrently; {})",
        elapsed.as_secs_f64(),
        head as f64 / elapsed.as_secs_f64(),
        each.iter()
            .map(|(p, t)| format!("{p} done at {:.1} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let quarantined: Vec<_> = projections
        .status()
        .projectors
        .into_iter()
        .flat_map(|p| p.quarantined)
        .collect();
    if !quarantined.is_empty() {
        return Err(format!("tenants quarantined (a bug): {quarantined:#?}").into());
    }

    for projection in Projection::ALL {
        let started = Instant::now();
        let progress = bar(head, &format!("{label} rebuild {projection}"));
        let mut status = projections.watch(projection).ok_or("no projector")?;
        let rebuild = projections.rebuild(projection);
        let draw = async {
            loop {
                if let Some(r) = status.borrow_and_update().rebuilding {
                    progress.set_position(r.checkpoint);
                }
                if status.changed().await.is_err() {
                    break;
                }
            }
        };
        let generation = tokio::select! {
            generation = rebuild => generation?,
            () = draw => return Err("projector ended".into()),
        };
        progress.finish_and_clear();
        let elapsed = started.elapsed();
        println!(
            "{label}: online rebuild of {projection} into generation {generation}: {:.1} s, {:.0} events/s",
            elapsed.as_secs_f64(),
            head as f64 / elapsed.as_secs_f64()
        );
    }
    println!("{label}: resident memory {:.0} MiB", rss_mib());
    projections.shutdown().await;
    backend.remove_all().await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("projections-bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let scratch = tempfile_dir(args.dir.clone())?;
    let _cleanup = Cleanup(args.dir.is_none().then(|| scratch.clone()));
    let log = Arc::new(RocksLog::open(scratch.join("log"))?);

    let started = Instant::now();
    let commits = Workload::new(42).commits(args.events, 200);
    let progress = bar(args.events as u64, "writing the log");
    for commit in commits {
        let committed = log.commit(commit).await?;
        progress.set_position(committed.position);
    }
    progress.finish_and_clear();
    let written = started.elapsed();
    // The projections read a log at rest, as a rebuild in production does, not one still
    // compacting what was just written (that would take a core from them).
    // That includes the compactions each customer deletion queues to purge its bytes.
    let compacting = Instant::now();
    log.settle().await?;
    log.compact().await?;
    let compaction = compacting.elapsed();
    let mut types = std::collections::BTreeMap::<String, u64>::new();
    let mut from = 1;
    loop {
        let page = log.read_all(from, 50_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for event in &page {
            *types.entry(event.event_type.clone()).or_default() += 1;
        }
    }
    println!(
        "log: {} events written in {:.1} s, compacted in {:.1} s; mix: {}",
        log.head_position(),
        written.as_secs_f64(),
        compaction.as_secs_f64(),
        types
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    measure(
        log.clone(),
        Backend::Sqlite {
            dir: scratch.join("readmodels"),
        },
        "sqlite",
        args.batch,
    )
    .await?;
    match args.postgres {
        Some(url) => {
            measure(
                log.clone(),
                Backend::Postgres {
                    url,
                    schema_prefix: "bench_".into(),
                },
                "postgres",
                args.batch,
            )
            .await?
        }
        None => println!("postgres: skipped (no --postgres URL or IDEM_BENCH_DATABASE_URL)"),
    }
    Ok(())
}

/// Removes the scratch directory the bench made, however it ends.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `dir`, or a fresh directory under the system's temporary directory.
fn tempfile_dir(dir: Option<PathBuf>) -> std::io::Result<PathBuf> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("idem-projections-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
