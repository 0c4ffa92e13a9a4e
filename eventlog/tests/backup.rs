//! Online backups of the RocksDB log: the copy holds exactly what the source held when it was
//! taken, while commits go on, except the data keys, which a restore puts back from the live
//! key store (a key deleted meanwhile stays gone); bad sources and destinations are refused
//! untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventlog::testkit::{event, stream};
use eventlog::{
    Commit, Error, EventLog, Expected, RecordedEvent, Reservation, RocksLog, Snapshot,
    StreamAppend, StreamId, WrappedKey, blob_id, verify,
};

async fn everything(log: &RocksLog) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        // Positions skip a deleted stream's events: go on after the last one read.
        let from = all.last().map_or(1, |e| e.position + 1);
        let page = log.read_all(from, 1000).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[tokio::test]
async fn a_backup_opens_as_the_log_it_copied_without_what_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path().join("log")).unwrap();
    let (kept, gone) = (stream(), stream());
    let key = WrappedKey {
        version: 1,
        wrapped: b"wrapped key bytes".to_vec(),
    };
    let image = b"a branding image".to_vec();
    log.append(
        StreamAppend::new(kept, Expected::NoStream)
            .events((0..50).map(|i| event("Kept", format!("kept {i}"))))
            .reserve(Reservation::new("host", "acme"))
            .blob(image.clone())
            .key(key.clone()),
    )
    .await
    .unwrap();
    log.append(
        StreamAppend::new(gone, Expected::NoStream)
            .event(event("Gone", "secret of a deleted tenant"))
            .reserve(Reservation::new("host", "gone"))
            .key(key.clone()),
    )
    .await
    .unwrap();
    // A snapshot of each: the kept one travels with its stream, the other goes with it.
    let snapshot = |s: StreamId, at: RecordedEvent, data: &str| Snapshot {
        stream: s,
        seq: at.seq,
        hash: at.hash,
        data: data.as_bytes().to_vec(),
    };
    let kept_at_50 = log.read_stream(kept, 50, 1).await.unwrap().remove(0);
    let gone_at_1 = log.read_stream(gone, 1, 1).await.unwrap().remove(0);
    let kept_snapshot = snapshot(kept, kept_at_50, "kept folded");
    log.commit(
        Commit::new()
            .snapshot(kept_snapshot.clone())
            .snapshot(snapshot(
                gone,
                gone_at_1,
                "folded state of a deleted tenant",
            )),
    )
    .await
    .unwrap();
    log.commit(Commit::new().delete(gone)).await.unwrap();
    log.append(StreamAppend::new(kept, Expected::At(50)).event(event("Kept", "after")))
        .await
        .unwrap();

    let to = dir.path().join("backups").join("monday");
    let report = log.backup(&to).await.unwrap();
    assert_eq!(report.head, log.head_position());
    assert_eq!(report.events, 51);
    assert_eq!(report.keys_left_out, 1);
    let before = everything(&log).await;
    let key_store = log.data_key_store().await.unwrap();
    assert_eq!(key_store, vec![(kept, key.clone())]);
    assert_eq!(log.deleted_streams().await.unwrap(), vec![gone]);
    drop(log);

    // The backup holds no key, only which one it left out.
    for entry in walk(&to) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(key.wrapped.len()).any(|w| w == key.wrapped),
            "{} holds a wrapped data key",
            entry.display()
        );
    }

    let restored = dir.path().join("restored");
    let put_back = RocksLog::restore(&to, &restored, &key_store).unwrap();
    assert_eq!(put_back.head, report.head);
    assert_eq!((put_back.restored, put_back.missing), (1, Vec::new()));
    let backup = RocksLog::open(&to).unwrap();
    assert!(backup.data_keys(kept).await.unwrap().is_empty());
    assert_eq!(backup.keys_left_out().await.unwrap(), Some(vec![(kept, 1)]));
    drop(backup);
    let copy = RocksLog::open(&restored).unwrap();
    assert_eq!(copy.keys_left_out().await.unwrap(), None);
    assert_eq!(copy.head_position(), report.head);
    assert_eq!(
        everything(&copy).await,
        before,
        "every event, byte for byte"
    );
    assert!(verify(&copy, kept).await.unwrap().is_valid());
    assert_eq!(
        copy.reservation_owner(&Reservation::new("host", "acme"))
            .await
            .unwrap(),
        Some(kept)
    );
    assert_eq!(copy.blob(kept, blob_id(&image)).await.unwrap(), Some(image));
    assert_eq!(copy.data_keys(kept).await.unwrap(), vec![key]);
    assert_eq!(copy.snapshot(kept).await.unwrap(), Some(kept_snapshot));
    assert_eq!(copy.snapshot(gone).await.unwrap(), None);

    // The deleted stream stays deleted: no events, reservation or key, and no new writes.
    assert!(copy.is_deleted(gone).await.unwrap());
    assert_eq!(copy.deleted_streams().await.unwrap(), vec![gone]);
    assert!(copy.data_keys(gone).await.unwrap().is_empty());
    assert_eq!(
        copy.reservation_owner(&Reservation::new("host", "gone"))
            .await
            .unwrap(),
        None
    );
    let err = copy
        .append(StreamAppend::new(gone, Expected::Any).event(event("Gone", "again")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StreamDeleted { .. }), "{err}");
    // Writes go on from where the source stood.
    let next = copy
        .append(StreamAppend::new(kept, Expected::At(51)).event(event("Kept", "restored")))
        .await
        .unwrap();
    assert_eq!(next.position, report.head + 1);
    drop(copy);
    for parent in [to.parent().unwrap(), dir.path()] {
        assert!(
            !std::fs::read_dir(parent).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("partial")),
            "no partial copy is left in {}",
            parent.display()
        );
    }
    for text in [
        b"secret of a deleted tenant".as_slice(),
        b"folded state of a deleted tenant",
    ] {
        for entry in walk(&to) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes.windows(text.len()).any(|w| w == text),
                "{} holds the deleted stream's {}",
                entry.display(),
                String::from_utf8_lossy(text)
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_writers_commit_is_a_whole_prefix_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(RocksLog::open(dir.path().join("log")).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        writers.spawn(async move {
            let (a, b) = (stream(), stream());
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                // Each commit spans two streams: a copy holding one half would show.
                log.commit(
                    Commit::new()
                        .append(
                            StreamAppend::new(a, Expected::At(seq))
                                .events((0..3).map(|i| event("A", format!("{seq}.{i}")))),
                        )
                        .append(
                            StreamAppend::new(b, Expected::At(seq))
                                .events((0..3).map(|i| event("B", format!("{seq}.{i}")))),
                        ),
                )
                .await
                .unwrap();
                seq += 3;
            }
            (a, b, seq)
        });
    }
    // Let the writers get going, then take three backups while they write.
    while log.head_position() < 3_000 {
        tokio::task::yield_now().await;
    }
    let mut backups = Vec::new();
    for n in 0..3 {
        let to = dir.path().join(format!("backup-{n}"));
        let report = log.backup(&to).await.unwrap();
        backups.push((to, report));
    }
    stop.store(true, Ordering::Relaxed);
    let mut streams = Vec::new();
    while let Some(done) = writers.join_next().await {
        let (a, b, _) = done.unwrap();
        streams.extend([a, b]);
    }
    let source: HashMap<u64, RecordedEvent> = everything(&log)
        .await
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    assert!(backups.windows(2).all(|w| w[0].1.head <= w[1].1.head));
    assert!(
        backups[2].1.head < log.head_position(),
        "the writers went on"
    );

    for (to, report) in backups {
        let copy = RocksLog::open(&to).unwrap();
        let events = everything(&copy).await;
        assert_eq!(report.events, events.len() as u64);
        // Positions 1..=head, gap-free, each the source's event byte for byte.
        assert_eq!(
            events.iter().map(|e| e.position).collect::<Vec<_>>(),
            (1..=report.head).collect::<Vec<_>>()
        );
        for event in &events {
            assert_eq!(Some(event), source.get(&event.position));
        }
        let mut seqs = HashMap::new();
        for &s in &streams {
            assert!(verify(&copy, s).await.unwrap().is_valid());
            seqs.insert(s, copy.stream_head(s).await.unwrap().map_or(0, |h| h.seq));
        }
        // Both halves of every commit, or neither: paired streams stand at the same seq.
        for pair in streams.chunks(2) {
            assert_eq!(seqs[&pair[0]], seqs[&pair[1]], "a commit copied in half");
        }
    }
}

