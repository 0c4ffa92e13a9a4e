//! The log's vocabulary: streams, events as written and as recorded, appends with their
//! expectations and side writes, and what a commit answers.
//!
//! The log knows bytes and streams, not identity: a stream is named by a UUID (the product uses
//! one per tenant), an event's `data` is opaque bytes, its `actor` an opaque string.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The name of one stream: the product keeps one per tenant.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StreamId(pub Uuid);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Uuid> for StreamId {
    fn from(id: Uuid) -> Self {
        StreamId(id)
    }
}

/// A SHA-256 digest: an event's chained hash, or a blob's content address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest32(pub [u8; 32]);

/// The hash a stream's first event chains from.
pub const ZERO_HASH: Digest32 = Digest32([0; 32]);

impl Digest32 {
    /// The lowercase hexadecimal form, as auditors see it.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", self.to_hex())
    }
}

/// A string that is not 64 hexadecimal digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a SHA-256 digest: expected 64 hexadecimal digits")]
pub struct BadDigest;

impl FromStr for Digest32 {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(BadDigest);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(BadDigest),
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Digest32(out))
    }
}

/// The content address of a blob: the SHA-256 of its bytes, so callers can name a blob in an
/// event before the commit that stores both.
pub type BlobId = Digest32;

/// The content address of `bytes`.
pub fn blob_id(bytes: &[u8]) -> BlobId {
    Digest32(Sha256::digest(bytes).into())
}

/// An event as a caller hands it to the log. Ids and times come from the caller, so that the
/// domain stays deterministic; the log assigns seq, position and the hash chain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewEvent {
    /// UUID v7 in the product.
    pub id: Uuid,
    /// The event's name, e.g. `CustomerTenantCreated` (1 to 255 bytes).
    pub event_type: String,
    /// The version of `data`'s schema, for upcasting by its readers.
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    /// Who did it, opaque to the log (at most 1024 bytes).
    pub actor: String,
    /// The payload, opaque to the log (at most [`crate::MAX_EVENT_DATA`] bytes).
    pub data: Vec<u8>,
}

/// An event as the log holds it: the envelope of the contract.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub stream: StreamId,
    /// 1, 2, 3, ... within its stream, without gaps.
    pub seq: u64,
    /// 1, 2, 3, ... across the whole log in commit order, without gaps when written.
    pub position: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub data: Vec<u8>,
    /// The hash of the stream's previous event, or [`ZERO_HASH`] for seq 1.
    pub prev_hash: Digest32,
    /// SHA-256 over the canonical encoding of every field above (see [`crate::encoding`]).
    pub hash: Digest32,
}

/// What an append expects of its stream's current state; a mismatch is a conflict and nothing
/// of the commit is written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Expected {
    /// The stream has no event yet.
    NoStream,
    /// The stream's last event has exactly this seq.
    At(u64),
    /// Whatever the stream holds.
    Any,
}

/// A unique key, such as a host label (scope `host`) or a username in one tenant (scope
/// `username:{tenant}`). It is held by the stream whose append reserved it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Reservation {
    /// 1 to 128 bytes.
    pub scope: String,
    /// 1 to 512 bytes; normalise (e.g. lowercase) before reserving.
    pub key: String,
}

impl Reservation {
    pub fn new(scope: impl Into<String>, key: impl Into<String>) -> Self {
        Reservation {
            scope: scope.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scope, self.key)
    }
}

/// A data key wrapped by the operator's root key, kept beside the log (never in it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey {
    pub version: u32,
    pub wrapped: Vec<u8>,
}

/// A stored data key given a new wrapping (the operator's root key was rotated): replaced only
/// if it is still stored as `from`, so a rotation cannot overwrite a key that changed under it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyRewrap {
    pub stream: StreamId,
    pub version: u32,
    /// The wrapped bytes the rotation read.
    pub from: Vec<u8>,
    /// The same key wrapped by the new root key.
    pub to: Vec<u8>,
}

/// A stream's state as a caller folded it up to one of its events, kept beside the log so that
/// the next fold can start there instead of at seq 1. Not part of the log: no position, no
/// place in the hash chain or in an audit; derived from the events, replaced by a newer one,
/// deleted with its stream (and copied with the log into backups, where it still matches).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    pub stream: StreamId,
    /// The last event folded into `data` (at least 1).
    pub seq: u64,
    /// That event's hash: a snapshot is stored only if the stream's stored event at `seq` has
    /// it, so it can never describe other events than the ones stored.
    pub hash: Digest32,
    /// Opaque to the log.
    pub data: Vec<u8>,
}

