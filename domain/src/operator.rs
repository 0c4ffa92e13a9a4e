//! The operator log: what the operator did to the whole deployment (root key rotations,
//! backups, restores, read model rebuilds), as events in a stream of its own beside the
//! tenants' streams. No tenant owns it, no tenant route reaches it, and no deletion removes
//! it; the operator reads it with `idemd export operator` and `idemd verify`.
//!
//! Its events hold no secret and nothing of a tenant: key ids are public fingerprints, and a
//! backup is named by its directory.

use uuid::Uuid;

/// The operator log's stream id: the nil UUID, which no tenant has (tenant ids are UUID v7).
pub const OPERATOR_LOG: Uuid = Uuid::nil();

/// What names the operator log where a tenant's id or host label is expected (`idemd export`,
/// `verify`); reserved, so no tenant can be named so.
pub const OPERATOR_LOG_NAME: &str = "operator";

/// The operator log's event types, which belong in no tenant's stream.
pub const OPERATOR_EVENTS: &[&str] = &[
    "RootKeyRotated",
    "BackupWritten",
    "BackupRestored",
    "ReadModelsRebuilt",
];
