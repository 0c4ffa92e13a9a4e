//! idem's event log: the durable, append-only, hash-chained record that every command of the
//! product writes to, and that every read model, change feed and audit replays from.
//!
//! - One **stream** per tenant, named by a UUID. Each event gets a gap-free `seq` within its
//!   stream and a gap-free `position` across the whole log, in commit order.
//! - Each event's `hash` covers its canonical encoding and its predecessor's hash
//!   ([`encoding`]), so any change to a stored byte breaks the chain; [`verify`] finds where.
//! - A [`Commit`] is atomic across streams, carries expectations, unique [`Reservation`]s,
//!   blobs and wrapped data keys, and returns only once durable (synced WAL, group-committed).
//! - Beside the events, each stream may keep one [`Snapshot`]: a caller's state folded up to
//!   one of its events, so that a fold need not start at seq 1.
//! - Deleting a stream removes its events, index, reservations, blobs, keys and snapshot for
//!   good.
//!
//! The interface is the [`EventLog`] trait; [`RocksLog`] implements it on RocksDB. The
//! `testkit` feature exports the conformance suite every implementation must pass.
//!
//! This crate knows bytes and streams, not identity: what a tenant, a user or an event type
//! means is the `domain` crate's business.

pub mod encoding;
mod error;
mod log;
mod model;
mod rocks;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Location, Result};
pub use log::{EventLog, verify};
pub use model::{
    BadDigest, BlobId, BrokenLink, Commit, Committed, Digest32, Expected, KeyRewrap, NewEvent,
    RecordedEvent, Reservation, Snapshot, StreamAppend, StreamHead, StreamId, VerifyReport,
    WrappedKey, ZERO_HASH, blob_id,
};
pub use rocks::{BackupReport, RestoreReport, RocksLog, RocksOptions, WriteStats};

/// The largest `data` of one event. Large values (images) belong in blobs.
pub const MAX_EVENT_DATA: usize = 1 << 20;
/// The most events one commit may carry.
pub const MAX_COMMIT_EVENTS: usize = 10_000;
/// The most bytes of event data and blobs one commit may carry.
pub const MAX_COMMIT_BYTES: usize = 64 << 20;
