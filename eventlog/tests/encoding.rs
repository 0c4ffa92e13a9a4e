//! Property tests of the canonical encoding and the key layouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use eventlog::encoding::{self, keys};
use eventlog::{Digest32, Error, Location, RecordedEvent, Reservation, StreamId};
use proptest::prelude::*;
use uuid::Uuid;

fn stream_id() -> impl Strategy<Value = StreamId> {
    any::<[u8; 16]>().prop_map(|b| StreamId(Uuid::from_bytes(b)))
}

/// Stream ids, with the edges of the prefix space (all 0xff: no next prefix; a run of 0xff
/// that carries when incremented) as likely as random ones.
fn prefix() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        Just(StreamId(Uuid::from_u128(u128::MAX))),
        any::<u64>().prop_map(|high| StreamId(Uuid::from_u128(
            (u128::from(high) << 64) | u128::from(u64::MAX)
        ))),
        stream_id(),
    ]
}

prop_compose! {
    fn recorded_event()(
        id in any::<[u8; 16]>(),
        stream in stream_id(),
        seq in any::<u64>(),
        position in any::<u64>(),
        event_type in "[A-Za-z0-9é✓]{1,60}",
        schema_version in any::<u32>(),
        secs in -8_000_000_000i64..8_000_000_000,
        nanos in 0u32..1_000_000_000,
        actor in ".{0,100}",
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        prev_hash in any::<[u8; 32]>(),
    ) -> RecordedEvent {
        RecordedEvent {
            id: Uuid::from_bytes(id),
            stream,
            seq,
            position,
            event_type,
            schema_version,
            occurred_at: Utc.timestamp_opt(secs, nanos).unwrap(),
            actor,
            data,
            prev_hash: Digest32(prev_hash),
            hash: Digest32([0; 32]),
        }
    }
}

proptest! {
    #[test]
    fn sealed_events_decode_to_themselves(mut event in recorded_event()) {
        let bytes = encoding::seal(&mut event);
        let decoded = encoding::decode(&bytes, Location::default()).unwrap();
        prop_assert_eq!(&decoded, &event);
        prop_assert_eq!(encoding::encode(&decoded), bytes);
    }

    #[test]
    fn any_changed_byte_is_detected(mut event in recorded_event(), index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = encoding::seal(&mut event);
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        let err = encoding::decode(&bytes, Location::default()).unwrap_err();
        prop_assert!(matches!(err, Error::Corrupt { .. } | Error::UnsupportedFormat { .. }), "{:?}", err);
    }

    #[test]
    fn truncation_and_trailing_bytes_are_detected(mut event in recorded_event(), index in any::<prop::sample::Index>(), extra in 1usize..8) {
        let bytes = encoding::seal(&mut event);
        let cut = index.index(bytes.len());
        prop_assert!(encoding::decode(&bytes[..cut], Location::default()).is_err());
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(encoding::decode(&longer, Location::default()).is_err());
    }

    #[test]
    fn stream_keys_sort_by_stream_then_seq(a in stream_id(), b in stream_id(), x in any::<u64>(), y in any::<u64>()) {
        let by_key = keys::stream(a, x).cmp(&keys::stream(b, y));
        prop_assert_eq!(by_key, (a, x).cmp(&(b, y)));
        prop_assert_eq!(keys::parse_stream(&keys::stream(a, x)), Some((a, x)));
    }

    #[test]
    fn event_keys_sort_by_position(p in any::<u64>(), q in any::<u64>(), a in stream_id(), b in stream_id(), x in any::<u64>(), y in any::<u64>()) {
        prop_assume!(p != q);
        prop_assert_eq!(keys::event(p, a, x).cmp(&keys::event(q, b, y)), p.cmp(&q));
        // Seeking to a position lands on its event, never on a neighbour's.
        prop_assert!(keys::event_seek(p).as_slice() <= keys::event(p, a, x).as_slice());
        prop_assert_eq!(keys::parse_event(&keys::event(p, a, x)), Some((p, a, x)));
        if p < u64::MAX {
            prop_assert!(keys::event(p, a, x).as_slice() < keys::event_seek(p + 1).as_slice());
        }
    }

    #[test]
    fn stream_prefix_range_holds_exactly_its_stream(
        a in prefix(),
        b in prefix(),
        same in any::<bool>(),
        first in prop_oneof![Just(0xffu8), Just(0u8), any::<u8>()],
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        // Keys of the stream itself half the time (random ids almost never meet), with
        // suffixes that start with 0xff often (a digest does one time in 256).
        let b = if same { a } else { b };
        let (start, end) = keys::stream_prefix_range(a);
        let mut key = b.0.as_bytes().to_vec();
        key.push(first);
        key.extend_from_slice(&tail);
        let inside = key.as_slice() >= start.as_slice() && key.as_slice() < end.as_slice();
        prop_assert_eq!(inside, a == b);
    }

    #[test]
    fn reservation_keys_are_injective(s1 in "[a-z:]{1,12}", k1 in "[a-z]{1,12}", s2 in "[a-z:]{1,12}", k2 in "[a-z]{1,12}") {
        let (r1, r2) = (Reservation::new(s1, k1), Reservation::new(s2, k2));
        prop_assert_eq!(keys::reservation(&r1) == keys::reservation(&r2), r1 == r2);
    }

    #[test]
    fn digests_round_trip_through_hex(bytes in any::<[u8; 32]>()) {
        let digest = Digest32(bytes);
        prop_assert_eq!(digest.to_hex().parse::<Digest32>(), Ok(digest));
    }
}

#[test]
fn malformed_hex_is_refused() {
    for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
        assert!(bad.parse::<Digest32>().is_err(), "{bad:?}");
    }
}
