//! The read side of idem: projectors tail the event log and keep read models in SQLite (the
//! embedded default) or PostgreSQL, through sqlx.
//!
//! - [`Projections`] starts one projector per [`Projection`] and answers what readiness and
//!   read-your-writes need: checkpoints, lag, quarantined tenants, [`Projections::wait_for`].
//! - [`ReadModels`] is the query side the API reads: customers per MSP, users, access, apps,
//!   tenant settings, the directory change feed and the audit timeline.
//! - [`codec`] turns domain events into log events and back.
//!
//! Every read model can be dropped and rebuilt from the log; nothing here is a source of truth.

mod audit;
pub mod codec;
mod db;
mod directory;
mod error;
mod projection;
mod projector;
mod read;
pub mod workload;

pub use db::Backend;
pub use directory::{FEED_TOMBSTONE_RETENTION, NOT_IN_FEED};
pub use error::{Error, Result};
pub use projection::Projection;
pub use projector::{
    FaultPoint, Faults, Options, Progress, Projections, ProjectorStatus, Quarantined,
    RebuildProgress, Status,
};
pub use read::{
    AccessRow, App, AuditorRole, Change, Changes, CustomerRow, DeviceRow, EnrollmentTokenRow,
    ReadModels, SessionRow, TenantRow, TimelineEntry, UserRow,
};
