//! Writes and reads the operator log (`domain::operator`): each operator command that changes
//! the deployment as a whole appends its event there once it has happened, so an auditor
//! replaying the log finds root key rotations, backups, restores and rebuilds beside the
//! tenants' own events.

use chrono::{DateTime, Utc};
use domain::event::Event;
use domain::operator::OPERATOR_LOG;
use eventlog::{EventLog, Expected, RecordedEvent, RocksLog, StreamAppend, StreamId};
use uuid::Uuid;

/// The actor of what the operator asked for, through the control socket or a command run on a
/// stopped service.
pub const ACTOR: &str = "operator";

/// The actor of an operator's command that idemd finished as it started (a root key rotation
/// a stop interrupted).
pub const START_ACTOR: &str = "operator:start";

/// Events read per page.
const PAGE: usize = 1_000;

/// Why an operator action could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the operator log's event does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("event log: {0}")]
    Log(#[from] eventlog::Error),
}

/// The operator log's stream.
pub fn stream() -> StreamId {
    StreamId(OPERATOR_LOG)
}

/// Appends `event` to the operator log as `actor`, durably; answers its position.
pub async fn record(
    log: &RocksLog,
    event: impl Into<Event>,
    actor: &str,
) -> Result<u64, RecordError> {
    let event = event.into();
    let new = projections::codec::encode(&event, Uuid::now_v7(), Utc::now(), actor)?;
    let committed = log
        .append(StreamAppend::new(stream(), Expected::Any).event(new))
        .await?;
    Ok(committed.position)
}

/// The whole operator log, oldest first, each event as stored and decoded.
pub async fn read(log: &RocksLog) -> Result<Vec<(RecordedEvent, Event)>, ReadError> {
    let mut events = Vec::new();
    let mut from_seq = 1;
    loop {
        let page = log.read_stream(stream(), from_seq, PAGE).await?;
        let full = page.len() == PAGE;
        for recorded in page {
            let event = Event::from_stored(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.data,
            )
            .map_err(|e| ReadError::Decode(recorded.seq, e))?;
            from_seq = recorded.seq + 1;
            events.push((recorded, event));
        }
        if !full {
            return Ok(events);
        }
    }
}

/// Why the operator log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("event log: {0}")]
    Log(#[from] eventlog::Error),
    #[error("the operator log's event {0} does not decode: {1}")]
    Decode(u64, domain::event::DecodeError),
}

/// When the operator last backed up and rotated the root key, as this log records it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Latest {
    /// The last `BackupWritten` (a restored log holds those from before its backup only).
    pub backup: Option<DateTime<Utc>>,
    pub rotation: Option<DateTime<Utc>>,
}

/// [`Latest`], kept up with the operator log for `/metrics`: each call costs one seek unless
/// the log has new operator events, which are read once.
#[derive(Default)]
pub struct Follower {
    read: tokio::sync::Mutex<(u64, Latest)>,
}

impl Follower {
    /// What the operator log says now.
    pub async fn latest(&self, log: &RocksLog) -> Result<Latest, eventlog::Error> {
        let mut read = self.read.lock().await;
        let head = log.stream_head(stream()).await?.map_or(0, |h| h.seq);
        while read.0 < head {
            let page = log.read_stream(stream(), read.0 + 1, PAGE).await?;
            let Some(last) = page.last() else { break };
            read.0 = last.seq;
            for recorded in &page {
                // By type and envelope time alone: no event's data is needed.
                match recorded.event_type.as_str() {
                    "BackupWritten" => read.1.backup = Some(recorded.occurred_at),
                    "RootKeyRotated" => read.1.rotation = Some(recorded.occurred_at),
                    _ => {}
                }
            }
        }
        Ok(read.1)
    }
}
