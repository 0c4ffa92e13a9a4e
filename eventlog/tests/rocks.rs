//! The RocksDB backend: the conformance suite, plus what only a real disk shows: reopening,
//! damage to stored bytes and files, and deleted data leaving the files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use eventlog::testkit::{event, stream};
use eventlog::{
    Commit, Error, EventLog, Expected, KeyRewrap, Reservation, RocksLog, RocksOptions, Snapshot,
    StreamAppend, StreamId, WrappedKey, verify,
};
use rocksdb::{DB, Options};

fn open_fresh() -> (RocksLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (RocksLog::open(dir.path()).unwrap(), dir)
}

eventlog::conformance_tests!(open_fresh());

const CFS: [&str; 8] = [
    "events",
    "streams",
    "reservations",
    "owned",
    "blobs",
    "keys",
    "snapshots",
    "meta",
];

/// Opens the log's database directly, as an attacker or a failing disk would touch it.
fn raw(path: &Path) -> DB {
    DB::open_cf(&Options::default(), path, CFS).unwrap()
}

/// The key and value of the event at `seq` of `stream`, in the `events` family.
fn stored_event(db: &DB, stream: StreamId, seq: u64) -> (Vec<u8>, Vec<u8>) {
    let index = db.cf_handle("streams").unwrap();
    let mut key = stream.0.as_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    let value = db.get_cf(index, &key).unwrap().unwrap();
    let position = u64::from_be_bytes(value[..8].try_into().unwrap());
    let mut event_key = position.to_be_bytes().to_vec();
    event_key.extend_from_slice(&key);
    let events = db.cf_handle("events").unwrap();
    let stored = db.get_cf(events, &event_key).unwrap().unwrap();
    (event_key, stored)
}