#[tokio::test]
async fn a_backup_is_refused_where_something_already_is() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path().join("log")).unwrap();
    log.append(StreamAppend::new(stream(), Expected::NoStream).event(event("T", "x")))
        .await
        .unwrap();

    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("notes.txt"), b"keep me").unwrap();
    let err = log.backup(&existing).await.unwrap_err();
    assert!(matches!(err, Error::BackupTarget { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(existing.join("notes.txt")).unwrap(),
        b"keep me"
    );
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 1);

    let in_the_way = dir.path().join(".tuesday.partial");
    std::fs::create_dir(&in_the_way).unwrap();
    let err = log.backup(dir.path().join("tuesday")).await.unwrap_err();
    assert!(err.to_string().contains("is in the way"), "{err}");
    assert!(in_the_way.exists() && !dir.path().join("tuesday").exists());

    // The log is unharmed and a backup to a new directory works.
    let report = log.backup(dir.path().join("wednesday")).await.unwrap();
    assert_eq!(report.events, 1);
}

#[tokio::test]
async fn a_key_deleted_after_a_backup_stays_gone_when_it_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path().join("log")).unwrap();
    let (kept, shredded) = (stream(), stream());
    let key = |version: u32, bytes: &str| WrappedKey {
        version,
        wrapped: bytes.as_bytes().to_vec(),
    };
    for (s, name) in [(kept, "kept"), (shredded, "shredded")] {
        log.append(
            StreamAppend::new(s, Expected::NoStream)
                .event(event("Opened", name))
                .key(key(1, &format!("{name} key v1"))),
        )
        .await
        .unwrap();
    }
    log.append(
        StreamAppend::new(kept, Expected::At(1))
            .event(event("Rotated", "kept"))
            .key(key(2, "kept key v2")),
    )
    .await
    .unwrap();
    let to = dir.path().join("backup");
    assert_eq!(log.backup(&to).await.unwrap().keys_left_out, 3);
    let key_store_then = log.data_key_store().await.unwrap();
    // After the backup: one stream deleted (its key with it), another key added.
    log.commit(Commit::new().delete(shredded)).await.unwrap();
    let later = stream();
    log.append(
        StreamAppend::new(later, Expected::NoStream)
            .event(event("Opened", "later"))
            .key(key(1, "later key")),
    )
    .await
    .unwrap();
    let key_store = log.data_key_store().await.unwrap();
    assert_eq!(key_store.len(), 3, "kept's two keys and later's");

    let into = dir.path().join("restored");
    let report = RocksLog::restore(&to, &into, &key_store).unwrap();
    assert_eq!(report.restored, 2);
    assert_eq!(report.missing, vec![(shredded, 1)]);
    let restored = RocksLog::open(&into).unwrap();
    assert_eq!(
        restored.data_keys(kept).await.unwrap(),
        vec![key(1, "kept key v1"), key(2, "kept key v2")]
    );
    // The deleted stream's events are back as the backup had them, its key is not.
    assert!(restored.data_keys(shredded).await.unwrap().is_empty());
    assert_eq!(
        restored.stream_head(shredded).await.unwrap().unwrap().seq,
        1
    );
    // A key of a stream the backup does not hold is not taken in.
    assert!(restored.data_keys(later).await.unwrap().is_empty());
    assert_eq!(restored.keys_left_out().await.unwrap(), None);
    drop(restored);

    // The backup itself is unchanged: it restores again, with every key this time.
    let again = RocksLog::restore(&to, dir.path().join("again"), &key_store_then).unwrap();
    assert_eq!((again.restored, again.missing), (3, Vec::new()));
    // Opened as a log, a backup is no longer one to restore from.
    let backup = RocksLog::open(&to).unwrap();
    assert_eq!(backup.keys_left_out().await.unwrap().unwrap().len(), 3);
    drop(backup);
    let err = RocksLog::restore(&to, dir.path().join("third"), &key_store).unwrap_err();
    assert!(err.to_string().contains("opened as a log"), "{err}");
}

