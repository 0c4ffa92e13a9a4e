//! The canonical byte encoding of an event envelope, its hash, and the storage key layouts.
//!
//! # Envelope, format 1
//!
//! Every integer is big-endian; strings are UTF-8. The stored value is exactly these bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, `1` |
//! | 16 | event id (UUID) |
//! | 16 | stream id (UUID) |
//! | 8 | seq (u64) |
//! | 8 | position (u64) |
//! | 4 | schema version (u32) |
//! | 8 | occurred_at, seconds since the Unix epoch (i64) |
//! | 4 | occurred_at, nanoseconds within the second (u32, < 10⁹) |
//! | 1 + T | event type: length T (u8, 1..=255), then T bytes |
//! | 2 + A | actor: length A (u16, ≤ 1024), then A bytes |
//! | 4 + D | data: length D (u32), then D bytes |
//! | 32 | prev_hash: the hash of the stream's previous event, zeros for seq 1 |
//! | 32 | hash = SHA-256(`"idem.eventlog.event.v1\0"` ‖ every byte above) |
//!
//! The hash covers every other stored byte, including `prev_hash`, so changing any byte of any
//! event (or dropping, reordering or inserting one) breaks the chain at that event. Decoding
//! checks the structure and the hash, so damage surfaces on every read, not only in `verify`.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Location, Result};
use crate::model::{Digest32, RecordedEvent, Reservation, StreamId};

/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

const HASH_DOMAIN: &[u8] = b"idem.eventlog.event.v1\0";
const HASH_LEN: usize = 32;

pub const MAX_EVENT_TYPE: usize = 255;
pub const MAX_ACTOR: usize = 1024;
pub const MAX_SCOPE: usize = 128;
pub const MAX_RESERVATION_KEY: usize = 512;

/// Appends the envelope of `event` without its trailing hash (the bytes the hash covers).
/// `event.hash` is ignored.
pub fn encode_body(event: &RecordedEvent, out: &mut Vec<u8>) {
    out.reserve(
        1 + 16
            + 16
            + 8
            + 8
            + 4
            + 12
            + 1
            + event.event_type.len()
            + 2
            + event.actor.len()
            + 4
            + event.data.len()
            + 2 * HASH_LEN,
    );
    out.push(FORMAT_VERSION);
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(event.stream.0.as_bytes());
    out.extend_from_slice(&event.seq.to_be_bytes());
    out.extend_from_slice(&event.position.to_be_bytes());
    out.extend_from_slice(&event.schema_version.to_be_bytes());
    out.extend_from_slice(&event.occurred_at.timestamp().to_be_bytes());
    out.extend_from_slice(&event.occurred_at.timestamp_subsec_nanos().to_be_bytes());
    // Lengths were validated before an event reaches the encoder (see `validate`); the casts
    // below cannot truncate for a validated event.
    out.push(event.event_type.len() as u8);
    out.extend_from_slice(event.event_type.as_bytes());
    out.extend_from_slice(&(event.actor.len() as u16).to_be_bytes());
    out.extend_from_slice(event.actor.as_bytes());
    out.extend_from_slice(&(event.data.len() as u32).to_be_bytes());
    out.extend_from_slice(&event.data);
    out.extend_from_slice(&event.prev_hash.0);
}

/// SHA-256 over the domain tag and an envelope body.
pub fn hash_body(body: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    hasher.update(body);
    Digest32(hasher.finalize().into())
}

/// Computes `event.hash` from its other fields and returns the stored bytes.
pub fn seal(event: &mut RecordedEvent) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_body(event, &mut bytes);
    event.hash = hash_body(&bytes);
    bytes.extend_from_slice(&event.hash.0);
    bytes
}

/// The stored bytes of an already sealed event (its `hash` is written as it is).
pub fn encode(event: &RecordedEvent) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_body(event, &mut bytes);
    bytes.extend_from_slice(&event.hash.0);
    bytes
}

/// Decodes stored bytes, checking structure and hash. `at` names the place for errors.
pub fn decode(bytes: &[u8], at: Location) -> Result<RecordedEvent> {
    let corrupt = |reason: String| Error::Corrupt { at, reason };
    let Some(&version) = bytes.first() else {
        return Err(corrupt("empty value".into()));
    };
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat { at, version });
    }
    let mut reader = Reader { bytes, offset: 1 };
    let event = read_fields(&mut reader).map_err(corrupt)?;
    let body_len = reader.offset;
    let stored_hash = reader.array::<HASH_LEN>("hash").map_err(corrupt)?;
    if reader.offset != bytes.len() {
        return Err(corrupt(format!(
            "{} unexpected bytes after the hash",
            bytes.len() - reader.offset
        )));
    }
    let computed = hash_body(&bytes[..body_len]);
    if computed.0 != stored_hash {
        return Err(corrupt(format!(
            "hash mismatch: stored {}, computed {}",
            Digest32(stored_hash),
            computed
        )));
    }
    Ok(RecordedEvent {
        hash: computed,
        ..event
    })
}