async fn log_with_events(dir: &Path, s: StreamId, n: usize) {
    let log = RocksLog::open(dir).unwrap();
    for i in 0..n {
        log.append(StreamAppend::new(s, Expected::Any).event(event("T", format!("event {i}"))))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_syncs() {
    let (log, _dir) = open_fresh();
    let log = std::sync::Arc::new(log);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let log = std::sync::Arc::clone(&log);
        tasks.spawn(async move {
            let s = stream();
            for seq in 0..20 {
                log.append(StreamAppend::new(s, Expected::At(seq)).event(event("T", "")))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let stats = log.write_stats();
    assert_eq!(
        (stats.commits, stats.events, stats.rejected),
        (1280, 1280, 0)
    );
    assert!(
        stats.syncs < stats.commits,
        "64 concurrent writers never shared a sync: {stats:?}"
    );
    // A refused commit is counted, and costs no sync.
    let before = log.write_stats();
    log.append(StreamAppend::new(stream(), Expected::At(3)).event(event("T", "")))
        .await
        .unwrap_err();
    let after = log.write_stats();
    assert_eq!(
        (after.rejected, after.syncs),
        (before.rejected + 1, before.syncs)
    );
}

#[tokio::test]
async fn reopening_keeps_everything_and_continues_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (stream(), stream());
    let before = {
        let log = RocksLog::open(dir.path()).unwrap();
        for s in [a, b, a] {
            log.append(
                StreamAppend::new(s, Expected::Any)
                    .event(event("T", "x"))
                    .reserve(Reservation::new(
                        "k",
                        eventlog::testkit::stream().to_string(),
                    )),
            )
            .await
            .unwrap();
        }
        log.read_all(0, 100).await.unwrap()
    };
    let log = RocksLog::open(dir.path()).unwrap();
    assert_eq!(log.head_position(), 3);
    assert_eq!(log.read_all(0, 100).await.unwrap(), before);
    let next = log
        .append(StreamAppend::new(a, Expected::At(2)).event(event("T", "y")))
        .await
        .unwrap();
    assert_eq!((next.events[0].seq, next.position), (3, 4));
    assert_eq!(next.events[0].prev_hash, before[2].hash);
    assert!(verify(&log, a).await.unwrap().is_valid());
}

#[tokio::test]
async fn a_rewrapped_key_stays_rewrapped_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    {
        let log = RocksLog::open(dir.path()).unwrap();
        log.append(
            StreamAppend::new(s, Expected::NoStream)
                .event(event("T", ""))
                .key(WrappedKey {
                    version: 1,
                    wrapped: vec![1; 48],
                }),
        )
        .await
        .unwrap();
        log.commit(Commit::new().rewrap(KeyRewrap {
            stream: s,
            version: 1,
            from: vec![1; 48],
            to: vec![2; 48],
        }))
        .await
        .unwrap();
    }
    // The journal replays the key's first put and its rewrap in order, or neither.
    let log = RocksLog::open(dir.path()).unwrap();
    assert_eq!(
        log.data_key_store().await.unwrap(),
        vec![(
            s,
            WrappedKey {
                version: 1,
                wrapped: vec![2; 48]
            }
        )]
    );
    assert_eq!(log.head_position(), 1);
}

/// A snapshot is written through the journal like everything else: it survives a reopen, and a
/// log made before snapshots existed (no `snapshots` family) opens and takes them.
#[tokio::test]
async fn snapshots_survive_reopening_and_come_to_logs_made_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (stream(), stream());
    let first = {
        let log = RocksLog::open(dir.path()).unwrap();
        let committed = log
            .append(StreamAppend::new(old, Expected::NoStream).event(event("T", "x")))
            .await
            .unwrap();
        committed.events[0].clone()
    };
    // What a log written before snapshots existed looks like.
    {
        let mut db = raw(dir.path());
        db.drop_cf("snapshots").unwrap();
    }
    let snapshot = Snapshot {
        stream: old,
        seq: 1,
        hash: first.hash,
        data: b"folded".to_vec(),
    };
    {
        let log = RocksLog::open(dir.path()).unwrap();
        assert_eq!(log.read_stream(old, 1, 10).await.unwrap(), vec![first]);
        assert_eq!(log.snapshot(old).await.unwrap(), None);
        log.commit(Commit::new().snapshot(snapshot.clone()))
            .await
            .unwrap();
        log.append(StreamAppend::new(new, Expected::NoStream).event(event("T", "y")))
            .await
            .unwrap();
    }
    let log = RocksLog::open(dir.path()).unwrap();
    assert_eq!(log.snapshot(old).await.unwrap(), Some(snapshot));
    assert_eq!(log.snapshot(new).await.unwrap(), None);
    assert_eq!(log.head_position(), 2);
}

#[tokio::test]
async fn positions_are_never_reused_after_deleting_the_newest_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (keep, gone) = (stream(), stream());
    {
        let log = RocksLog::open(dir.path()).unwrap();
        log.append(StreamAppend::new(keep, Expected::Any).event(event("T", "")))
            .await
            .unwrap();
        log.append(StreamAppend::new(gone, Expected::Any).events([event("T", ""), event("T", "")]))
            .await
            .unwrap();
        log.commit(Commit::new().delete(gone)).await.unwrap();
        assert_eq!(log.head_position(), 3);
    }
    let log = RocksLog::open(dir.path()).unwrap();
    assert_eq!(log.head_position(), 3);
    let next = log
        .append(StreamAppend::new(keep, Expected::Any).event(event("T", "")))
        .await
        .unwrap();
    assert_eq!(next.position, 4);
    let positions: Vec<_> = log
        .read_all(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions,
        vec![1, 4],
        "the reader skips the deleted stream's hole"
    );
    assert!(
        log.is_deleted(gone).await.unwrap(),
        "the tombstone survives a restart"
    );
}

/// Changes one stored event's bytes, reopens, and returns what reading and verifying say.
async fn tamper(
    seq: u64,
    change: impl FnOnce(&mut Vec<u8>),
) -> (StreamId, Error, eventlog::VerifyReport, Error) {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    log_with_events(dir.path(), s, 5).await;
    {
        let db = raw(dir.path());
        let (key, mut value) = stored_event(&db, s, seq);
        change(&mut value);
        db.put_cf(db.cf_handle("events").unwrap(), key, value)
            .unwrap();
    }
    let log = RocksLog::open(dir.path()).unwrap();
    let read = log.read_stream(s, 1, 100).await.unwrap_err();
    let report = verify(&log, s).await.unwrap();
    let scan = log.read_all(0, 100).await.unwrap_err();
    (s, read, report, scan)
}

#[tokio::test]
async fn a_flipped_byte_is_caught_on_read_and_by_verify() {
    // Byte 86 lies in the data ("event 2"); tests/encoding.rs shows that any byte would do.
    let (s, read, report, scan) = tamper(3, |v| v[86] ^= 0x01).await;
    for err in [&read, &scan] {
        let Error::Corrupt { at, reason } = err else {
            panic!("{err:?}")
        };
        assert_eq!((at.stream, at.seq), (Some(s), Some(3)), "names where");
        assert!(reason.contains("hash mismatch"), "{reason}");
        assert!(
            err.to_string().contains(&format!("stream {s}, seq 3")),
            "{err}"
        );
    }
    assert!(!report.is_valid());
    assert_eq!((report.events, report.head_seq), (2, 2));
    assert_eq!(report.first_broken.unwrap().seq, 3);
}

#[tokio::test]
async fn a_truncated_value_is_corrupt_not_a_panic() {
    let (s, read, report, _) = tamper(4, |v| v.truncate(v.len() / 2)).await;
    let Error::Corrupt { at, reason } = read else {
        panic!("{read:?}")
    };
    assert_eq!((at.stream, at.seq), (Some(s), Some(4)));
    assert!(reason.contains("truncated"), "{reason}");
    assert_eq!(report.first_broken.unwrap().seq, 4);
}

#[tokio::test]
async fn an_unknown_envelope_format_is_named() {
    let (s, read, report, scan) = tamper(1, |v| v[0] = 9).await;
    for err in [read, scan] {
        let Error::UnsupportedFormat { at, version } = err else {
            panic!("{err:?}")
        };
        assert_eq!((at.stream, at.seq, version), (Some(s), Some(1), 9));
    }
    assert_eq!(report.first_broken.unwrap().seq, 1);
}

#[tokio::test]
async fn a_rewritten_event_breaks_the_next_link() {
    // A forger rewrites event 2 and recomputes its own hash; the index and event 3 disagree.
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    log_with_events(dir.path(), s, 3).await;
    {
        let db = raw(dir.path());
        let (key, value) = stored_event(&db, s, 2);
        let mut forged = eventlog::encoding::decode(&value, Default::default()).unwrap();
        forged.data = b"forged".to_vec();
        let bytes = eventlog::encoding::seal(&mut forged);
        db.put_cf(db.cf_handle("events").unwrap(), &key, &bytes)
            .unwrap();
        // Even with the index rewritten too, event 3 still chains from the original.
        let mut index_key = s.0.as_bytes().to_vec();
        index_key.extend_from_slice(&2u64.to_be_bytes());
        let index_value = eventlog::encoding::keys::stream_value(forged.position, &forged.hash);
        db.put_cf(db.cf_handle("streams").unwrap(), index_key, index_value)
            .unwrap();
    }
    let log = RocksLog::open(dir.path()).unwrap();
    let report = verify(&log, s).await.unwrap();
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("prev_hash"), "{}", broken.reason);
}

