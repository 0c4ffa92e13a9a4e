//! The log's errors: conflicts a caller can act on, invalid input, damage found in stored bytes
//! (always naming where), and failures of the storage underneath.

use std::fmt;

use crate::model::{Expected, Reservation, StreamId};

/// Where in the log a stored value sits: as much as the key tells, even when the value is
/// unreadable.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Location {
    pub stream: Option<StreamId>,
    pub seq: Option<u64>,
    pub position: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::with_capacity(3);
        if let Some(stream) = self.stream {
            parts.push(format!("stream {stream}"));
        }
        if let Some(seq) = self.seq {
            parts.push(format!("seq {seq}"));
        }
        if let Some(position) = self.position {
            parts.push(format!("position {position}"));
        }
        if parts.is_empty() {
            f.write_str("an unknown place")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is not where the append expected it; nothing was written.
    #[error("stream {stream} is at seq {current}, but the append expected {expected:?}")]
    WrongExpectedSeq {
        stream: StreamId,
        expected: Expected,
        current: u64,
    },

    /// A unique key is already held; nothing was written.
    #[error("{reservation} is already taken")]
    ReservationTaken { reservation: Reservation },

    /// A release named a key that this stream does not hold; nothing was written.
    #[error("{reservation} is not held by stream {stream}")]
    ReservationNotHeld {
        stream: StreamId,
        reservation: Reservation,
    },

    /// A data key of this version is already stored for the stream; nothing was written.
    #[error("data key version {version} of stream {stream} is already stored")]
    KeyExists { stream: StreamId, version: u32 },

    /// A data key to be rewrapped is no longer stored as the rewrap expected (changed, or its
    /// stream deleted); nothing was written.
    #[error("data key version {version} of stream {stream} changed since it was read")]
    KeyChanged { stream: StreamId, version: u32 },

    /// A snapshot names an event the stream does not hold (no event at its seq, or one with
    /// another hash); nothing was written.
    #[error("stream {stream} holds no event at seq {seq} with the snapshot's hash")]
    SnapshotMismatch { stream: StreamId, seq: u64 },

    /// A snapshot of the stream at `stored` or later is already stored; nothing was written.
    #[error("stream {stream} already has a snapshot at seq {stored}, not older than {seq}")]
    SnapshotOutdated {
        stream: StreamId,
        seq: u64,
        stored: u64,
    },

    /// The stream was deleted; it takes no more writes.
    #[error("stream {stream} was deleted")]
    StreamDeleted { stream: StreamId },

    /// The commit is malformed (empty, oversized, duplicate streams, ...); nothing was written.
    #[error("invalid commit: {0}")]
    Invalid(String),

    /// A stored value does not decode or does not match its hash.
    #[error("corrupt event at {at}: {reason}")]
    Corrupt { at: Location, reason: String },

    /// A stored event uses an envelope format this build cannot read.
    #[error("event at {at} is in envelope format {version}, which this build cannot read")]
    UnsupportedFormat { at: Location, version: u8 },

    /// The storage engine failed (I/O, or damage it detected itself).
    #[error("storage failure while {context}: {source}")]
    Storage {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A backup cannot be written where it was asked to go; nothing was written there.
    #[error("cannot back up to {path}: {reason}")]
    BackupTarget { path: String, reason: String },

    /// A log cannot be restored where it was asked to go; nothing was written there.
    #[error("cannot restore into {path}: {reason}")]
    RestoreTarget { path: String, reason: String },

    /// A directory given to restore from is not a backup written by [`crate::RocksLog::backup`].
    #[error("cannot restore from {path}: {reason}")]
    NotABackup { path: String, reason: String },

    /// The log's writer has stopped (the log is being closed).
    #[error("the event log is closed")]
    Closed,
}

impl Error {
    /// True for the errors a caller resolves by re-reading and deciding again (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::WrongExpectedSeq { .. }
                | Error::ReservationTaken { .. }
                | Error::ReservationNotHeld { .. }
                | Error::KeyExists { .. }
                | Error::KeyChanged { .. }
                | Error::SnapshotOutdated { .. }
        )
    }

    pub(crate) fn storage(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Storage {
            context,
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
