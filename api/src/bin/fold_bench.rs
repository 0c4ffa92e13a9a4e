//! `fold-bench`: what a command costs on a tenant whose folded state is not in memory (after a
//! restart, or once the history cache dropped it): the fold of a customer stream of N events
//! (U directory users with passwords, the rest workstation logins, as a busy customer's stream
//! is), from seq 1 and from a snapshot with no tail and with the longest tail a snapshot of
//! that size leaves (one event short of [`api::snapshots::interval`]), and what a snapshot
//! costs: the copy of the state the command takes under the tenant's turn, and the encoding
//! and commit that follow in a task of their own.
//!
//! Runs on a new log in the system's temporary directory, removed afterwards. Run with
//! `scripts/bench fold [--events N] [--users U]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "beside/mod.rs"]
mod beside;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::command::{self, History, Resumed};
use api::snapshots;
use beside::{percentiles, writer};
use domain::crypto::Sealed;
use domain::event::*;
use domain::ids::{DeviceId, TenantId, UserId};
use eventlog::{Commit, EventLog, Expected, RocksLog, StreamAppend, StreamId};

struct Options {
    events: usize,
    users: usize,
}

fn options() -> Options {
    let mut options = Options {
        events: 1_000_000,
        users: 1_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1).and_then(|v| v.parse().ok())) {
            ("--events", Some(n)) => options.events = n,
            ("--users", Some(n)) => options.users = n,
            _ => {
                eprintln!("usage: fold-bench [--events N] [--users U]");
                std::process::exit(2);
            }
        }
    }
    options
}

/// A busy customer's history: the tenant, its users with passwords, then logins (the same
/// events each time it is made, so that a tail continues it).
fn history(tenant: TenantId, users: usize, events: usize) -> impl Iterator<Item = Event> {
    let id = |n: usize| uuid::Uuid::from_u128(n as u128 + 1);
    let ids: Vec<UserId> = (0..users).map(|i| UserId(id(1_000 + i))).collect();
    let opened = Event::CustomerTenantOpened(CustomerTenantOpened {
        tenant_id: tenant,
        msp_id: TenantId(id(0)),
        name: "contoso".into(),
        display_name: "Contoso".into(),
        host_label: "contoso".into(),
    });
    let enabled = Event::MasterKeyEnabled(MasterKeyEnabled { key_version: 1 });
    let directory = ids
        .clone()
        .into_iter()
        .enumerate()
        .flat_map(|(i, user_id)| {
            [
                Event::DirectoryUserCreated(DirectoryUserCreated {
                    user_id,
                    first_name: format!("First{i}"),
                    last_name: format!("Last{i}"),
                    username: format!("user{i}"),
                    email: format!("user{i}@contoso.example"),
                    personal_email: None,
                }),
                Event::PasswordSet(PasswordSet {
                    user_id,
                    // The fold keeps a verifier sealed; its size is an argon2id PHC string's.
                    verifier: Sealed {
                        key_version: 1,
                        nonce: [7; 24],
                        ciphertext: vec![9; 113],
                    },
                    password_version: 1,
                    must_change: false,
                }),
            ]
        });
    let device = DeviceId(id(1));
    let logins = (0..).map(move |i: usize| {
        Event::DesktopLoginRecorded(DesktopLoginRecorded {
            device_id: device,
            username: format!("user{}", i % users),
            user_id: Some(ids[i % users]),
            method: DesktopLoginMethod::Password,
            outcome: AttemptOutcome::Succeeded,
            local_account: Some(LocalAccountAction::Takeover),
        })
    });
    [opened, enabled]
        .into_iter()
        .chain(directory)
        .chain(logins)
        .take(events)
}

async fn append(log: &RocksLog, stream: StreamId, events: impl Iterator<Item = Event>) {
    let now = chrono::Utc::now();
    let events: Vec<Event> = events.collect();
    for chunk in events.chunks(5_000) {
        let append = StreamAppend::new(stream, Expected::Any).events(chunk.iter().map(|event| {
            projections::codec::encode(event, uuid::Uuid::now_v7(), now, "bench").unwrap()
        }));
        log.commit(Commit::new().append(append)).await.unwrap();
    }
}