#[tokio::test]
async fn a_missing_event_is_a_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    log_with_events(dir.path(), s, 4).await;
    {
        let db = raw(dir.path());
        let (key, _) = stored_event(&db, s, 2);
        db.delete_cf(db.cf_handle("events").unwrap(), key).unwrap();
    }
    let log = RocksLog::open(dir.path()).unwrap();
    let report = verify(&log, s).await.unwrap();
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.seq, 2);
    assert!(
        broken.reason.contains("not in the log"),
        "{}",
        broken.reason
    );
}

/// Every file under `dir`, the journal's segments included.
fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .flat_map(|p| if p.is_dir() { files(&p) } else { vec![p] })
        .collect()
}

#[tokio::test]
async fn a_truncated_table_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream();
    {
        let log = RocksLog::open(dir.path()).unwrap();
        for i in 0..200 {
            log.append(StreamAppend::new(s, Expected::Any).event(event("T", vec![i as u8; 500])))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
    }
    let table = files(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&table).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Either opening or reading must fail, with a message; never a panic, never a short read.
    let outcome = match RocksLog::open(dir.path()) {
        Err(e) => Err(e),
        Ok(log) => log.read_all(0, usize::MAX).await.map(|events| events.len()),
    };
    let err = outcome.expect_err("a truncated table file must not read as a shorter log");
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert!(!err.to_string().is_empty());
}

