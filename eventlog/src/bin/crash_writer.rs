//! Test helper for `tests/crash.rs`: appends to the log in `argv[1]` from several tasks until it
//! is killed, and prints every acknowledged event as one line
//! `ack <stream> <seq> <position> <hash>`, flushed as soon as the append returns. The test
//! kills it with SIGKILL at random moments and checks that every printed event survived.
//!
//! The writers cover each kind of append: single events, batches, atomic two-stream commits,
//! and racing appends with exact expectations. Each event's data is `<event id>:<stream>`, so
//! the checker can tell that the bytes it reads back are the ones written.
//!
//! With a second argument, memtables are that small: they fill and flush every few hundred
//! events, so kills also land during flushes and compactions; with a third, journal segments
//! are: they fill every few dozen events, so kills also land while the journal moves to a new
//! segment, retires old ones, zeroes them and prepares spares.

use std::io::Write;
use std::sync::Arc;

use chrono::Utc;
use eventlog::{
    Commit, Committed, EventLog, Expected, NewEvent, RocksLog, RocksOptions, StreamAppend, StreamId,
};
use uuid::Uuid;

/// The streams the writers use: fixed, so that every run continues the same streams.
fn stream(n: u128) -> StreamId {
    StreamId(Uuid::from_u128(
        0x1d3e_0000_0000_0000_0000_0000_0000_0000 + n,
    ))
}

fn event(s: StreamId) -> NewEvent {
    let id = Uuid::now_v7();
    NewEvent {
        id,
        event_type: "CrashTested".into(),
        schema_version: 1,
        occurred_at: Utc::now(),
        actor: "crash-writer".into(),
        data: format!("{id}:{s}").into_bytes(),
    }
}

fn report(committed: &Committed) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for e in &committed.events {
        writeln!(out, "ack {} {} {} {}", e.stream, e.seq, e.position, e.hash)?;
    }
    out.flush()
}

async fn single(
    log: Arc<RocksLog>,
    s: StreamId,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        report(
            &log.append(StreamAppend::new(s, Expected::Any).event(event(s)))
                .await?,
        )?;
    }
}

async fn batches(
    log: Arc<RocksLog>,
    s: StreamId,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let append = StreamAppend::new(s, Expected::Any).events((0..10).map(|_| event(s)));
        report(&log.append(append).await?)?;
    }
}

async fn pairs(
    log: Arc<RocksLog>,
    a: StreamId,
    b: StreamId,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let commit = Commit::new()
            .append(StreamAppend::new(a, Expected::Any).event(event(a)))
            .append(StreamAppend::new(b, Expected::Any).event(event(b)));
        report(&log.commit(commit).await?)?;
    }
}

async fn racer(
    log: Arc<RocksLog>,
    s: StreamId,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let seq = log.stream_head(s).await?.map_or(0, |h| h.seq);
        match log
            .append(StreamAppend::new(s, Expected::At(seq)).event(event(s)))
            .await
        {
            Ok(committed) => report(&committed)?,
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let usage = "usage: eventlog-crash-writer <dir> [memtable bytes [journal segment bytes]]";
    let dir = std::env::args().nth(1).ok_or(usage)?;
    let mut options = RocksOptions::default();
    if let Some(bytes) = std::env::args().nth(2) {
        options.memtable_bytes = bytes.parse().map_err(|_| usage)?;
    }
    if let Some(bytes) = std::env::args().nth(3) {
        options.journal_segment_bytes = bytes.parse().map_err(|_| usage)?;
    }
    let log = Arc::new(RocksLog::open_with(&dir, options)?);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..6 {
        tasks.spawn(single(Arc::clone(&log), stream(n)));
    }
    tasks.spawn(batches(Arc::clone(&log), stream(6)));
    tasks.spawn(pairs(Arc::clone(&log), stream(7), stream(8)));
    tasks.spawn(racer(Arc::clone(&log), stream(9)));
    tasks.spawn(racer(Arc::clone(&log), stream(9)));
    // The writers only stop on an error: report the first.
    match tasks.join_next().await {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}
