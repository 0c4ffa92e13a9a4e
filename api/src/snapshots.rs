//! Snapshots of tenants' folded states (see `command::History`): when the next one is due, and
//! its writing. The command that finds one due only copies the state, under the tenant's turn;
//! a task of its own encodes the copy (on a blocking thread: ~25 ms for a customer of 10,000
//! users) and commits it, while the tenant's next commands go on. The log stores a snapshot only
//! for the stored event it names and only in place of an older one, so a write that comes late
//! (another one overtook it, the tenant was deleted meanwhile) changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use domain::ids::TenantId;
use domain::snapshot::TenantState;
use eventlog::{Commit, Digest32, EventLog, RocksLog, StreamId};
use tokio::sync::watch;

use crate::metrics::{Counter, Metrics};

/// Events folded since the stream's last snapshot after which a new one is written: a fold
/// that does not find the tenant in the cache then reads this many events at most (plus those
/// written since), whatever the stream's length, unless the state is large (below).
pub const SNAPSHOT_EVERY: u64 = 4096;

/// Each snapshot is one commit of the state's size (~500 bytes per directory user): for a
/// large state the next one waits until the events since the last are worth this many bytes
/// of it each, so that snapshots never write more than a fraction of what the events do.
pub const SNAPSHOT_BYTES_PER_EVENT: u64 = 64;

/// How many events after a snapshot of `size` bytes the next one is due.
pub fn interval(size: usize) -> u64 {
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    SNAPSHOT_EVERY.max(size / SNAPSHOT_BYTES_PER_EVENT)
}

/// A copy of a tenant's folded state as of one event of its stream, to be stored as the
/// stream's snapshot.
pub struct Pending {
    pub stream: StreamId,
    /// The event the state was folded up to, and its hash.
    pub seq: u64,
    pub hash: Digest32,
    pub state: TenantState,
    /// Where the encoded size goes once known: the history the copy was taken from times its
    /// next snapshot by it.
    pub size: Arc<AtomicUsize>,
}

/// A snapshot written, or found outdated by one the log already holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stored {
    /// False when the log holds a snapshot as new or newer.
    pub written: bool,
    /// The encoded state's size in bytes.
    pub size: usize,
}

/// Why a snapshot was not stored.
#[derive(Debug, thiserror::Error)]
pub enum NotStored {
    #[error("the state does not encode: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("the encoding's thread ended early: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Log(#[from] eventlog::Error),
}