#[tokio::test]
async fn deleted_data_leaves_the_files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (keep, gone) = (stream(), stream());
    let marker = b"billy-personal-email@example.test";
    let log = RocksLog::open(dir.path()).unwrap();
    for i in 0..50 {
        let s = if i % 2 == 0 { keep } else { gone };
        let data = if s == gone {
            marker.to_vec()
        } else {
            b"kept".to_vec()
        };
        log.append(StreamAppend::new(s, Expected::Any).event(event("T", data)))
            .await
            .unwrap();
    }
    log.append(
        StreamAppend::new(gone, Expected::Any)
            .event(event("T", ""))
            .blob(marker.repeat(3))
            .reserve(Reservation::new(
                "email",
                String::from_utf8(marker.to_vec()).unwrap(),
            )),
    )
    .await
    .unwrap();
    let head = log.read_stream(gone, 26, 1).await.unwrap().remove(0);
    log.commit(Commit::new().snapshot(Snapshot {
        stream: gone,
        seq: head.seq,
        hash: head.hash,
        data: marker.repeat(5),
    }))
    .await
    .unwrap();
    log.flush().await.unwrap();
    assert!(
        files(dir.path())
            .iter()
            .any(|f| contains(f, &marker.repeat(5))),
        "the marker is on disk before deletion"
    );

    log.commit(Commit::new().delete(gone)).await.unwrap();
    log.settle().await.unwrap();
    log.flush().await.unwrap();
    log.settle().await.unwrap();
    // Checked while the log is open: closing retires the whole journal anyway.
    assert_no_file_holds(dir.path(), marker);
    drop(log);
    let log = RocksLog::open(dir.path()).unwrap();
    assert_eq!(log.read_all(0, 100).await.unwrap().len(), 25);
    assert!(verify(&log, keep).await.unwrap().is_valid());
}

fn assert_no_file_holds(dir: &Path, marker: &[u8]) {
    let holding: Vec<_> = files(dir)
        .into_iter()
        .filter(|f| contains(f, marker))
        .collect();
    assert!(
        holding.is_empty(),
        "deleted data still on disk in {holding:?}"
    );
}

/// Whether the file holds `needle`. Checked while the log is open, so RocksDB may delete a
/// table file between listing and reading: a file that is gone holds nothing.
fn contains(file: &Path, needle: &[u8]) -> bool {
    match std::fs::read(file) {
        Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("reading {}: {e}", file.display()),
    }
}

/// RocksDB checksums every WAL record and table block with CRC32C. Built for the default
/// x86-64 target (no SSE4.2) it computes them in software; `.cargo/config.toml` targets
/// x86-64-v2 so that librocksdb-sys builds the hardware path.
#[cfg(target_arch = "x86_64")]
#[test]
fn rocksdb_computes_crc32c_in_hardware() {
    let (_log, dir) = open_fresh();
    let info = std::fs::read_to_string(dir.path().join("LOG")).unwrap();
    let line = info
        .lines()
        .find(|l| l.contains("Fast CRC32 supported"))
        .expect("RocksDB's LOG names its CRC32C implementation");
    assert!(
        line.contains("Supported on x86"),
        "{line} (a RUSTFLAGS environment variable replaces .cargo/config.toml's target flags)"
    );
}

