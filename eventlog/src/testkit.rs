//! The conformance suite: what every [`EventLog`] implementation must do, written once against
//! the trait. A backend's tests instantiate it with [`conformance_tests!`](crate::conformance_tests),
//! passing an expression that opens a fresh, empty log (and a guard that keeps its storage).
//!
//! This is test code compiled behind the `testkit` feature, so it asserts by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::{
    Commit, Error, EventLog, Expected, KeyRewrap, NewEvent, RecordedEvent, Reservation, Snapshot,
    StreamAppend, StreamId, WrappedKey, ZERO_HASH, blob_id, verify,
};

/// Instantiates every conformance test for a backend. `$open` is an expression evaluated once
/// per test, giving `(log, guard)`; the guard lives until the test ends.
#[macro_export]
macro_rules! conformance_tests {
    ($open:expr) => {
        $crate::conformance_tests!(@each $open;
            append_assigns_gap_free_seq_and_position,
            recorded_events_keep_every_field,
            events_chain_by_hash,
            expectations_guard_appends,
            multi_stream_commit_is_all_or_nothing,
            reservations_are_unique,
            reservations_conflict_within_one_commit,
            invalid_commits_write_nothing,
            read_all_pages_in_position_order,
            subscribers_learn_of_commits,
            deleted_stream_leaves_nothing,
            blobs_and_data_keys,
            rewrapping_data_keys_compares_and_swaps,
            snapshots_name_a_stored_event_and_only_move_forward,
            concurrent_appends_to_one_stream,
            concurrent_appends_to_many_streams,
            published_heads_are_readable_under_concurrent_writers
        );
    };
    (@each $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (log, _guard) = $open;
                $crate::testkit::$name(::std::sync::Arc::new(log)).await;
            }
        )*
    };
}

/// A fixed instant with sub-second precision, to prove nanoseconds survive.
pub fn instant() -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_000_000, 123_456_789).unwrap()
}

/// An event of `event_type` with `data`, a fresh v7 id and [`instant`].
pub fn event(event_type: &str, data: impl Into<Vec<u8>>) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        occurred_at: instant(),
        actor: "user:tester".into(),
        data: data.into(),
    }
}

pub fn stream() -> StreamId {
    StreamId(Uuid::now_v7())
}

async fn append_one<L: EventLog>(log: &L, s: StreamId, expected: Expected) -> RecordedEvent {
    let committed = log
        .append(StreamAppend::new(s, expected).event(event("Tested", "x")))
        .await
        .unwrap();
    committed.events.into_iter().next().unwrap()
}

async fn all_events<L: EventLog>(log: &L) -> Vec<RecordedEvent> {
    log.read_all(0, usize::MAX).await.unwrap()
}

pub async fn append_assigns_gap_free_seq_and_position<L: EventLog>(log: Arc<L>) {
    assert_eq!(log.head_position(), 0);
    let (a, b) = (stream(), stream());
    let mut positions = Vec::new();
    for (i, s) in [a, b, a, a, b].into_iter().enumerate() {
        let e = append_one(&*log, s, Expected::Any).await;
        assert_eq!(e.position, i as u64 + 1);
        positions.push((s, e.seq));
    }
    assert_eq!(
        positions,
        vec![(a, 1), (b, 1), (a, 2), (a, 3), (b, 2)],
        "seq counts per stream"
    );
    let batch = log
        .append(StreamAppend::new(b, Expected::At(2)).events((0..3).map(|_| event("T", ""))))
        .await
        .unwrap();
    let seqs: Vec<_> = batch.events.iter().map(|e| (e.seq, e.position)).collect();
    assert_eq!(seqs, vec![(3, 6), (4, 7), (5, 8)]);
    assert_eq!(batch.position, 8);
    assert_eq!(log.head_position(), 8);
    let head = log.stream_head(b).await.unwrap().unwrap();
    assert_eq!((head.seq, head.position), (5, 8));
    assert_eq!(head.hash, batch.events[2].hash);
    assert!(log.stream_head(stream()).await.unwrap().is_none());
}

