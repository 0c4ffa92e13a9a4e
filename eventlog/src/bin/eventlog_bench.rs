//! The event log benchmark: prints, for one data directory's disk, the raw fsync rate R (before
//! and after the appends, since some disks slow down after a burst), durable appends/s for one
//! writer, for 64 concurrent writers on 64 streams and for batches of 100 events, whole-log scan
//! events/s, the time to read back one stream of 1,000,000 events, an online backup's rate,
//! how long deleting that stream holds up another writer, and peak memory.
//!
//! ```text
//! cargo run --release -p idem-eventlog --bin eventlog-bench -- [--dir D] [--seconds S] [--stream-events N]
//! ```

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use eventlog::{Commit, EventLog, Expected, NewEvent, RocksLog, StreamAppend, StreamId};
use uuid::Uuid;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    dir: PathBuf,
    seconds: f64,
    stream_events: u64,
}

fn args() -> Result<Args, AnyError> {
    let mut args = Args {
        dir: PathBuf::from("bench-data"),
        seconds: 3.0,
        stream_events: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value),
            "--seconds" => args.seconds = value.parse()?,
            "--stream-events" => args.stream_events = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

/// A realistic event: a user record of about 200 bytes of JSON.
fn event(n: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: "UserCreated".into(),
        schema_version: 1,
        occurred_at: Utc::now(),
        actor: "user:0190f2a4-8d2c-7c4e-9a41-5f3b2d1e0c9a".into(),
        data: format!(
            "{{\"user_id\":\"{}\",\"username\":\"user{n}\",\"first_name\":\"Billy\",\
             \"last_name\":\"Jones\",\"email\":\"user{n}@customer.example\",\"enabled\":true}}",
            Uuid::now_v7()
        )
        .into_bytes(),
    }
}

/// Writes ~2 MB to a new log and waits for its background work, as a log that has been
/// running a while: a brand-new journal writes to a segment that grows until, after its first
/// MiB, a zero-filled spare is ready; a log that has run (or was reopened) always has one.
async fn warm_up(log: &RocksLog) -> Result<(), AnyError> {
    let stream = StreamId(Uuid::now_v7());
    for batch in 0..10u64 {
        log.append(
            StreamAppend::new(stream, Expected::At(batch * 1000))
                .events((0..1000).map(|i| event(batch * 1000 + i))),
        )
        .await?;
    }
    log.settle().await?;
    Ok(())
}

/// Writes 4 KiB and fdatasyncs in a loop: over a preallocated file (R, the disk's limit), or
/// appending to a growing file, as a log does (each sync then also journals the new size).
fn raw_fsync_rate(dir: &Path, seconds: f64, append: bool) -> Result<f64, AnyError> {
    let path = dir.join("fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = [0xa5u8; 4096];
    const BLOCKS: u64 = 256;
    if !append {
        for _ in 0..BLOCKS {
            file.write_all(&block)?;
        }
    }
    file.sync_all()?;
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        if !append {
            file.seek(SeekFrom::Start((syncs % BLOCKS) * 4096))?;
        }
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(rate)
}

struct Run {
    appends: u64,
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Commits made durable per WAL sync: how well group commit fills each sync.
    commits_per_sync: f64,
}

impl Run {
    fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// `writers` tasks on as many streams append `batch` events at a time for `seconds`.
async fn appends(
    log: &Arc<RocksLog>,
    writers: usize,
    batch: usize,
    seconds: f64,
) -> Result<Run, AnyError> {
    // Events are made before the clock starts: generating ids is the caller's cost, not the log's.
    let templates: Arc<Vec<NewEvent>> = Arc::new((0..batch as u64).map(event).collect());
    let stats_before = log.write_stats();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let log = Arc::clone(log);
        let templates = Arc::clone(&templates);
        tasks.spawn(async move {
            let stream = StreamId(Uuid::now_v7());
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let append =
                    StreamAppend::new(stream, Expected::At(n)).events(templates.iter().cloned());
                let t = Instant::now();
                log.append(append).await?;
                latencies.push(t.elapsed());
                n += batch as u64;
            }
            Ok::<_, eventlog::Error>(latencies)
        });
    }
    let mut run = Run {
        appends: 0,
        events: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        commits_per_sync: 0.0,
    };
    while let Some(done) = tasks.join_next().await {
        let latencies = done??;
        run.appends += latencies.len() as u64;
        run.events += (latencies.len() * batch) as u64;
        run.latencies.extend(latencies);
    }
    run.elapsed = start.elapsed();
    let stats = log.write_stats();
    run.commits_per_sync = (stats.commits - stats_before.commits) as f64
        / (stats.syncs - stats_before.syncs).max(1) as f64;
    Ok(run)
}