/// A stream's reservations and blobs sit under it as `stream ‖ digest`; one digest in 256
/// starts with 0xff. Those must go with the stream like any other (a range that ended at
/// `stream ‖ 0xff` once left them behind).
#[tokio::test]
async fn deletion_takes_keys_whose_digest_starts_with_0xff() {
    let (log, _dir) = open_fresh();
    let s = stream();
    let reservation = (0..)
        .map(|i| Reservation::new("username", format!("user{i}")))
        .find(|r| eventlog::encoding::keys::reservation(r)[0] == 0xff)
        .unwrap();
    let blob = (0u32..)
        .map(|i| i.to_be_bytes().to_vec())
        .find(|b| eventlog::blob_id(b).0[0] == 0xff)
        .unwrap();
    log.append(
        StreamAppend::new(s, Expected::NoStream)
            .event(event("T", ""))
            .reserve(reservation.clone())
            .blob(blob.clone()),
    )
    .await
    .unwrap();
    assert_eq!(log.reservation_owner(&reservation).await.unwrap(), Some(s));
    log.commit(Commit::new().delete(s)).await.unwrap();
    assert_eq!(log.reservation_owner(&reservation).await.unwrap(), None);
    assert_eq!(log.blob(s, eventlog::blob_id(&blob)).await.unwrap(), None);
    // The name is free again for another stream.
    log.append(
        StreamAppend::new(stream(), Expected::NoStream)
            .event(event("T", ""))
            .reserve(reservation),
    )
    .await
    .unwrap();
}

/// A deletion reads the stream's index before it is queued (so the committer does not walk a
/// large stream while writers wait): events appended to the stream after that read, up to
/// the deletion's commit, must be deleted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_takes_events_appended_while_it_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(RocksLog::open(dir.path()).unwrap());
    let s = stream();
    // Large enough that reading its index takes a while (tens of ms).
    let mut written = 0u64;
    while written < 100_000 {
        let n = eventlog::MAX_COMMIT_EVENTS as u64;
        log.append(
            StreamAppend::new(s, Expected::At(written))
                .events((0..n).map(|i| event("T", format!("{}", written + i)))),
        )
        .await
        .unwrap();
        written += n;
    }
    // Another writer keeps appending to the stream, one event at a time, until it is refused.
    let (started, running) = tokio::sync::oneshot::channel();
    let appender = tokio::spawn({
        let log = log.clone();
        async move {
            let mut started = Some(started);
            let mut acknowledged = Vec::new();
            loop {
                match log
                    .append(StreamAppend::new(s, Expected::Any).event(event("T", "late")))
                    .await
                {
                    Ok(_) => acknowledged.push(std::time::Instant::now()),
                    Err(Error::StreamDeleted { .. }) => return acknowledged,
                    Err(e) => panic!("{e}"),
                }
                if let Some(started) = started.take() {
                    started.send(()).unwrap();
                }
            }
        }
    });
    running.await.unwrap();
    let asked = std::time::Instant::now();
    log.commit(Commit::new().delete(s)).await.unwrap();
    let acknowledged = appender.await.unwrap();
    // The window this test is about was used: appends were acknowledged after the deletion
    // was asked for (and so after its index read began).
    let late = acknowledged.iter().filter(|at| **at > asked).count();
    assert!(late > 0, "no append landed while the deletion was queued");
    assert!(log.read_stream(s, 1, 10).await.unwrap().is_empty());
    drop(log);

    // Nothing of the stream is left in the events or the index, on disk.
    let db = raw(dir.path());
    for cf in ["events", "streams"] {
        let mut left = 0;
        for item in db.iterator_cf(db.cf_handle(cf).unwrap(), rocksdb::IteratorMode::Start) {
            let (key, _) = item.unwrap();
            let owner = if cf == "events" {
                &key[8..24]
            } else {
                &key[..16]
            };
            left += usize::from(owner == s.0.as_bytes());
        }
        assert_eq!(left, 0, "{left} keys of the deleted stream left in {cf}");
    }
}