/// A cold fold as a command does it: from the snapshot if usable, then the rest of the stream.
async fn cold_fold(log: &RocksLog, tenant: TenantId) -> (History, Resumed, Duration) {
    let started = Instant::now();
    let mut history = History::new();
    let resumed = command::resume(log, tenant, &mut history).await;
    command::fold_from_log::<_, api::problem::Problem>(log, tenant, &mut history, |_| true)
        .await
        .unwrap();
    (history, resumed, started.elapsed())
}

/// A workstation login at another customer, as the writer beside a snapshot appends.
fn login() -> eventlog::NewEvent {
    let tenant = TenantId(uuid::Uuid::now_v7());
    let login = history(tenant, 1, 5).last().unwrap();
    assert!(matches!(login, Event::DesktopLoginRecorded(_)));
    projections::codec::encode(&login, uuid::Uuid::now_v7(), chrono::Utc::now(), "bench").unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = std::env::temp_dir().join(format!("idem-fold-bench-{}", uuid::Uuid::now_v7()));
    let log = Arc::new(RocksLog::open(dir.join("log")).unwrap());
    let tenant = TenantId(uuid::Uuid::now_v7());
    let stream = StreamId(tenant.0);
    let started = Instant::now();
    append(&log, stream, history(tenant, options.users, options.events)).await;
    println!(
        "a customer of {} users, {} events, written in {:.1} s",
        options.users,
        options.events,
        started.elapsed().as_secs_f64()
    );

    for round in 1..=3 {
        let (history, resumed, took) = cold_fold(&log, tenant).await;
        assert_eq!(resumed, Resumed::Start);
        println!(
            "fold from seq 1, round {round}:      {:>9.1} ms ({} events, {:.0} events/s)",
            ms(took),
            history.seq,
            history.seq as f64 / took.as_secs_f64()
        );
    }

    let (mut history, _, _) = cold_fold(&log, tenant).await;
    let mut copies = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let pending = history.take_snapshot(stream).unwrap();
        copies.push(ms(started.elapsed()));
        drop(pending);
    }
    println!(
        "snapshot: the state's copy, under the turn: {}",
        copies
            .iter()
            .map(|ms| format!("{ms:.2} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pending = history.take_snapshot(stream).unwrap();
    let started = Instant::now();
    let encoded = domain::snapshot::encode_state(&pending.state).unwrap();
    println!(
        "snapshot: its encoding alone:      {:>9.1} ms",
        ms(started.elapsed())
    );
    drop(encoded);
    // Written with another tenant's writer appending one event at a time beside it, then that
    // writer alone for as long.
    let stop = Arc::new(AtomicBool::new(false));
    let beside = tokio::spawn(writer(log.clone(), stop.clone(), login));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stored = snapshots::write(log.as_ref(), pending).await.unwrap();
    assert!(stored.written);
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let during = beside.await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let alone = tokio::spawn(writer(log.clone(), stop.clone(), login));
    tokio::time::sleep(Duration::from_millis(200) + took).await;
    stop.store(true, Ordering::Relaxed);
    let alone = alone.await.unwrap();
    println!(
        "another tenant's writer, around the write: {}",
        percentiles(during)
    );
    println!(
        "the same writer alone, as long:           {}",
        percentiles(alone)
    );
    let size = log.snapshot(stream).await.unwrap().unwrap().data.len();
    assert_eq!(size, stored.size);
    println!(
        "snapshot written (encode + commit, in its own task): {:>9.1} ms ({} KiB, {:.0} bytes per user)",
        ms(took),
        size / 1024,
        size as f64 / options.users as f64
    );
    let longest = usize::try_from(snapshots::interval(size)).unwrap() - 1;
    let mut written = options.events;
    for tail in [0, longest] {
        append(
            &log,
            stream,
            history_tail(tenant, options.users, written, tail),
        )
        .await;
        written += tail;
        let mut runs = Vec::new();
        for _ in 0..3 {
            let (_, resumed, took) = cold_fold(&log, tenant).await;
            assert_eq!(resumed, Resumed::Snapshot);
            runs.push(ms(took));
        }
        println!(
            "fold from the snapshot and {tail} events after it: {}",
            runs.iter()
                .map(|ms| format!("{ms:.1} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tail` more logins after the first `skip` events of the same history.
fn history_tail(
    tenant: TenantId,
    users: usize,
    skip: usize,
    tail: usize,
) -> impl Iterator<Item = Event> {
    history(tenant, users, skip + tail).skip(skip)
}