pub async fn recorded_events_keep_every_field<L: EventLog>(log: Arc<L>) {
    let s = stream();
    let inputs = vec![
        NewEvent {
            schema_version: 7,
            actor: "opérateur ✓".into(),
            ..event("TenantCreated", "{\"name\":\"acme\"}")
        },
        NewEvent {
            occurred_at: Utc.timestamp_opt(-1, 999_999_999).unwrap(),
            actor: String::new(),
            ..event("Empty", Vec::new())
        },
        event(&"T".repeat(255), vec![0u8, 255, 10, 13]),
    ];
    let committed = log
        .append(StreamAppend::new(s, Expected::NoStream).events(inputs.clone()))
        .await
        .unwrap();
    let read = log.read_stream(s, 1, 10).await.unwrap();
    assert_eq!(
        read, committed.events,
        "read back equals what the commit returned"
    );
    for (input, recorded) in inputs.iter().zip(&read) {
        assert_eq!(recorded.id, input.id);
        assert_eq!(recorded.stream, s);
        assert_eq!(recorded.event_type, input.event_type);
        assert_eq!(recorded.schema_version, input.schema_version);
        assert_eq!(recorded.occurred_at, input.occurred_at);
        assert_eq!(recorded.actor, input.actor);
        assert_eq!(recorded.data, input.data);
    }
    assert_eq!(log.read_stream(s, 2, 1).await.unwrap(), read[1..2].to_vec());
    assert!(log.read_stream(s, 4, 10).await.unwrap().is_empty());
}

pub async fn events_chain_by_hash<L: EventLog>(log: Arc<L>) {
    let s = stream();
    for _ in 0..5 {
        append_one(&*log, s, Expected::Any).await;
    }
    let events = log.read_stream(s, 1, 100).await.unwrap();
    assert_eq!(events[0].prev_hash, ZERO_HASH);
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_ne!(pair[1].hash, pair[0].hash);
    }
    let report = verify(&*log, s).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.events, report.head_seq), (5, 5));
    assert_eq!(report.head_hash, events[4].hash);
    let empty = verify(&*log, stream()).await.unwrap();
    assert!(empty.is_valid());
    assert_eq!((empty.events, empty.head_hash), (0, ZERO_HASH));
}

pub async fn expectations_guard_appends<L: EventLog>(log: Arc<L>) {
    let s = stream();
    append_one(&*log, s, Expected::NoStream).await;
    let conflict = log
        .append(StreamAppend::new(s, Expected::NoStream).event(event("T", "")))
        .await
        .unwrap_err();
    assert!(conflict.is_conflict());
    assert!(
        matches!(conflict, Error::WrongExpectedSeq { stream, current: 1, expected: Expected::NoStream } if stream == s),
        "{conflict:?}"
    );
    append_one(&*log, s, Expected::At(1)).await;
    for wrong in [0, 1, 3, u64::MAX] {
        let err = log
            .append(StreamAppend::new(s, Expected::At(wrong)).event(event("T", "")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::WrongExpectedSeq { current: 2, .. }),
            "{err:?}"
        );
    }
    append_one(&*log, s, Expected::Any).await;
    let other = stream();
    let err = log
        .append(StreamAppend::new(other, Expected::At(1)).event(event("T", "")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedSeq { current: 0, .. }));
    assert_eq!(log.head_position(), 3, "failed appends wrote nothing");
    assert_eq!(log.read_stream(s, 1, 10).await.unwrap().len(), 3);
    assert!(log.stream_head(other).await.unwrap().is_none());
}

pub async fn multi_stream_commit_is_all_or_nothing<L: EventLog>(log: Arc<L>) {
    let (msp, customer) = (stream(), stream());
    append_one(&*log, msp, Expected::NoStream).await;
    let both = log
        .commit(
            Commit::new()
                .append(StreamAppend::new(msp, Expected::At(1)).event(event("CustomerCreated", "")))
                .append(
                    StreamAppend::new(customer, Expected::NoStream)
                        .event(event("TenantCreated", ""))
                        .reserve(Reservation::new("host", "c1-msp")),
                ),
        )
        .await
        .unwrap();
    let placed: Vec<_> = both
        .events
        .iter()
        .map(|e| (e.stream, e.seq, e.position))
        .collect();
    assert_eq!(placed, vec![(msp, 2, 2), (customer, 1, 3)]);

    // The second append's expectation fails: the first must not land either.
    let failed = log
        .commit(
            Commit::new()
                .append(StreamAppend::new(msp, Expected::At(2)).event(event("CustomerCreated", "")))
                .append(
                    StreamAppend::new(stream(), Expected::At(5))
                        .event(event("TenantCreated", ""))
                        .reserve(Reservation::new("host", "c2-msp")),
                ),
        )
        .await
        .unwrap_err();
    assert!(failed.is_conflict());
    assert_eq!(log.stream_head(msp).await.unwrap().unwrap().seq, 2);
    assert_eq!(log.head_position(), 3);
    assert_eq!(
        log.reservation_owner(&Reservation::new("host", "c2-msp"))
            .await
            .unwrap(),
        None,
        "the failed commit's reservation was not taken"
    );
}