/// Runs `work` while another writer appends to its own stream one event at a time; answers
/// what `work` answered, how long it took, that writer's slowest append meanwhile and how
/// many it made.
async fn while_writing<T>(
    log: &Arc<RocksLog>,
    work: impl std::future::Future<Output = Result<T, eventlog::Error>>,
) -> Result<(T, Duration, Duration, usize), AnyError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started, writing) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn({
        let (log, stop) = (Arc::clone(log), Arc::clone(&stop));
        async move {
            let other = StreamId(Uuid::now_v7());
            let mut latencies = Vec::new();
            let mut started = Some(started);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n = latencies.len() as u64;
                let t = Instant::now();
                log.append(StreamAppend::new(other, Expected::At(n)).event(event(n)))
                    .await?;
                latencies.push(t.elapsed());
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
            Ok::<_, eventlog::Error>(latencies)
        }
    });
    let _ = writing.await;
    let start = Instant::now();
    let done = work.await?;
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let latencies = writer.await??;
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    Ok((done, took, slowest, latencies.len()))
}

/// Reads the whole log in pages, as a projector catching up does.
async fn scan(log: &RocksLog) -> Result<(u64, Duration), AnyError> {
    let start = Instant::now();
    let (mut scanned, mut from) = (0u64, 0u64);
    loop {
        let page = log.read_all(from, 10_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        scanned += page.len() as u64;
    }
    Ok((scanned, start.elapsed()))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target { "meets" } else { "BELOW" }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), AnyError> {
    let args = args()?;
    std::fs::create_dir_all(&args.dir)?;
    let db_dir = args.dir.join(format!("bench-{}", Uuid::now_v7()));
    println!("event log benchmark in {}", db_dir.display());

    let r_before = raw_fsync_rate(&args.dir, args.seconds, false)?;
    println!("raw fsync rate R (before):        {r_before:>12.0} syncs/s");
    let appending = raw_fsync_rate(&args.dir, args.seconds, true)?;
    println!("appending fsync rate (a log's):   {appending:>12.0} syncs/s");

    let log = Arc::new(RocksLog::open(&db_dir)?);
    warm_up(&log).await?;

    let mut one = appends(&log, 1, 1, args.seconds).await?;
    println!(
        "1 writer, 1 event/append:         {:>12.0} appends/s  p50 {:?} p99 {:?}  {:.1} commits/sync",
        one.appends_per_sec(),
        one.percentile(0.5),
        one.percentile(0.99),
        one.commits_per_sync
    );
    let mut many = appends(&log, 64, 1, args.seconds).await?;
    println!(
        "64 writers on 64 streams:         {:>12.0} appends/s  p50 {:?} p99 {:?}  {:.1} commits/sync",
        many.appends_per_sec(),
        many.percentile(0.5),
        many.percentile(0.99),
        many.commits_per_sync
    );
    let mut batches = appends(&log, 1, 100, args.seconds).await?;
    println!(
        "1 writer, batches of 100:         {:>12.0} events/s   p50 {:?} p99 {:?}  {:.1} commits/sync",
        batches.events_per_sec(),
        batches.percentile(0.5),
        batches.percentile(0.99),
        batches.commits_per_sync
    );

    // One stream of N events, written in the largest commits the log takes.
    let stream = StreamId(Uuid::now_v7());
    let start = Instant::now();
    let mut written = 0u64;
    while written < args.stream_events {
        let n = (args.stream_events - written).min(eventlog::MAX_COMMIT_EVENTS as u64);
        log.append(
            StreamAppend::new(stream, Expected::At(written))
                .events((0..n).map(|i| event(written + i))),
        )
        .await?;
        written += n;
    }
    println!(
        "loading one stream of {} events:  {:>10.0} events/s  ({:.1} s)",
        args.stream_events,
        written as f64 / start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );

    let (scanned, fresh_scan) = scan(&log).await?;
    println!(
        "whole-log scan, just written:     {:>12.0} events/s  ({scanned} events in {:.2} s)",
        scanned as f64 / fresh_scan.as_secs_f64(),
        fresh_scan.as_secs_f64()
    );
    let start = Instant::now();
    log.compact().await?;
    let compaction = start.elapsed();
    let (scanned, scan_time) = scan(&log).await?;
    println!(
        "whole-log scan, compacted:        {:>12.0} events/s  ({scanned} events in {:.2} s; compaction took {:.1} s)",
        scanned as f64 / scan_time.as_secs_f64(),
        scan_time.as_secs_f64(),
        compaction.as_secs_f64()
    );

    let start = Instant::now();
    let (mut read, mut seq) = (0u64, 1u64);
    loop {
        let page = log.read_stream(stream, seq, 10_000).await?;
        let Some(last) = page.last() else { break };
        seq = last.seq + 1;
        read += page.len() as u64;
    }
    let stream_read = start.elapsed();
    println!(
        "read back one stream:             {:>12.2} s        ({read} events, {:.0} events/s)",
        stream_read.as_secs_f64(),
        read as f64 / stream_read.as_secs_f64()
    );

    let backup_dir = args.dir.join("backup");
    let (backup, backup_time, stalled, during) =
        while_writing(&log, log.backup(&backup_dir)).await?;
    std::fs::remove_dir_all(&backup_dir)?;
    println!(
        "backup of the whole log:          {:>12.0} events/s  ({} events, {:.0} MiB in {:.1} s; meanwhile another writer's slowest append {:.1} ms, {during} appends)",
        backup.events as f64 / backup_time.as_secs_f64(),
        backup.events,
        backup.bytes as f64 / (1u64 << 20) as f64,
        backup_time.as_secs_f64(),
        stalled.as_secs_f64() * 1000.0
    );

    let (_, deletion, stalled, during) =
        while_writing(&log, log.commit(Commit::new().delete(stream))).await?;
    println!(
        "delete that stream:               {:>12.2} s        (meanwhile another writer's slowest append {:.1} ms, {during} appends)",
        deletion.as_secs_f64(),
        stalled.as_secs_f64() * 1000.0
    );
    drop(log);

    let r_after = raw_fsync_rate(&args.dir, args.seconds, false)?;
    println!("raw fsync rate R (after):         {r_after:>12.0} syncs/s");
    if let Some(rss) = peak_rss_mib() {
        println!("peak resident memory:             {rss:>12.0} MiB");
    }

    println!("\nratios against R (before / after), targets in brackets:");
    for (what, value, per_sync, target) in [
        (
            "1 writer        [>= 0.8 x R]",
            one.appends_per_sec(),
            1.0,
            0.8,
        ),
        (
            "64 writers      [>= 0.5 x 64 x R]",
            many.appends_per_sec(),
            64.0,
            0.5,
        ),
        (
            "batches of 100  [>= 0.5 x 100 x R]",
            batches.events_per_sec(),
            100.0,
            0.5,
        ),
    ] {
        let (b, a) = (value / (per_sync * r_before), value / (per_sync * r_after));
        println!(
            "  {what:<36} {b:>6.2} / {a:>6.2}  {}",
            verdict(b.min(a), target)
        );
    }
    println!(
        "  1 writer against the appending rate        {:>6.2}",
        one.appends_per_sec() / appending
    );
    for (what, time) in [("just written", fresh_scan), ("compacted", scan_time)] {
        let rate = scanned as f64 / time.as_secs_f64();
        println!(
            "  scan, {what:<13} [>= 1,000,000 events/s] {rate:>10.0}  {}",
            verdict(rate, 1_000_000.0)
        );
    }
    std::fs::remove_dir_all(&db_dir)?;
    Ok(())
}
