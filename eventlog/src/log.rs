//! The `EventLog` trait: the log's whole public interface, which every backend implements and
//! the conformance suite (`testkit`) checks; and `verify`, written once on top of it.

use std::future::Future;

use tokio::sync::watch;

use crate::error::Result;
use crate::model::{
    BlobId, BrokenLink, Commit, Committed, RecordedEvent, Reservation, Snapshot, StreamAppend,
    StreamHead, StreamId, VerifyReport, WrappedKey, ZERO_HASH,
};

/// A durable, append-only log of hash-chained events, one stream per tenant.
///
/// Writes are atomic commits that return only once durable. Reads see every durable commit.
pub trait EventLog: Send + Sync + 'static {
    /// Writes `commit` atomically and durably, or nothing of it.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<Committed>> + Send;

    /// A commit of one stream append.
    fn append(&self, append: StreamAppend) -> impl Future<Output = Result<Committed>> + Send {
        self.commit(Commit::from(append))
    }

    /// Up to `limit` events of `stream` with seq ≥ `from_seq`, in seq order.
    fn read_stream(
        &self,
        stream: StreamId,
        from_seq: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Up to `limit` events of the whole log with position ≥ `from_position`, in position order.
    /// Deleted streams leave holes in the positions, which this skips.
    fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// The last event of `stream`, or `None` if it has none (or was deleted).
    fn stream_head(
        &self,
        stream: StreamId,
    ) -> impl Future<Output = Result<Option<StreamHead>>> + Send;

    /// The position of the newest durable event (0 for an empty log).
    fn head_position(&self) -> u64;

    /// This log's identity: made once when the log is created, the same for its whole life and
    /// in every copy of it (backups, restores), and different for any other log. Whatever is
    /// derived from a log (read models) records it, to tell its own log from another one.
    fn log_id(&self) -> uuid::Uuid;

    /// A receiver of the head position, updated after each durable commit: await `changed()` to
    /// learn of the next commit without polling.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Why the log takes no more writes, once a write failed in a way only reopening it can
    /// settle (a failed journal write or sync: whether its bytes reached the disk is unknown,
    /// and recovery decides). Every commit fails from then on; reads go on. `None` while
    /// writes work.
    fn write_failure(&self) -> Option<String>;

    /// True once `stream` has been deleted.
    fn is_deleted(&self, stream: StreamId) -> impl Future<Output = Result<bool>> + Send;

    /// The stream holding `reservation`, if any.
    fn reservation_owner(
        &self,
        reservation: &Reservation,
    ) -> impl Future<Output = Result<Option<StreamId>>> + Send;

    /// A blob of `stream` by its content address.
    fn blob(
        &self,
        stream: StreamId,
        id: BlobId,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Every wrapped data key of `stream`, by ascending version.
    fn data_keys(&self, stream: StreamId) -> impl Future<Output = Result<Vec<WrappedKey>>> + Send;

    /// The newest snapshot stored for `stream` (`None` if none, or once it is deleted).
    fn snapshot(&self, stream: StreamId) -> impl Future<Output = Result<Option<Snapshot>>> + Send;
}

/// How many events `verify` reads at a time.
const VERIFY_PAGE: usize = 4096;

/// Walks `stream` from seq 1 and reports the first broken link: an event that does not decode,
/// whose hash does not match its bytes, whose `prev_hash` is not its predecessor's hash, or
/// whose seq or stream is not where it is stored.
pub async fn verify<L: EventLog + ?Sized>(log: &L, stream: StreamId) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        stream,
        events: 0,
        head_seq: 0,
        head_hash: ZERO_HASH,
        first_broken: None,
    };
    loop {
        let from = report.head_seq + 1;
        let (page, damage) = match log.read_stream(stream, from, VERIFY_PAGE).await {
            Ok(page) if page.is_empty() => return Ok(report),
            Ok(page) => (page, None),
            Err(err) => {
                let Some((seq, reason)) = damage(&err, from) else {
                    return Err(err);
                };
                // The page failed at `seq`: the events before it may still be sound.
                let before = usize::try_from(seq.saturating_sub(from)).unwrap_or(usize::MAX);
                let sound = match before {
                    0 => Vec::new(),
                    n => log.read_stream(stream, from, n).await.unwrap_or_default(),
                };
                (sound, Some(BrokenLink { seq, reason }))
            }
        };
        for event in &page {
            if let Some(reason) = link_fault(&report, stream, event) {
                report.first_broken = Some(BrokenLink {
                    seq: report.head_seq + 1,
                    reason,
                });
                return Ok(report);
            }
            report.events += 1;
            report.head_seq = event.seq;
            report.head_hash = event.hash;
        }
        if let Some(mut broken) = damage {
            // If the prefix re-read came up short, the break is where it stopped.
            broken.seq = broken.seq.min(report.head_seq + 1);
            report.first_broken = Some(broken);
            return Ok(report);
        }
    }
}

/// The seq and description of stored damage, or `None` for errors that are not damage.
fn damage(err: &crate::Error, from: u64) -> Option<(u64, String)> {
    match err {
        crate::Error::Corrupt { at, reason } => Some((at.seq.unwrap_or(from), reason.clone())),
        crate::Error::UnsupportedFormat { at, version } => Some((
            at.seq.unwrap_or(from),
            format!("unsupported envelope format {version}"),
        )),
        _ => None,
    }
}

/// Why `event` cannot follow the sound prefix summarised by `report`, if it cannot.
fn link_fault(report: &VerifyReport, stream: StreamId, event: &RecordedEvent) -> Option<String> {
    let expected_seq = report.head_seq + 1;
    if event.stream != stream {
        return Some(format!("event belongs to stream {}", event.stream));
    }
    if event.seq != expected_seq {
        return Some(format!(
            "seq {expected_seq} is missing (next stored is {})",
            event.seq
        ));
    }
    if event.prev_hash != report.head_hash {
        return Some(format!(
            "prev_hash {} does not match the previous event's hash {}",
            event.prev_hash, report.head_hash
        ));
    }
    None
}