pub async fn reservations_are_unique<L: EventLog>(log: Arc<L>) {
    let (a, b) = (stream(), stream());
    let label = Reservation::new("host", "acme");
    log.append(
        StreamAppend::new(a, Expected::NoStream)
            .event(event("T", ""))
            .reserve(label.clone()),
    )
    .await
    .unwrap();
    assert_eq!(log.reservation_owner(&label).await.unwrap(), Some(a));

    let taken = log
        .append(
            StreamAppend::new(b, Expected::NoStream)
                .event(event("T", ""))
                .reserve(label.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(&taken, Error::ReservationTaken { reservation } if *reservation == label));
    assert!(
        log.stream_head(b).await.unwrap().is_none(),
        "the loser's event was not written"
    );
    // The same stream cannot take its own key twice either.
    let again = log
        .append(
            StreamAppend::new(a, Expected::Any)
                .event(event("T", ""))
                .reserve(label.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(again, Error::ReservationTaken { .. }));

    // Scopes keep equal keys apart; the length prefix keeps ("ab","c") from ("a","bc").
    for r in [
        Reservation::new("username:t1", "acme"),
        Reservation::new("ho", "stacme"),
    ] {
        log.append(
            StreamAppend::new(b, Expected::Any)
                .event(event("T", ""))
                .reserve(r),
        )
        .await
        .unwrap();
    }

    let not_held = log
        .append(
            StreamAppend::new(b, Expected::Any)
                .event(event("T", ""))
                .release(label.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(not_held, Error::ReservationNotHeld { stream, .. } if stream == b));

    // Move a key within one append: release the old, reserve the new.
    let renamed = Reservation::new("host", "acme-2");
    log.append(
        StreamAppend::new(a, Expected::Any)
            .event(event("Renamed", ""))
            .release(label.clone())
            .reserve(renamed.clone()),
    )
    .await
    .unwrap();
    assert_eq!(log.reservation_owner(&label).await.unwrap(), None);
    assert_eq!(log.reservation_owner(&renamed).await.unwrap(), Some(a));
    log.append(
        StreamAppend::new(b, Expected::Any)
            .event(event("T", ""))
            .reserve(label.clone()),
    )
    .await
    .unwrap();
    assert_eq!(log.reservation_owner(&label).await.unwrap(), Some(b));
}

pub async fn reservations_conflict_within_one_commit<L: EventLog>(log: Arc<L>) {
    let key = Reservation::new("host", "same");
    let (a, b) = (stream(), stream());
    let err = log
        .commit(
            Commit::new()
                .append(
                    StreamAppend::new(a, Expected::Any)
                        .event(event("T", ""))
                        .reserve(key.clone()),
                )
                .append(
                    StreamAppend::new(b, Expected::Any)
                        .event(event("T", ""))
                        .reserve(key.clone()),
                ),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReservationTaken { .. }), "{err:?}");
    assert_eq!(log.reservation_owner(&key).await.unwrap(), None);
    assert_eq!(log.head_position(), 0);
}

pub async fn invalid_commits_write_nothing<L: EventLog>(log: Arc<L>) {
    let s = stream();
    append_one(&*log, s, Expected::Any).await;
    let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
    let big = vec![0u8; crate::MAX_EVENT_DATA + 1];
    let cases: Vec<(&str, Commit)> = vec![
        ("empty commit", Commit::new()),
        (
            "append without events",
            StreamAppend::new(s, Expected::Any).into(),
        ),
        (
            "empty event type",
            StreamAppend::new(s, Expected::Any)
                .event(event("", ""))
                .into(),
        ),
        (
            "event type too long",
            StreamAppend::new(s, Expected::Any)
                .event(event(&"x".repeat(256), ""))
                .into(),
        ),
        (
            "actor too long",
            StreamAppend::new(s, Expected::Any)
                .event(NewEvent {
                    actor: "a".repeat(1025),
                    ..event("T", "")
                })
                .into(),
        ),
        (
            "data too large",
            StreamAppend::new(s, Expected::Any)
                .event(event("T", big))
                .into(),
        ),
        (
            "leap second",
            StreamAppend::new(s, Expected::Any)
                .event(NewEvent {
                    occurred_at: leap,
                    ..event("T", "")
                })
                .into(),
        ),
        (
            "too many events",
            StreamAppend::new(s, Expected::Any)
                .events((0..=crate::MAX_COMMIT_EVENTS).map(|_| event("T", "")))
                .into(),
        ),
        (
            "empty reservation key",
            StreamAppend::new(s, Expected::Any)
                .event(event("T", ""))
                .reserve(Reservation::new("host", ""))
                .into(),
        ),
        (
            "empty reservation scope",
            StreamAppend::new(s, Expected::Any)
                .event(event("T", ""))
                .reserve(Reservation::new("", "k"))
                .into(),
        ),
        (
            "same reservation twice",
            StreamAppend::new(s, Expected::Any)
                .event(event("T", ""))
                .reserve(Reservation::new("host", "k"))
                .reserve(Reservation::new("host", "k"))
                .into(),
        ),
        (
            "same key version twice",
            StreamAppend::new(s, Expected::Any)
                .event(event("T", ""))
                .key(WrappedKey {
                    version: 1,
                    wrapped: vec![1],
                })
                .key(WrappedKey {
                    version: 1,
                    wrapped: vec![2],
                })
                .into(),
        ),
        (
            "stream twice",
            Commit::new()
                .append(StreamAppend::new(s, Expected::Any).event(event("T", "")))
                .append(StreamAppend::new(s, Expected::Any).event(event("T", ""))),
        ),
        (
            "append to and delete a stream",
            Commit::new()
                .append(StreamAppend::new(s, Expected::Any).event(event("T", "")))
                .delete(s),
        ),
        ("delete twice", Commit::new().delete(s).delete(s)),
    ];
    for (what, commit) in cases {
        let err = log.commit(commit).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{what}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(log.head_position(), 1, "nothing was written");
    assert_eq!(all_events(&*log).await.len(), 1);
    assert!(!log.is_deleted(s).await.unwrap());
    assert_eq!(
        log.reservation_owner(&Reservation::new("host", "k"))
            .await
            .unwrap(),
        None
    );
}

pub async fn read_all_pages_in_position_order<L: EventLog>(log: Arc<L>) {
    let streams: Vec<_> = (0..3).map(|_| stream()).collect();
    for i in 0..30 {
        append_one(&*log, streams[i % 3], Expected::Any).await;
    }
    let all = all_events(&*log).await;
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = log.read_all(from, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        from = page.last().unwrap().position + 1;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(log.read_all(30, 10).await.unwrap().len(), 1);
    assert!(log.read_all(31, 10).await.unwrap().is_empty());
    assert_eq!(log.read_all(0, 0).await.unwrap().len(), 0);
}

pub async fn subscribers_learn_of_commits<L: EventLog>(log: Arc<L>) {
    let mut heads = log.subscribe();
    assert_eq!(*heads.borrow_and_update(), 0);
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { append_one(&*log, stream(), Expected::Any).await })
    };
    tokio::time::timeout(Duration::from_secs(30), heads.changed())
        .await
        .expect("a commit wakes the subscriber")
        .unwrap();
    let written = writer.await.unwrap();
    assert_eq!(*heads.borrow_and_update(), written.position);
    // The notified position is readable at once.
    assert_eq!(log.read_all(written.position, 1).await.unwrap()[0], written);
}

pub async fn deleted_stream_leaves_nothing<L: EventLog>(log: Arc<L>) {
    let (msp, customer) = (stream(), stream());
    let label = Reservation::new("host", "c1-msp");
    let user = Reservation::new(format!("username:{customer}"), "billy");
    let image = b"\x89PNG fake image".to_vec();
    log.commit(
        Commit::new()
            .append(StreamAppend::new(msp, Expected::NoStream).event(event("CustomerCreated", "")))
            .append(
                StreamAppend::new(customer, Expected::NoStream)
                    .event(event("TenantCreated", ""))
                    .reserve(label.clone())
                    .reserve(user.clone())
                    .blob(image.clone())
                    .key(WrappedKey {
                        version: 1,
                        wrapped: vec![9; 40],
                    }),
            ),
    )
    .await
    .unwrap();
    for i in 0..6 {
        append_one(
            &*log,
            if i % 2 == 0 { customer } else { msp },
            Expected::Any,
        )
        .await;
    }
    append_one(&*log, customer, Expected::Any).await; // customer holds the newest position
    let head_before = log.head_position();

    let recorded = log
        .commit(
            Commit::new()
                .append(StreamAppend::new(msp, Expected::Any).event(event("CustomerDeleted", "")))
                .delete(customer),
        )
        .await
        .unwrap();
    assert_eq!(
        recorded.position,
        head_before + 1,
        "positions never go back"
    );

    assert!(log.is_deleted(customer).await.unwrap());
    assert!(log.read_stream(customer, 1, 100).await.unwrap().is_empty());
    assert!(log.stream_head(customer).await.unwrap().is_none());
    assert_eq!(log.reservation_owner(&label).await.unwrap(), None);
    assert_eq!(log.reservation_owner(&user).await.unwrap(), None);
    assert_eq!(log.blob(customer, blob_id(&image)).await.unwrap(), None);
    assert!(log.data_keys(customer).await.unwrap().is_empty());
    let remaining = all_events(&*log).await;
    assert!(remaining.iter().all(|e| e.stream == msp));
    assert_eq!(remaining.len(), 5);
    assert!(verify(&*log, msp).await.unwrap().is_valid());

    let late = log
        .append(StreamAppend::new(customer, Expected::Any).event(event("T", "")))
        .await
        .unwrap_err();
    assert!(matches!(late, Error::StreamDeleted { stream } if stream == customer));
    let twice = log
        .commit(Commit::new().delete(customer))
        .await
        .unwrap_err();
    assert!(matches!(twice, Error::StreamDeleted { .. }));

    // The freed name can be taken again, by a new stream.
    let reborn = stream();
    log.append(
        StreamAppend::new(reborn, Expected::NoStream)
            .event(event("T", ""))
            .reserve(label.clone()),
    )
    .await
    .unwrap();
    assert_eq!(log.reservation_owner(&label).await.unwrap(), Some(reborn));
    assert_eq!(log.head_position(), head_before + 2);
}

pub async fn blobs_and_data_keys<L: EventLog>(log: Arc<L>) {
    let s = stream();
    let (logo, background) = (b"logo bytes".to_vec(), vec![7u8; 100_000]);
    log.append(
        StreamAppend::new(s, Expected::NoStream)
            .event(event("BrandingUpdated", ""))
            .blob(logo.clone())
            .blob(background.clone())
            .key(WrappedKey {
                version: 2,
                wrapped: vec![2; 48],
            })
            .key(WrappedKey {
                version: 1,
                wrapped: vec![1; 48],
            }),
    )
    .await
    .unwrap();
    assert_eq!(
        log.blob(s, blob_id(&logo)).await.unwrap(),
        Some(logo.clone())
    );
    assert_eq!(
        log.blob(s, blob_id(&background)).await.unwrap(),
        Some(background)
    );
    assert_eq!(
        log.blob(stream(), blob_id(&logo)).await.unwrap(),
        None,
        "blobs are per stream"
    );
    assert_eq!(log.blob(s, blob_id(b"other")).await.unwrap(), None);
    let versions: Vec<_> = log
        .data_keys(s)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(versions, vec![1, 2]);

    let exists = log
        .append(
            StreamAppend::new(s, Expected::Any)
                .event(event("T", ""))
                .key(WrappedKey {
                    version: 1,
                    wrapped: vec![0; 48],
                }),
        )
        .await
        .unwrap_err();
    assert!(matches!(exists, Error::KeyExists { version: 1, .. }));
    assert_eq!(
        log.data_keys(s).await.unwrap()[0].wrapped,
        vec![1; 48],
        "not overwritten"
    );
    // Storing the same blob again is harmless: it is addressed by content.
    log.append(
        StreamAppend::new(s, Expected::Any)
            .event(event("T", ""))
            .blob(logo.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        log.blob(s, blob_id(&logo)).await.unwrap(),
        Some(logo.clone())
    );

    // A replaced image leaves with the append that replaces it; the other stays.
    let new_logo = b"new logo bytes".to_vec();
    log.append(
        StreamAppend::new(s, Expected::Any)
            .event(event("BrandingUpdated", ""))
            .blob(new_logo.clone())
            .drop_blob(blob_id(&logo)),
    )
    .await
    .unwrap();
    assert_eq!(log.blob(s, blob_id(&logo)).await.unwrap(), None);
    assert_eq!(
        log.blob(s, blob_id(&new_logo)).await.unwrap(),
        Some(new_logo.clone())
    );
    assert!(
        log.blob(s, blob_id(&vec![7u8; 100_000]))
            .await
            .unwrap()
            .is_some()
    );
    // Dropping and storing the same content in one append keeps it; dropping what the stream
    // does not hold (or another stream holds) is no error and touches nothing else.
    let other = stream();
    log.append(
        StreamAppend::new(other, Expected::NoStream)
            .event(event("BrandingUpdated", ""))
            .blob(new_logo.clone()),
    )
    .await
    .unwrap();
    log.append(
        StreamAppend::new(s, Expected::Any)
            .event(event("BrandingUpdated", ""))
            .drop_blob(blob_id(&new_logo))
            .blob(new_logo.clone())
            .drop_blob(blob_id(b"never stored")),
    )
    .await
    .unwrap();
    assert_eq!(
        log.blob(s, blob_id(&new_logo)).await.unwrap(),
        Some(new_logo.clone())
    );
    log.append(
        StreamAppend::new(s, Expected::Any)
            .event(event("BrandingUpdated", ""))
            .drop_blob(blob_id(&new_logo)),
    )
    .await
    .unwrap();
    assert_eq!(log.blob(s, blob_id(&new_logo)).await.unwrap(), None);
    assert_eq!(
        log.blob(other, blob_id(&new_logo)).await.unwrap(),
        Some(new_logo),
        "blobs are dropped per stream"
    );
    // A failed append drops nothing.
    let failed = log
        .append(
            StreamAppend::new(s, Expected::NoStream)
                .event(event("T", ""))
                .drop_blob(blob_id(&vec![7u8; 100_000])),
        )
        .await;
    assert!(matches!(failed, Err(Error::WrongExpectedSeq { .. })));
    assert!(
        log.blob(s, blob_id(&vec![7u8; 100_000]))
            .await
            .unwrap()
            .is_some()
    );
}

/// A root key rotation replaces stored wrappings, all of a commit or none, and only where the
/// key is still stored as it was read; it appends nothing to the log.
pub async fn rewrapping_data_keys_compares_and_swaps<L: EventLog>(log: Arc<L>) {
    let (a, b, gone) = (stream(), stream(), stream());
    for (s, versions) in [(a, 1..=2u32), (b, 1..=1), (gone, 1..=1)] {
        let mut append = StreamAppend::new(s, Expected::NoStream).event(event("T", ""));
        for version in versions {
            append = append.key(WrappedKey {
                version,
                wrapped: vec![u8::try_from(version).unwrap(); 48],
            });
        }
        log.append(append).await.unwrap();
    }
    log.commit(Commit::new().delete(gone)).await.unwrap();
    let head = log.head_position();
    let rewrap = |s, version: u32, from: u8, to: u8| KeyRewrap {
        stream: s,
        version,
        from: vec![from; 48],
        to: vec![to; 48],
    };
    let wrapped = |s| {
        let log = Arc::clone(&log);
        async move {
            log.data_keys(s)
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.version, k.wrapped[0]))
                .collect::<Vec<_>>()
        }
    };

    // One stale `from` fails the whole commit: nothing is replaced.
    for stale in [
        rewrap(b, 1, 9, 11),    // not what is stored
        rewrap(b, 2, 2, 12),    // no such version
        rewrap(gone, 1, 1, 13), // its stream was deleted
    ] {
        let err = log
            .commit(
                Commit::new()
                    .rewrap(rewrap(a, 1, 1, 11))
                    .rewrap(stale.clone()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyChanged { stream, version } if stream == stale.stream && version == stale.version),
            "{err:?}"
        );
        assert!(err.is_conflict());
        assert_eq!(wrapped(a).await, vec![(1, 1), (2, 2)], "nothing replaced");
    }

    // Malformed rewraps are refused before anything is read.
    for bad in [
        Commit::new()
            .rewrap(rewrap(a, 1, 1, 11))
            .rewrap(rewrap(a, 1, 1, 12)),
        Commit::new().rewrap(KeyRewrap {
            to: Vec::new(),
            ..rewrap(a, 1, 1, 0)
        }),
        Commit::new().rewrap(rewrap(a, 1, 1, 11)).delete(a),
    ] {
        assert!(matches!(log.commit(bad).await, Err(Error::Invalid(_))));
    }
    assert_eq!(wrapped(a).await, vec![(1, 1), (2, 2)]);

    // All current: every wrapping replaced at once, and no event written.
    let committed = log
        .commit(
            Commit::new()
                .rewrap(rewrap(a, 1, 1, 11))
                .rewrap(rewrap(a, 2, 2, 12))
                .rewrap(rewrap(b, 1, 1, 21)),
        )
        .await
        .unwrap();
    assert!(committed.events.is_empty());
    assert_eq!(log.head_position(), head);
    assert_eq!(wrapped(a).await, vec![(1, 11), (2, 12)]);
    assert_eq!(wrapped(b).await, vec![(1, 21)]);
    // The old wrapping is no longer what is stored: a second rotation from it conflicts.
    let again = log.commit(Commit::new().rewrap(rewrap(a, 1, 1, 31))).await;
    assert!(matches!(again, Err(Error::KeyChanged { .. })));

    // A key stored and rewrapped in one commit, and a rewrap beside an append to its stream.
    let c = stream();
    log.commit(
        Commit::new()
            .append(
                StreamAppend::new(c, Expected::NoStream)
                    .event(event("T", ""))
                    .key(WrappedKey {
                        version: 1,
                        wrapped: vec![1; 48],
                    }),
            )
            .rewrap(rewrap(c, 1, 1, 41))
            .rewrap(rewrap(a, 2, 12, 42)),
    )
    .await
    .unwrap();
    assert_eq!(wrapped(c).await, vec![(1, 41)]);
    assert_eq!(wrapped(a).await, vec![(1, 11), (2, 42)]);
}

/// A snapshot is stored only for an event the stream holds (its seq and hash), only in place of
/// an older one, is written with nothing else of its commit when that fails, moves no head, and
/// goes with its stream.
pub async fn snapshots_name_a_stored_event_and_only_move_forward<L: EventLog>(log: Arc<L>) {
    let (a, b, empty) = (stream(), stream(), stream());
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(append_one(&*log, a, Expected::Any).await);
    }
    append_one(&*log, b, Expected::Any).await;
    let at = |seq: u64, data: &str| Snapshot {
        stream: a,
        seq,
        hash: events[usize::try_from(seq).unwrap() - 1].hash,
        data: data.as_bytes().to_vec(),
    };
    assert_eq!(log.snapshot(a).await.unwrap(), None);

    let head = log.head_position();
    let committed = log
        .commit(Commit::new().snapshot(at(2, "two")))
        .await
        .unwrap();
    assert!(committed.events.is_empty());
    assert_eq!(log.head_position(), head, "a snapshot is not an event");
    assert_eq!(log.snapshot(a).await.unwrap(), Some(at(2, "two")));
    assert_eq!(log.read_stream(a, 1, 10).await.unwrap(), events);

    // Not the stored event: another event's hash, a seq past the head, an empty stream.
    for (bad, seq) in [
        (
            Snapshot {
                hash: events[2].hash,
                ..at(2, "wrong hash")
            },
            2,
        ),
        (
            Snapshot {
                seq: 4,
                ..at(3, "past the head")
            },
            4,
        ),
        (
            Snapshot {
                stream: empty,
                ..at(1, "no events")
            },
            1,
        ),
    ] {
        let named = bad.stream;
        let err = log.commit(Commit::new().snapshot(bad)).await.unwrap_err();
        assert!(
            matches!(err, Error::SnapshotMismatch { stream, seq: s } if stream == named && s == seq),
            "{err:?}"
        );
    }
    // Not newer than the stored one.
    for seq in [1, 2] {
        let err = log
            .commit(Commit::new().snapshot(at(seq, "older")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::SnapshotOutdated { stored: 2, seq: s, .. } if s == seq),
            "{err:?}"
        );
        assert!(err.is_conflict());
    }
    // Malformed: refused before anything is read.
    for bad in [
        Commit::new().snapshot(Snapshot {
            seq: 0,
            ..at(1, "zero")
        }),
        Commit::new().snapshot(at(3, "x")).snapshot(at(3, "y")),
        Commit::new().snapshot(at(3, "x")).delete(a),
    ] {
        assert!(matches!(log.commit(bad).await, Err(Error::Invalid(_))));
    }
    // A commit failing elsewhere stores no snapshot.
    let err = log
        .commit(
            Commit::new()
                .snapshot(at(3, "three"))
                .append(StreamAppend::new(b, Expected::NoStream).event(event("T", ""))),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedSeq { .. }), "{err:?}");
    assert_eq!(log.snapshot(a).await.unwrap(), Some(at(2, "two")));

    // A newer one replaces it, in the same commit as an append to its stream.
    let committed = log
        .commit(
            Commit::new()
                .snapshot(at(3, "three"))
                .append(StreamAppend::new(a, Expected::At(3)).event(event("T", ""))),
        )
        .await
        .unwrap();
    assert_eq!(committed.events.len(), 1);
    assert_eq!(log.snapshot(a).await.unwrap(), Some(at(3, "three")));
    assert_eq!(log.snapshot(b).await.unwrap(), None, "each stream its own");

    // Gone with its stream, and none taken after.
    log.commit(Commit::new().delete(a)).await.unwrap();
    assert_eq!(log.snapshot(a).await.unwrap(), None);
    let err = log
        .commit(Commit::new().snapshot(at(3, "after")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::StreamDeleted { stream } if stream == a),
        "{err:?}"
    );
}