/// Events for one stream with everything that must land atomically with them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamAppend {
    pub stream: StreamId,
    pub expected: Expected,
    /// At least one.
    pub events: Vec<NewEvent>,
    /// Unique keys this stream takes; a key already held (by anyone) is a conflict.
    pub reserve: Vec<Reservation>,
    /// Unique keys this stream gives back; each must be held by this stream.
    pub release: Vec<Reservation>,
    /// Blobs stored under this stream, addressed by [`blob_id`].
    pub blobs: Vec<Vec<u8>>,
    /// Blobs of this stream removed (those no event the caller still serves names, such as a
    /// replaced branding image). Removed before `blobs` are stored, so an append may drop and
    /// store the same content and keep it; dropping a blob the stream does not hold is no error.
    pub drop_blobs: Vec<BlobId>,
    /// Data keys stored for this stream; a version already stored is a conflict.
    pub keys: Vec<WrappedKey>,
}

impl StreamAppend {
    pub fn new(stream: StreamId, expected: Expected) -> Self {
        StreamAppend {
            stream,
            expected,
            events: Vec::new(),
            reserve: Vec::new(),
            release: Vec::new(),
            blobs: Vec::new(),
            drop_blobs: Vec::new(),
            keys: Vec::new(),
        }
    }

    pub fn event(mut self, event: NewEvent) -> Self {
        self.events.push(event);
        self
    }

    pub fn events(mut self, events: impl IntoIterator<Item = NewEvent>) -> Self {
        self.events.extend(events);
        self
    }

    pub fn reserve(mut self, reservation: Reservation) -> Self {
        self.reserve.push(reservation);
        self
    }

    pub fn release(mut self, reservation: Reservation) -> Self {
        self.release.push(reservation);
        self
    }

    pub fn blob(mut self, bytes: Vec<u8>) -> Self {
        self.blobs.push(bytes);
        self
    }

    pub fn drop_blob(mut self, id: BlobId) -> Self {
        self.drop_blobs.push(id);
        self
    }

    pub fn key(mut self, key: WrappedKey) -> Self {
        self.keys.push(key);
        self
    }
}

/// One atomic write: appends to any number of distinct streams and deletions of streams. Either
/// all of it becomes durable or none of it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Commit {
    pub appends: Vec<StreamAppend>,
    /// Streams removed for good with everything they hold: events, reservations, blobs, keys.
    pub delete: Vec<StreamId>,
    /// Stored data keys whose wrapping is replaced; each must still be stored as its `from`
    /// (else [`crate::Error::KeyChanged`], and nothing is written). No event records it: the
    /// key store is not part of the log.
    pub rewrap: Vec<KeyRewrap>,
    /// Snapshots stored (each replacing its stream's older one); each must name a stored event
    /// by its seq and hash (else [`crate::Error::SnapshotMismatch`]) and be newer than the one
    /// stored (else [`crate::Error::SnapshotOutdated`]), and nothing is written.
    pub snapshots: Vec<Snapshot>,
}

impl Commit {
    pub fn new() -> Self {
        Commit::default()
    }

    pub fn append(mut self, append: StreamAppend) -> Self {
        self.appends.push(append);
        self
    }

    pub fn delete(mut self, stream: StreamId) -> Self {
        self.delete.push(stream);
        self
    }

    pub fn rewrap(mut self, rewrap: KeyRewrap) -> Self {
        self.rewrap.push(rewrap);
        self
    }

    pub fn snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshots.push(snapshot);
        self
    }
}

impl From<StreamAppend> for Commit {
    fn from(append: StreamAppend) -> Self {
        Commit::new().append(append)
    }
}

/// A durable commit.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Committed {
    /// The log's head position once this commit was durable: what a reader waits for to see it.
    pub position: u64,
    /// The events as recorded, in position order.
    pub events: Vec<RecordedEvent>,
}

/// The last event of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StreamHead {
    pub seq: u64,
    pub position: u64,
    pub hash: Digest32,
}

/// What walking one stream's chain found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifyReport {
    pub stream: StreamId,
    /// Events checked and found sound, from seq 1 up to the first broken link.
    pub events: u64,
    /// The last sound event's seq and hash (0 and the zero hash for an empty stream).
    pub head_seq: u64,
    pub head_hash: Digest32,
    /// The first event that does not verify, if any.
    pub first_broken: Option<BrokenLink>,
}

impl VerifyReport {
    pub fn is_valid(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Where and why a chain breaks.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BrokenLink {
    pub seq: u64,
    pub reason: String,
}
