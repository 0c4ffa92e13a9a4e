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
/// stopped service; recorded with who asked after it (`operator:uid=0(root),login=1000(alice)`,
/// see `crate::operator_identity`).
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
    read_from(log, 1)
        .await?
        .into_iter()
        .map(|recorded| {
            let event = Event::from_stored(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.data,
            )
            .map_err(|e| ReadError::Decode(recorded.seq, e))?;
            Ok((recorded, event))
        })
        .collect()
}

/// The operator log's events from `from_seq` on, as stored, oldest first.
async fn read_from(log: &RocksLog, from_seq: u64) -> Result<Vec<RecordedEvent>, eventlog::Error> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let next = events.last().map_or(from_seq, |last| last.seq + 1);
        let page = log.read_stream(stream(), next, PAGE).await?;
        let full = page.len() == PAGE;
        events.extend(page);
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
        if read.0 < head {
            for recorded in read_from(log, read.0 + 1).await? {
                read.0 = recorded.seq;
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

#[cfg(test)]
mod tests {
    use super::*;
    use domain::event::{BackupWritten, ReadModelsRebuilt};

    fn new_event(event: impl Into<Event>, at: DateTime<Utc>) -> eventlog::NewEvent {
        projections::codec::encode(&event.into(), Uuid::now_v7(), at, ACTOR).unwrap()
    }

    #[tokio::test]
    async fn a_log_longer_than_a_page_is_read_whole_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path()).unwrap();
        let follower = Follower::default();
        assert_eq!(follower.latest(&log).await.unwrap(), Latest::default());

        // Two and a half pages of rebuilds, with a backup in the middle of the second.
        let start = Utc::now();
        let total = PAGE * 5 / 2;
        let events: Vec<_> = (0..total)
            .map(|i| {
                let at = start + chrono::TimeDelta::seconds(i as i64);
                if i == PAGE + 7 {
                    new_event(
                        BackupWritten {
                            directory: "/b".into(),
                            head_position: 1,
                            events: 1,
                        },
                        at,
                    )
                } else {
                    new_event(
                        ReadModelsRebuilt {
                            projection: "audit".into(),
                            generation: i as u64,
                        },
                        at,
                    )
                }
            })
            .collect();
        for chunk in events.chunks(700) {
            log.append(StreamAppend::new(stream(), Expected::Any).events(chunk.to_vec()))
                .await
                .unwrap();
        }
        let read = read(&log).await.unwrap();
        let seqs: Vec<u64> = read.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
        let backup_at = start + chrono::TimeDelta::seconds((PAGE + 7) as i64);
        let latest = follower.latest(&log).await.unwrap();
        assert_eq!(
            latest.backup.map(|t| t.timestamp()),
            Some(backup_at.timestamp())
        );
        assert_eq!(latest.rotation, None);

        // Only what comes after is read next time.
        let later = start + chrono::TimeDelta::days(1);
        let rotated = domain::event::RootKeyRotated {
            previous_key_id: "a".into(),
            key_id: "b".into(),
        };
        log.append(StreamAppend::new(stream(), Expected::Any).event(new_event(rotated, later)))
            .await
            .unwrap();
        let latest = follower.latest(&log).await.unwrap();
        assert_eq!(
            latest.backup.map(|t| t.timestamp()),
            Some(backup_at.timestamp())
        );
        assert_eq!(
            latest.rotation.map(|t| t.timestamp()),
            Some(later.timestamp())
        );
        assert_eq!(follower.read.lock().await.0, total as u64 + 1);
    }
}
