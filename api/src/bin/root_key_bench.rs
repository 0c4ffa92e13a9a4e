//! `root-key-bench`: what a root key rotation costs a deployment of N tenants (default
//! 100,000), each with a data key: the rotation's wall time and keys rewrapped per second,
//! and the latency of a writer appending one event at a time while it runs, beside the same
//! writer's latency with no rotation (an idle baseline of the same length), and the time a
//! start takes to check every stored key against the root key.
//!
//! Runs on a new log in `--dir` (a fresh directory under the system's temporary directory by
//! default, removed afterwards). Run with `scripts/bench root-key [--tenants N] [--dir D]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "beside/mod.rs"]
mod beside;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use beside::{percentiles, writer};
use domain::crypto::DataKey;
use eventlog::{
    Commit, EventLog, Expected, NewEvent, RocksLog, StreamAppend, StreamId, WrappedKey,
};

struct Options {
    tenants: usize,
    dir: Option<PathBuf>,
}

fn options() -> Options {
    let mut options = Options {
        tenants: 100_000,
        dir: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--tenants", Some(v)) if v.parse::<usize>().is_ok() => {
                options.tenants = v.parse().unwrap();
            }
            ("--dir", Some(v)) => options.dir = Some(PathBuf::from(v)),
            _ => {
                eprintln!("usage: root-key-bench [--tenants N] [--dir D]");
                std::process::exit(2);
            }
        }
    }
    options
}

fn event() -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: "MasterKeyEnabled".into(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: "bench".into(),
        data: b"{}".to_vec(),
    }
}

#[tokio::main]
async fn main() {
    let options = options();
    let (dir, made) = match options.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("idem-root-key-bench-{}", uuid::Uuid::now_v7())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("root.key");
    let log = Arc::new(RocksLog::open(dir.join("log")).unwrap());
    let keys = api::root_key::load(&key_file, &log).await.unwrap();
    let root = keys.current();

    let started = Instant::now();
    let mut made_keys = 0;
    while made_keys < options.tenants {
        let mut commit = Commit::new();
        for _ in 0..1000.min(options.tenants - made_keys) {
            let stream = StreamId(uuid::Uuid::now_v7());
            let wrapped = DataKey::new(1, rand::random())
                .wrap(&root, stream.0, rand::random())
                .unwrap();
            commit = commit.append(
                StreamAppend::new(stream, Expected::NoStream)
                    .event(event())
                    .key(WrappedKey {
                        version: 1,
                        wrapped,
                    }),
            );
            made_keys += 1;
        }
        log.commit(commit).await.unwrap();
    }
    println!(
        "{} tenants with a data key written in {:.1} s",
        options.tenants,
        started.elapsed().as_secs_f64()
    );

    // The rotation, with a writer beside it.
    let stop = Arc::new(AtomicBool::new(false));
    let beside = tokio::spawn(writer(log.clone(), stop.clone(), event));
    let started = Instant::now();
    let rotated = api::root_key::rotate(&log, &keys, &key_file, api::operator_log::ACTOR)
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = beside.await.unwrap();
    assert_eq!(rotated.rewrapped, options.tenants);
    println!(
        "rotation: {} keys rewrapped in {:.2} s ({:.0} keys/s)",
        rotated.rewrapped,
        took.as_secs_f64(),
        rotated.rewrapped as f64 / took.as_secs_f64()
    );
    println!("a writer during the rotation: {}", percentiles(during));

    // The same writer alone, as long.
    let stop = Arc::new(AtomicBool::new(false));
    let alone = tokio::spawn(writer(log.clone(), stop.clone(), event));
    tokio::time::sleep(took).await;
    stop.store(true, Ordering::Relaxed);
    println!(
        "the writer alone, as long:    {}",
        percentiles(alone.await.unwrap())
    );

    // What every start now does: check each stored key's root key (and open the first).
    let started = Instant::now();
    api::root_key::load(&key_file, &log).await.unwrap();
    println!(
        "a start's check of the {} stored keys: {:.1} ms",
        options.tenants,
        started.elapsed().as_secs_f64() * 1e3
    );

    drop(log);
    if made {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