#[tokio::test]
async fn a_cleanly_closed_log_leaves_nothing_in_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let s = stream();
    let marker = b"written-before-the-log-was-closed";
    {
        let log = RocksLog::open(dir.path()).unwrap();
        for _ in 0..20 {
            log.append(StreamAppend::new(s, Expected::Any).event(event("T", marker.to_vec())))
                .await
                .unwrap();
        }
        assert!(
            files(&journal).iter().any(|f| contains(f, marker)),
            "appends are written to the journal"
        );
    }
    for file in files(&journal) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            bytes.iter().all(|b| *b == 0),
            "{} still holds data after a clean close",
            file.display()
        );
    }
    let log = RocksLog::open(dir.path()).unwrap();
    assert_eq!(log.read_stream(s, 1, 100).await.unwrap().len(), 20);
    assert!(verify(&log, s).await.unwrap().is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_journal_segments_lose_nothing_and_do_not_pile_up() {
    small_journal_segments(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_journal_segments_written_without_o_direct_lose_nothing_either() {
    small_journal_segments(false).await;
}

/// Dozens of rotations through 4 KiB segments, with direct journal writes or without.
async fn small_journal_segments(direct: bool) {
    let dir = tempfile::tempdir().unwrap();
    let options = || RocksOptions {
        journal_segment_bytes: 4096,
        journal_direct_io: direct,
        ..RocksOptions::default()
    };
    let streams: Vec<_> = (0..5).map(|_| stream()).collect();
    {
        let log = RocksLog::open_with(dir.path(), options()).unwrap();
        for i in 0..100 {
            for s in &streams {
                let data = format!("event {i} of {s}");
                log.append(StreamAppend::new(*s, Expected::At(i)).event(event("T", data)))
                    .await
                    .unwrap();
            }
        }
        log.settle().await.unwrap();
        // ~150 KB went through 4 KiB segments: dozens of rotations, yet only the active
        // segment and the spares remain.
        let segments = files(&dir.path().join("journal")).len();
        assert!(
            segments <= 3,
            "{segments} segment files: retired ones pile up"
        );
    }
    let log = RocksLog::open_with(dir.path(), options()).unwrap();
    assert_eq!(log.read_all(0, 1000).await.unwrap().len(), 500);
    for s in &streams {
        let events = log.read_stream(*s, 1, 1000).await.unwrap();
        assert_eq!(events.len(), 100);
        assert_eq!(events[99].data, format!("event 99 of {s}").into_bytes());
        assert!(verify(&log, *s).await.unwrap().is_valid());
    }
}

#[tokio::test]
async fn deleted_data_leaves_reused_journal_segments() {
    // 4 KiB segments: the marker passes through dozens of segments, and the spares reused
    // afterwards still hold it past what they were rewritten with, until the deletion.
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions {
        journal_segment_bytes: 4096,
        ..RocksOptions::default()
    };
    let (keep, gone) = (stream(), stream());
    let marker = b"billy-personal-email@example.test";
    let log = RocksLog::open_with(dir.path(), options).unwrap();
    for i in 0..300 {
        let (s, data) = if i % 3 == 0 {
            (gone, marker.to_vec())
        } else {
            (keep, b"kept".to_vec())
        };
        log.append(StreamAppend::new(s, Expected::Any).event(event("T", data)))
            .await
            .unwrap();
    }
    log.settle().await.unwrap();
    assert!(
        files(&dir.path().join("journal"))
            .iter()
            .any(|f| contains(f, marker)),
        "the marker is in the journal before deletion"
    );
    log.commit(Commit::new().delete(gone)).await.unwrap();
    // Writing on reuses a spare for a few records: it must not hold the marker past them.
    log.settle().await.unwrap();
    for _ in 0..3 {
        log.append(StreamAppend::new(keep, Expected::Any).event(event("T", "after")))
            .await
            .unwrap();
    }
    log.settle().await.unwrap();
    log.flush().await.unwrap();
    log.settle().await.unwrap();
    assert_no_file_holds(dir.path(), marker);
    drop(log);
}

#[tokio::test]
async fn a_failed_journal_write_stops_writes_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let options = || RocksOptions {
        journal_segment_bytes: 4096,
        ..RocksOptions::default()
    };
    let s = stream();
    let log = RocksLog::open_with(dir.path(), options()).unwrap();
    log.append(StreamAppend::new(s, Expected::NoStream).event(event("T", "kept")))
        .await
        .unwrap();
    assert_eq!(log.write_failure(), None);
    // The maintenance thread may still be preparing a spare segment in the journal's
    // directory (a chore of the append above): let it finish, or the removal below races it.
    log.settle().await.unwrap();
    // The journal's directory gives way under it: the next segment cannot be opened or made.
    let journal = dir.path().join("journal");
    std::fs::remove_dir_all(&journal).unwrap();
    std::fs::write(&journal, b"not a directory").unwrap();
    let head = log.head_position();
    let mut seq = 1;
    let failure = loop {
        // 3 KB events: a 4 KiB segment takes one, the next needs another segment.
        let data = "x".repeat(3000);
        match log
            .append(StreamAppend::new(s, Expected::At(seq)).event(event("T", data)))
            .await
        {
            Ok(_) => seq += 1,
            Err(error) => break error,
        }
        assert!(seq < 10, "a new segment was needed long ago");
    };
    assert!(matches!(failure, Error::Storage { .. }), "{failure:?}");
    let reason = log.write_failure().expect("the log says writes stopped");
    assert!(reason.contains("journal segment"), "{reason}");
    // Every later commit fails, on any stream; reads go on; the head stays where it was.
    let other = stream();
    let refused = log
        .append(StreamAppend::new(other, Expected::NoStream).event(event("T", "refused")))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Storage { .. }), "{refused:?}");
    assert_eq!(log.head_position(), head + seq - 1);
    let events = log.read_stream(s, 1, 100).await.unwrap();
    assert_eq!(events.len() as u64, seq);
    assert_eq!(events[0].data, b"kept");
    assert!(log.read_stream(other, 1, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_key_store_is_listed_by_stream_then_version_and_loses_a_deleted_stream() {
    let (log, _dir) = open_fresh();
    assert_eq!(log.data_key_store().await.unwrap(), Vec::new());
    let (mut a, mut b) = (stream(), stream());
    if b.0 < a.0 {
        std::mem::swap(&mut a, &mut b);
    }
    for (s, versions) in [(b, [1, 2]), (a, [3, 2])] {
        let mut append = StreamAppend::new(s, Expected::NoStream).event(event("KeyMade", ""));
        for version in versions {
            append = append.key(eventlog::WrappedKey {
                version,
                wrapped: vec![version as u8; 48],
            });
        }
        log.append(append).await.unwrap();
    }
    let listed = |store: Vec<(StreamId, eventlog::WrappedKey)>| {
        store
            .into_iter()
            .map(|(s, key)| (s, key.version, key.wrapped[0]))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(log.data_key_store().await.unwrap()),
        vec![(a, 2, 2), (a, 3, 3), (b, 1, 1), (b, 2, 2)]
    );
    log.commit(Commit::new().delete(a)).await.unwrap();
    assert_eq!(
        listed(log.data_key_store().await.unwrap()),
        vec![(b, 1, 1), (b, 2, 2)]
    );
}

#[tokio::test]
async fn streams_lists_every_stream_with_events_and_deleted_streams_the_others() {
    let (log, _dir) = open_fresh();
    assert!(log.streams().await.unwrap().is_empty());
    let mut expected: Vec<StreamId> = Vec::new();
    for i in 0..20u64 {
        let s = stream();
        log.append(
            StreamAppend::new(s, Expected::NoStream).events((0..i + 1).map(|_| event("T", ""))),
        )
        .await
        .unwrap();
        expected.push(s);
    }
    // The extremes of the id space, where the next prefix overflows.
    for edge in [StreamId(uuid::Uuid::nil()), StreamId(uuid::Uuid::max())] {
        log.append(StreamAppend::new(edge, Expected::NoStream).event(event("T", "")))
            .await
            .unwrap();
        expected.push(edge);
    }
    assert!(log.deleted_streams().await.unwrap().is_empty());
    let mut deleted = vec![expected.remove(3), expected.remove(7)];
    // The last id is where the tombstones' range ends.
    deleted.push(expected.pop().unwrap());
    for gone in &deleted {
        log.commit(Commit::new().delete(*gone)).await.unwrap();
    }
    expected.sort_by_key(|s| s.0);
    deleted.sort_by_key(|s| s.0);
    assert_eq!(log.streams().await.unwrap(), expected);
    assert_eq!(log.deleted_streams().await.unwrap(), deleted);
}