fn read_fields(r: &mut Reader<'_>) -> Result<RecordedEvent, String> {
    let id = Uuid::from_bytes(r.array("event id")?);
    let stream = StreamId(Uuid::from_bytes(r.array("stream id")?));
    let seq = u64::from_be_bytes(r.array("seq")?);
    let position = u64::from_be_bytes(r.array("position")?);
    let schema_version = u32::from_be_bytes(r.array("schema version")?);
    let secs = i64::from_be_bytes(r.array("occurred_at seconds")?);
    let nanos = u32::from_be_bytes(r.array("occurred_at nanoseconds")?);
    let occurred_at = DateTime::<Utc>::from_timestamp(secs, nanos)
        .filter(|_| nanos < 1_000_000_000)
        .ok_or_else(|| format!("occurred_at out of range ({secs} s, {nanos} ns)"))?;
    let type_len = usize::from(r.array::<1>("event type length")?[0]);
    let event_type = r.string(type_len, "event type")?;
    if event_type.is_empty() {
        return Err("empty event type".into());
    }
    let actor_len = usize::from(u16::from_be_bytes(r.array("actor length")?));
    if actor_len > MAX_ACTOR {
        return Err(format!("actor length {actor_len} exceeds {MAX_ACTOR}"));
    }
    let actor = r.string(actor_len, "actor")?;
    let data_len = u32::from_be_bytes(r.array("data length")?) as usize;
    let data = r.take(data_len, "data")?.to_vec();
    let prev_hash = Digest32(r.array("prev_hash")?);
    Ok(RecordedEvent {
        id,
        stream,
        seq,
        position,
        event_type,
        schema_version,
        occurred_at,
        actor,
        data,
        prev_hash,
        hash: Digest32([0; 32]),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {what} needs {len} bytes at offset {}, the value has {}",
                    self.offset,
                    self.bytes.len()
                )
            })?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn string(&mut self, len: usize, what: &str) -> Result<String, String> {
        let slice = self.take(len, what)?;
        String::from_utf8(slice.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// Key layouts. Every integer is big-endian so that byte order is numeric order.
pub mod keys {
    use super::*;

    /// `events`: position ‖ stream ‖ seq → envelope. Keyed by position, so the whole log reads
    /// in commit order with one iterator; stream and seq in the key name the place of an event
    /// even when its value is unreadable.
    pub const EVENT_KEY_LEN: usize = 32;

    pub fn event(position: u64, stream: StreamId, seq: u64) -> [u8; EVENT_KEY_LEN] {
        let mut key = [0u8; EVENT_KEY_LEN];
        key[..8].copy_from_slice(&position.to_be_bytes());
        key[8..24].copy_from_slice(stream.0.as_bytes());
        key[24..].copy_from_slice(&seq.to_be_bytes());
        key
    }

    /// The first event key at or after `position`.
    pub fn event_seek(position: u64) -> [u8; 8] {
        position.to_be_bytes()
    }

    pub fn parse_event(key: &[u8]) -> Option<(u64, StreamId, u64)> {
        if key.len() != EVENT_KEY_LEN {
            return None;
        }
        let position = u64::from_be_bytes(key[..8].try_into().ok()?);
        let stream = StreamId(Uuid::from_bytes(key[8..24].try_into().ok()?));
        let seq = u64::from_be_bytes(key[24..].try_into().ok()?);
        Some((position, stream, seq))
    }

    /// `streams`: stream ‖ seq → position ‖ hash. A stream's events in seq order, and its head
    /// (the last key of its prefix) without touching the events themselves.
    pub const STREAM_KEY_LEN: usize = 24;
    pub const STREAM_VALUE_LEN: usize = 40;

    pub fn stream(stream: StreamId, seq: u64) -> [u8; STREAM_KEY_LEN] {
        let mut key = [0u8; STREAM_KEY_LEN];
        key[..16].copy_from_slice(stream.0.as_bytes());
        key[16..].copy_from_slice(&seq.to_be_bytes());
        key
    }

    pub fn parse_stream(key: &[u8]) -> Option<(StreamId, u64)> {
        if key.len() != STREAM_KEY_LEN {
            return None;
        }
        let stream = StreamId(Uuid::from_bytes(key[..16].try_into().ok()?));
        let seq = u64::from_be_bytes(key[16..].try_into().ok()?);
        Some((stream, seq))
    }

    pub fn stream_value(position: u64, hash: &Digest32) -> [u8; STREAM_VALUE_LEN] {
        let mut value = [0u8; STREAM_VALUE_LEN];
        value[..8].copy_from_slice(&position.to_be_bytes());
        value[8..].copy_from_slice(&hash.0);
        value
    }

    pub fn parse_stream_value(value: &[u8]) -> Option<(u64, Digest32)> {
        if value.len() != STREAM_VALUE_LEN {
            return None;
        }
        let position = u64::from_be_bytes(value[..8].try_into().ok()?);
        let hash = Digest32(value[8..].try_into().ok()?);
        Some((position, hash))
    }

    /// The half-open key range `[start, end)` holding everything under a 16-byte stream prefix:
    /// `end` is the next prefix. (`stream ‖ 0xff` would not do: a key `stream ‖ 0xff ‖ …`, as a
    /// digest suffix starts one time in 256, sorts after it.) The last possible prefix has no
    /// next one; its `end` is longer than any key stored under a stream prefix.
    pub fn stream_prefix_range(stream: StreamId) -> ([u8; 16], Vec<u8>) {
        let start = *stream.0.as_bytes();
        let end = match stream.0.as_u128().checked_add(1) {
            Some(next) => next.to_be_bytes().to_vec(),
            None => vec![0xff; 16 + MAX_SUFFIX_UNDER_STREAM + 1],
        };
        (start, end)
    }

    /// The longest suffix after a stream prefix in any column family: a SHA-256 digest
    /// (`owned`, `blobs`).
    const MAX_SUFFIX_UNDER_STREAM: usize = 32;

    /// `reservations`: SHA-256(`"idem.eventlog.reservation.v1\0"` ‖ len(scope) ‖ scope ‖ key)
    /// → owner stream. Keys are stored only as digests: a reservation is often personal data
    /// (a username, an email), and RocksDB copies keys into places that outlive a deletion's
    /// compaction (the MANIFEST records each table file's first and last key). The length
    /// prefix keeps (`ab`, `c`) and (`a`, `bc`) apart.
    pub fn reservation(r: &Reservation) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"idem.eventlog.reservation.v1\0");
        hasher.update([r.scope.len() as u8]);
        hasher.update(r.scope.as_bytes());
        hasher.update(r.key.as_bytes());
        hasher.finalize().into()
    }

    /// `owned`: owner stream ‖ reservation key → empty. Lets a stream's deletion find and free
    /// every key it holds.
    pub fn owned(owner: StreamId, r: &Reservation) -> [u8; 48] {
        let mut key = [0u8; 48];
        key[..16].copy_from_slice(owner.0.as_bytes());
        key[16..].copy_from_slice(&reservation(r));
        key
    }

    /// `blobs`: stream ‖ sha256(content) → content.
    pub fn blob(stream: StreamId, id: &Digest32) -> [u8; 48] {
        let mut key = [0u8; 48];
        key[..16].copy_from_slice(stream.0.as_bytes());
        key[16..].copy_from_slice(&id.0);
        key
    }

    /// `keys`: stream ‖ version → wrapped data key.
    pub fn data_key(stream: StreamId, version: u32) -> [u8; 20] {
        let mut key = [0u8; 20];
        key[..16].copy_from_slice(stream.0.as_bytes());
        key[16..].copy_from_slice(&version.to_be_bytes());
        key
    }

    /// `snapshots`: stream → seq ‖ hash of the event at seq ‖ the caller's bytes. One per
    /// stream, under the stream's prefix like everything a deletion removes.
    pub fn snapshot(stream: StreamId) -> [u8; 16] {
        *stream.0.as_bytes()
    }

    pub fn snapshot_value(seq: u64, hash: &Digest32, data: &[u8]) -> Vec<u8> {
        let mut value = Vec::with_capacity(40 + data.len());
        value.extend_from_slice(&seq.to_be_bytes());
        value.extend_from_slice(&hash.0);
        value.extend_from_slice(data);
        value
    }

    pub fn parse_snapshot_value(value: &[u8]) -> Option<(u64, Digest32, &[u8])> {
        if value.len() < 40 {
            return None;
        }
        let seq = u64::from_be_bytes(value[..8].try_into().ok()?);
        let hash = Digest32(value[8..40].try_into().ok()?);
        Some((seq, hash, &value[40..]))
    }

    /// `meta`: the next position to assign is `head + 1`; kept so that positions never repeat,
    /// even when the streams holding the newest events are deleted.
    pub const HEAD: &[u8] = b"head";

    /// `meta`, in a backup only: the data keys the backup left out (each a [`data_key`] key,
    /// 20 bytes, one after the other), which a restore must put back.
    pub const KEYS_LEFT_OUT: &[u8] = b"keys-left-out";

    /// `meta`: the oldest generation of the journal that recovery must replay; the table files
    /// hold every write of the generations before it (see `rocks::journal`).
    pub const JOURNAL_CHECKPOINT: &[u8] = b"journal-checkpoint";

    /// `meta`: the log's identity, a UUID made when the log was created (or first opened by a
    /// build that knew of it), which backups and restores carry along.
    pub const LOG_ID: &[u8] = b"log-id";

    /// What every stream tombstone's key starts with (in `meta`).
    pub const TOMBSTONE_PREFIX: &[u8] = b"deleted:";

    /// `meta`: a deleted stream's tombstone (value: the log head when it was deleted), so that a
    /// late write cannot bring it back.
    pub fn tombstone(stream: StreamId) -> [u8; 24] {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(TOMBSTONE_PREFIX);
        key[8..].copy_from_slice(stream.0.as_bytes());
        key
    }
}
