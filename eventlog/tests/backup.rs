//! Online backups of the RocksDB log: the copy opens as a log holding exactly what the source
//! held when it was taken, while commits go on, and a bad destination is refused untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eventlog::testkit::{event, stream};
use eventlog::{
    Commit, Error, EventLog, Expected, RecordedEvent, Reservation, RocksLog, StreamAppend,
    WrappedKey, blob_id, verify,
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
    log.commit(Commit::new().delete(gone)).await.unwrap();
    log.append(StreamAppend::new(kept, Expected::At(50)).event(event("Kept", "after")))
        .await
        .unwrap();

    let to = dir.path().join("backups").join("monday");
    let report = log.backup(&to).await.unwrap();
    assert_eq!(report.head, log.head_position());
    assert_eq!(report.events, 51);
    let before = everything(&log).await;
    drop(log);

    let copy = RocksLog::open(&to).unwrap();
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

    // The deleted stream stays deleted: no events, reservation or key, and no new writes.
    assert!(copy.is_deleted(gone).await.unwrap());
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
    assert!(
        !std::fs::read_dir(to.parent().unwrap()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial")),
        "no partial copy is left beside the backup"
    );
    let text = b"secret of a deleted tenant";
    for entry in walk(&to) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(text.len()).any(|w| w == text),
            "{} holds the deleted stream's event",
            entry.display()
        );
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
    assert!(err.to_string().contains("interrupted backup"), "{err}");
    assert!(in_the_way.exists() && !dir.path().join("tuesday").exists());

    // The log is unharmed and a backup to a new directory works.
    let report = log.backup(dir.path().join("wednesday")).await.unwrap();
    assert_eq!(report.events, 1);
}