/// Many writers race for each seq of one stream with exact expectations: exactly one wins each.
pub async fn concurrent_appends_to_one_stream<L: EventLog>(log: Arc<L>) {
    const WRITERS: usize = 16;
    const TARGET: u64 = 200;
    let s = stream();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0u64;
            loop {
                let seq = log.stream_head(s).await.unwrap().map_or(0, |h| h.seq);
                if seq >= TARGET {
                    return (won, conflicts);
                }
                let e = event("Raced", "");
                let id = e.id;
                match log
                    .append(StreamAppend::new(s, Expected::At(seq)).event(e))
                    .await
                {
                    Ok(c) => {
                        assert_eq!(c.events[0].seq, seq + 1);
                        won.push((seq + 1, id));
                    }
                    Err(Error::WrongExpectedSeq { current, .. }) => {
                        assert!(current > seq, "a conflict means someone else advanced");
                        conflicts += 1;
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    let mut winners: HashMap<u64, Uuid> = HashMap::new();
    for task in tasks {
        let (won, _) = task.await.unwrap();
        for (seq, id) in won {
            assert!(winners.insert(seq, id).is_none(), "seq {seq} won twice");
        }
    }
    assert_eq!(winners.len() as u64, TARGET);
    let events = log.read_stream(s, 1, usize::MAX).await.unwrap();
    assert_eq!(events.len() as u64, TARGET);
    for e in &events {
        assert_eq!(
            winners[&e.seq], e.id,
            "the stored event at seq {} is its winner's",
            e.seq
        );
    }
    assert!(verify(&*log, s).await.unwrap().is_valid());
}

/// Many writers on distinct streams: every position is used exactly once, without gaps.
pub async fn concurrent_appends_to_many_streams<L: EventLog>(log: Arc<L>) {
    const WRITERS: usize = 64;
    const EACH: u64 = 25;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let s = stream();
            let mut positions = Vec::new();
            for seq in 0..EACH {
                let c = log
                    .append(StreamAppend::new(s, Expected::At(seq)).event(event("Many", "")))
                    .await
                    .unwrap();
                positions.push(c.events[0].position);
            }
            (s, positions)
        }));
    }
    let mut seen = HashSet::new();
    let mut streams = Vec::new();
    for task in tasks {
        let (s, positions) = task.await.unwrap();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a writer's positions ascend"
        );
        for p in positions {
            assert!(seen.insert(p), "position {p} given twice");
        }
        streams.push(s);
    }
    let total = WRITERS as u64 * EACH;
    assert_eq!(
        seen,
        (1..=total).collect::<HashSet<_>>(),
        "gap-free and unique"
    );
    assert_eq!(log.head_position(), total);
    let all = all_events(&*log).await;
    assert_eq!(all.len() as u64, total);
    for s in streams {
        let seqs: Vec<_> = log
            .read_stream(s, 1, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=EACH).collect::<Vec<_>>());
    }
}