/// Encodes `pending` on a blocking thread and commits it as its stream's snapshot.
pub async fn write<L: EventLog>(log: &L, pending: Pending) -> Result<Stored, NotStored> {
    let Pending {
        stream,
        seq,
        hash,
        state,
        size,
    } = pending;
    let data =
        tokio::task::spawn_blocking(move || domain::snapshot::encode_state(&state)).await??;
    let encoded = data.len();
    size.store(encoded, Ordering::Relaxed);
    let snapshot = eventlog::Snapshot {
        stream,
        seq,
        hash,
        data,
    };
    match log.commit(Commit::new().snapshot(snapshot)).await {
        Ok(_) => Ok(Stored {
            written: true,
            size: encoded,
        }),
        Err(eventlog::Error::SnapshotOutdated { .. }) => Ok(Stored {
            written: false,
            size: encoded,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Snapshot writes running in tasks of their own. The service waits for them before it closes
/// the log.
#[derive(Clone)]
pub struct Writes {
    running: Arc<watch::Sender<usize>>,
}

impl Default for Writes {
    fn default() -> Writes {
        Writes {
            running: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// One running write; counted down when its task ends, however it ends.
struct Running(Arc<watch::Sender<usize>>);

impl Running {
    fn start(running: &Arc<watch::Sender<usize>>) -> Running {
        running.send_modify(|n| *n += 1);
        Running(running.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Writes {
    /// Writes `pending` for `tenant` in a task of its own, counting its outcome in `metrics`
    /// (`idem_snapshots_total{outcome}`). A failure costs only later folds their shortcut:
    /// the history tries again once as many events more were folded.
    pub fn spawn(
        &self,
        log: Arc<RocksLog>,
        metrics: Arc<Metrics>,
        tenant: TenantId,
        pending: Pending,
    ) {
        let running = Running::start(&self.running);
        tokio::spawn(async move {
            // Declared after the count, so dropped before it: once no write is counted, none
            // holds the log, and the service can close it.
            let _running = running;
            let (log, metrics) = (log, metrics);
            let seq = pending.seq;
            let outcome = match write(log.as_ref(), pending).await {
                Ok(Stored { written: true, .. }) => "written",
                Ok(Stored { written: false, .. }) => "outdated",
                Err(e) => {
                    tracing::warn!(%tenant, seq, error = %e, "a snapshot of the tenant's state was not stored");
                    "failed"
                }
            };
            metrics.count(Counter::Snapshots, outcome);
        });
    }

    /// Resolves once no write is running.
    pub async fn idle(&self) {
        let mut running = self.running.subscribe();
        let _ = running.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::tests::msp_created as created;
    use eventlog::{Expected, StreamAppend};
    use uuid::Uuid;

    /// A log holding `events` events of a new MSP's stream (the signup, then anything).
    async fn stream_of(log: &RocksLog, events: usize) -> (TenantId, StreamId) {
        let tenant = TenantId(Uuid::now_v7());
        let stream = StreamId(tenant.0);
        let first = created(tenant);
        let new: Vec<_> = (0..events)
            .map(|_| {
                projections::codec::encode(&first, Uuid::now_v7(), chrono::Utc::now(), "test")
                    .unwrap()
            })
            .collect();
        log.append(StreamAppend::new(stream, Expected::NoStream).events(new))
            .await
            .unwrap();
        (tenant, stream)
    }

    /// The state after the signup alone, as of `seq` of `stream`.
    async fn pending(log: &RocksLog, tenant: TenantId, seq: u64) -> Pending {
        let stream = StreamId(tenant.0);
        let event = log.read_stream(stream, seq, 1).await.unwrap().remove(0);
        let state = domain::msp::MspTenant::replay([&created(tenant)])
            .unwrap()
            .unwrap();
        Pending {
            stream,
            seq,
            hash: event.hash,
            state: TenantState::Msp(state),
            size: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_write_stores_the_copy_and_a_late_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path()).unwrap();
        let (tenant, stream) = stream_of(&log, 5).await;

        let newer = pending(&log, tenant, 4).await;
        let size = newer.size.clone();
        let stored = write(&log, newer).await.unwrap();
        assert!(stored.written);
        let snapshot = log.snapshot(stream).await.unwrap().unwrap();
        assert_eq!(snapshot.seq, 4);
        assert_eq!(size.load(Ordering::Relaxed), snapshot.data.len());
        assert_eq!(stored.size, snapshot.data.len());
        assert!(matches!(
            domain::snapshot::decode(&snapshot.data).unwrap(),
            TenantState::Msp(state) if state.id == tenant
        ));

        // A copy taken earlier whose writing ends later is outdated: the newer one stays.
        let older = pending(&log, tenant, 2).await;
        assert!(!write(&log, older).await.unwrap().written);
        assert_eq!(log.snapshot(stream).await.unwrap().unwrap(), snapshot);

        // A copy of a tenant deleted meanwhile is refused by the log, and nothing is stored.
        let late = pending(&log, tenant, 5).await;
        log.commit(Commit::new().delete(stream)).await.unwrap();
        assert!(matches!(
            write(&log, late).await,
            Err(NotStored::Log(eventlog::Error::StreamDeleted { .. }))
        ));
        assert_eq!(log.snapshot(stream).await.unwrap(), None);
    }

    #[tokio::test]
    async fn writes_in_tasks_are_counted_and_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(RocksLog::open(dir.path()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let writes = Writes::default();
        let (tenant, stream) = stream_of(&log, 3).await;
        let (other, _) = stream_of(&log, 1).await;

        writes.spawn(
            log.clone(),
            metrics.clone(),
            tenant,
            pending(&log, tenant, 3).await,
        );
        // Named by a seq its stream does not have: the log refuses it.
        let mut wrong = pending(&log, other, 1).await;
        wrong.seq = 9;
        writes.spawn(log.clone(), metrics.clone(), other, wrong);
        writes.idle().await;

        assert_eq!(log.snapshot(stream).await.unwrap().unwrap().seq, 3);
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(
            text.contains("idem_snapshots_total{outcome=\"written\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("idem_snapshots_total{outcome=\"failed\"} 1"),
            "{text}"
        );
        // Every task has let go of the log.
        assert_eq!(Arc::strong_count(&log), 1);
    }
}