#[tokio::test]
async fn a_log_keeps_its_identity_in_every_copy_and_no_other_log_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = RocksLog::open(dir.path().join("log")).unwrap();
    let id = log.log_id();
    let other = RocksLog::open(dir.path().join("other")).unwrap();
    assert_ne!(other.log_id(), id, "two new logs");
    drop(other);

    log.append(StreamAppend::new(stream(), Expected::NoStream).event(event("Opened", "a")))
        .await
        .unwrap();
    let backup = dir.path().join("backup");
    log.backup(&backup).await.unwrap();
    let key_store = log.data_key_store().await.unwrap();
    drop(log);
    let reopened = RocksLog::open(dir.path().join("log")).unwrap();
    assert_eq!(reopened.log_id(), id, "reopened");
    drop(reopened);

    let restored = dir.path().join("restored");
    RocksLog::restore(&backup, &restored, &key_store).unwrap();
    assert_eq!(RocksLog::open(&restored).unwrap().log_id(), id, "restored");
    assert_eq!(RocksLog::open(&backup).unwrap().log_id(), id, "the backup");
}

#[tokio::test]
async fn a_restore_is_refused_from_what_is_not_a_backup_and_into_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("log");
    let log = RocksLog::open(&source).unwrap();
    log.append(StreamAppend::new(stream(), Expected::NoStream).event(event("T", "x")))
        .await
        .unwrap();
    let backup = dir.path().join("backup");
    log.backup(&backup).await.unwrap();
    drop(log);

    let into = dir.path().join("into");
    for (from, why) in [
        (dir.path().join("nothing"), "not a directory"),
        // A log (with its journal directory) is not a backup.
        (source.clone(), "has a journal"),
    ] {
        let err = RocksLog::restore(&from, &into, &[]).unwrap_err();
        assert!(matches!(err, Error::NotABackup { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
        assert!(!into.exists());
    }
    // A log's files without the journal: opens, but records no keys left out.
    let files_only = dir.path().join("files-only");
    std::fs::create_dir(&files_only).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, files_only.join(path.file_name().unwrap())).unwrap();
        }
    }
    let err = RocksLog::restore(&files_only, &into, &[]).unwrap_err();
    assert!(err.to_string().contains("not a backup"), "{err}");
    assert!(!into.exists() && !dir.path().join(".into.partial").exists());

    std::fs::create_dir(&into).unwrap();
    std::fs::write(into.join("notes.txt"), b"keep me").unwrap();
    let err = RocksLog::restore(&backup, &into, &[]).unwrap_err();
    assert!(matches!(err, Error::RestoreTarget { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&into).unwrap().count(), 1);

    // The refusals changed nothing: the backup restores.
    let report = RocksLog::restore(&backup, dir.path().join("fresh"), &[]).unwrap();
    assert_eq!(report.head, 1);
}