/// Under concurrent writers (whose groups a backend may write while earlier ones are still
/// being made durable): every head a subscriber is told of is readable up to it with no gap,
/// and every acknowledged append is readable at once, with the head at or past it.
pub async fn published_heads_are_readable_under_concurrent_writers<L: EventLog>(log: Arc<L>) {
    const WRITERS: usize = 64;
    const EACH: u64 = 50;
    let total = WRITERS as u64 * EACH;
    let mut heads = log.subscribe();
    let reader = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut checked = 0u64;
            let mut heads_seen = 0usize;
            while checked < total {
                tokio::time::timeout(Duration::from_secs(30), heads.changed())
                    .await
                    .expect("commits wake the subscriber")
                    .unwrap();
                let head = *heads.borrow_and_update();
                heads_seen += 1;
                while checked < head {
                    let page = log.read_all(checked + 1, 1000).await.unwrap();
                    let positions: Vec<u64> = page
                        .iter()
                        .map(|e| e.position)
                        .take_while(|p| *p <= head)
                        .collect();
                    let expected: Vec<u64> =
                        (checked + 1..=head.min(checked + positions.len() as u64)).collect();
                    assert!(
                        !positions.is_empty() && positions == expected,
                        "head {head} was published, but reading from {} gave {positions:?}",
                        checked + 1
                    );
                    checked += positions.len() as u64;
                }
            }
            heads_seen
        })
    };
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let log = Arc::clone(&log);
        writers.push(tokio::spawn(async move {
            let s = stream();
            for seq in 0..EACH {
                let c = log
                    .append(StreamAppend::new(s, Expected::At(seq)).event(event("Read", "")))
                    .await
                    .unwrap();
                let position = c.events[0].position;
                assert!(log.head_position() >= position, "the head is past an ack");
                let read = log.read_all(position, 1).await.unwrap();
                assert_eq!(read.first(), c.events.first(), "an ack is readable at once");
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let heads_seen = reader.await.unwrap();
    assert!(heads_seen >= 1);
    assert_eq!(log.head_position(), total);
}
