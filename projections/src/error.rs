//! The errors of the read side.

/// What can go wrong projecting or reading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The read-model database failed or refused a statement.
    #[error("read-model database: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("read-model migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The event log failed.
    #[error("event log: {0}")]
    Log(#[from] eventlog::Error),
    /// Files of the SQLite read models could not be listed or removed.
    #[error("read-model files: {0}")]
    Io(#[from] std::io::Error),
    /// Configuration that cannot work (bad URL, bad schema prefix).
    #[error("read-model configuration: {0}")]
    Config(String),
    /// One event of one tenant could not be applied; the projector quarantines that tenant.
    #[error("cannot apply {event_type} (seq {seq}): {reason}")]
    Apply {
        event_type: String,
        seq: u64,
        reason: String,
    },
    /// A value read back from a read model is not what the projection writes.
    #[error("read model holds an unexpected value: {0}")]
    Corrupt(String),
    /// An injected fault (tests of crash recovery).
    #[error("injected fault at {0:?}")]
    Injected(crate::FaultPoint),
    /// A read model records another log's identity: it was projected from another log.
    #[error(
        "the {projection} read model was projected from the log {projected_from}, not from this \
         log ({log}): it belongs to another deployment (a database or read models copied or \
         shared by mistake?); rebuild it from this log with `idemd rebuild`"
    )]
    OtherLog {
        projection: &'static str,
        projected_from: uuid::Uuid,
        log: uuid::Uuid,
    },
    /// A read model has applied more of the log than the log holds: it was projected from
    /// another log, or from this one before it was restored from a backup.
    #[error(
        "the {projection} read model has applied the log up to position {checkpoint}, but the \
         log ends at {head}: it was projected from another log, or from this one before it \
         was restored from a backup; rebuild it from this log with `idemd rebuild`"
    )]
    AheadOfLog {
        projection: &'static str,
        checkpoint: u64,
        head: u64,
    },
    /// The projections were shut down.
    #[error("projections are shut down")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
