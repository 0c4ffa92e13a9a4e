//! The single writer. It takes commits from a queue, checks each against what is on disk plus
//! what earlier commits will write (those of the same group, and of groups written but not yet
//! finished), and writes the whole group as one RocksDB batch to the journal: group commit. It
//! never waits on a timer. When it is free it takes whatever is queued, so a lone writer is
//! written at once, and writers that arrive during a sync share the next one.
//!
//! Syncing the record, applying the batch to RocksDB (with RocksDB's own WAL off) and
//! answering is the [`pipeline`](super::pipeline)'s part: a lone commit with nothing ahead of it
//! is finished here at once; other groups go to the syncer thread while this one stages the
//! next group.
//!
//! A commit that fails a check is answered with its error and contributes nothing to the batch;
//! the other commits of its group are unaffected. Every answer is sent only after the group
//! and every group before it are durable, so nobody learns of a conflict with a write that is
//! not yet durable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{oneshot, watch};

use super::journal::Journal;
use super::maintenance::{self, Compaction};
use super::pipeline::{self, Finisher, Progress, Written};
use super::{Cf, Shared};
use crate::encoding::{self, keys};
use crate::error::{Error, Location, Result};
use crate::model::{
    Commit, Committed, Expected, KeyRewrap, RecordedEvent, Snapshot, StreamAppend, StreamHead,
    StreamId, ZERO_HASH, blob_id,
};
use crate::{MAX_COMMIT_BYTES, MAX_COMMIT_EVENTS, MAX_EVENT_DATA};

pub(crate) struct Request {
    pub(crate) commit: Commit,
    pub(crate) reply: oneshot::Sender<Result<Committed>>,
    /// For each stream the commit deletes, its stream index as read before the commit was
    /// queued: the committer then reads only what was appended since, instead of walking a
    /// large stream's whole index while every writer waits for it.
    pub(crate) known_index: HashMap<StreamId, Vec<(u64, u64)>>,
}

/// Heads of recently written streams kept in memory, so that an append needs no read of the
/// stream index. Bounded: an idle tenant costs nothing once evicted.
const HEAD_CACHE_ENTRIES: usize = 100_000;

/// A group stops growing at this many events (a single larger commit still goes alone).
const GROUP_MAX_EVENTS: usize = 20_000;
/// ... or this many bytes of payload.
const GROUP_MAX_BYTES: usize = 64 << 20;
/// Groups written but not finished at most: past this the committer waits for the syncer, so
/// a slow disk holds back staging instead of piling up work in memory.
const MAX_UNFINISHED_GROUPS: usize = 4;

/// The head position recorded on disk, checked against the newest event actually stored.
pub(crate) fn recorded_head(shared: &Shared) -> Result<u64> {
    let meta = shared.cf(Cf::Meta)?;
    let head = match shared
        .db
        .get_pinned_cf(meta, keys::HEAD)
        .map_err(|e| Error::storage("reading the log head", e))?
    {
        None => 0,
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| Error::Corrupt {
                at: Location::default(),
                reason: format!("the log head record has {} bytes", bytes.len()),
            })?;
            u64::from_be_bytes(bytes)
        }
    };
    let mut iter = shared.db.raw_iterator_cf(shared.cf(Cf::Events)?);
    iter.seek_to_last();
    if let Some(key) = iter.key() {
        let last = keys::parse_event(key).map(|(position, _, _)| position);
        if last.is_none_or(|last| last > head) {
            return Err(Error::Corrupt {
                at: Location {
                    position: last,
                    ..Location::default()
                },
                reason: format!("the log holds an event beyond its recorded head {head}"),
            });
        }
    }
    iter.status()
        .map_err(|e| Error::storage("reading the last event", e))?;
    Ok(head)
}

pub(crate) fn start(
    shared: Arc<Shared>,
    head: u64,
    head_tx: watch::Sender<u64>,
    maintenance: mpsc::Sender<maintenance::Job>,
    journal: Journal,
    progress: Arc<Progress>,
) -> Result<(mpsc::Sender<Request>, JoinHandle<()>)> {
    let (sender, queue) = mpsc::channel();
    let finisher = Arc::new(Finisher {
        shared: Arc::clone(&shared),
        head_tx,
        maintenance: maintenance.clone(),
        progress,
    });
    let (syncer, syncer_thread) = pipeline::start_syncer(Arc::clone(&finisher))?;
    let committer = Committer {
        shared,
        queue,
        head,
        maintenance,
        heads: HashMap::new(),
        journal,
        finisher,
        syncer: Some((syncer, syncer_thread)),
        written: 0,
        unfinished: VecDeque::new(),
    };
    let thread = std::thread::Builder::new()
        .name("eventlog-committer".into())
        .spawn(move || committer.run())
        .map_err(|e| Error::storage("starting the committer thread", e))?;
    Ok((sender, thread))
}

struct Committer {
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Request>,
    /// The newest position written to the journal (durable once its group is finished).
    head: u64,
    maintenance: mpsc::Sender<maintenance::Job>,
    /// Heads of live streams as RocksDB holds them. Only this thread writes, so the cache
    /// cannot go stale: it takes a group's heads once the group is finished, and a deleted
    /// stream is removed from it.
    heads: HashMap<StreamId, StreamHead>,
    journal: Journal,
    finisher: Arc<Finisher>,
    /// Finishes groups handed over while the committer stages the next ones.
    syncer: Option<(mpsc::Sender<Written>, JoinHandle<()>)>,
    /// Groups written so far (the number of the newest).
    written: u64,
    /// What each group written but not known to be finished changes, oldest first: staging
    /// reads through these to the heads cache and RocksDB.
    unfinished: VecDeque<(u64, Overlay)>,
}

impl Committer {
    fn run(mut self) {
        while let Ok(first) = self.queue.recv() {
            let mut size = commit_size(&first.commit);
            let mut group = vec![first];
            while size.0 < GROUP_MAX_EVENTS && size.1 < GROUP_MAX_BYTES {
                let Ok(next) = self.queue.try_recv() else {
                    break;
                };
                let next_size = commit_size(&next.commit);
                size = (size.0 + next_size.0, size.1 + next_size.1);
                group.push(next);
            }
            self.commit_group(group);
        }
        // Closing: let the syncer finish, then retire the journal, so that a log closed
        // cleanly replays nothing at open.
        if let Some((syncer, thread)) = self.syncer.take() {
            drop(syncer);
            let _ = thread.join();
        }
        if let Some(failure) = self.finisher.progress.failure() {
            self.journal.fail(&failure);
        }
        if let Some(chore) = self.journal.close() {
            let _ = self.maintenance.send(maintenance::Job::Journal(chore));
        }
    }

    /// Takes the heads of the groups finished since the last call into the cache.
    fn collect_finished(&mut self, finished: u64) {
        while self
            .unfinished
            .front()
            .is_some_and(|(number, _)| *number <= finished)
        {
            if let Some((_, overlay)) = self.unfinished.pop_front() {
                self.remember(overlay);
            }
        }
    }

    /// Waits until every group written is finished.
    fn drain(&mut self) {
        let finished = self.finisher.progress.wait_for(self.written);
        self.collect_finished(finished);
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        // A deletion reads the stream's stored index and must leave nothing of the stream in
        // the journal segment after its own: it waits for the groups before it, and the
        // groups after it wait for it to be finished and the journal to move on.
        let deletes = group.iter().any(|r| !r.commit.delete.is_empty());
        // Any other group waits only while MAX_UNFINISHED_GROUPS are unfinished already.
        let must_be_finished = if deletes {
            self.written
        } else {
            (self.written + 1).saturating_sub(MAX_UNFINISHED_GROUPS as u64)
        };
        let finished = self.finisher.progress.wait_for(must_be_finished);
        self.collect_finished(finished);
        let lone = group.len() == 1 && self.unfinished.is_empty();

        let mut pending = Overlay::default();
        let mut batch = WriteBatch::default();
        let mut next_head = self.head;
        let mut answers = Vec::with_capacity(group.len());
        let mut compactions = Vec::new();
        let durable = Durable {
            shared: &self.shared,
            heads: &self.heads,
            unfinished: &self.unfinished,
        };
        for request in group {
            let mut known = request.known_index;
            let staged = validate(&request.commit)
                .and_then(|()| stage(&durable, &pending, next_head, request.commit, &mut known));
            let answer = match staged {
                Ok(staged) => match staged.write_into(&self.shared, &mut batch) {
                    Ok(()) => {
                        next_head = staged.head;
                        pending.merge(staged.delta);
                        compactions.extend(staged.compactions);
                        Ok(Committed {
                            position: staged.head,
                            events: staged.events,
                        })
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            answers.push((request.reply, answer));
        }

        if let Some(failure) = self.finisher.progress.failure() {
            self.journal.fail(&failure);
        }
        let (record, chores) = if batch.is_empty() {
            (Ok(None), Vec::new())
        } else {
            match self.write(&mut batch, next_head) {
                Ok((record, chores)) => (Ok(Some(record)), chores),
                Err(e) => (Err(e), Vec::new()),
            }
        };
        if record.is_ok() {
            self.head = next_head;
        }
        self.written += 1;
        self.unfinished.push_back((self.written, pending));
        let written = Written {
            number: self.written,
            record,
            batch,
            head: self.head,
            answers,
            chores,
            compactions,
        };
        let handed_over = match (&self.syncer, lone || deletes) {
            (Some((syncer, _)), false) => syncer.send(written).map_err(|e| e.0),
            (_, _) => Err(written),
        };
        if let Err(written) = handed_over {
            self.finisher.finish(vec![written]);
        }
        if deletes {
            self.drain();
            // The deleted streams' data is in the journal too: moving to a clean segment lets
            // the maintenance thread zero every segment that may hold it.
            if self.finisher.progress.failure().is_none() {
                for chore in self.journal.rotate_for_erasure() {
                    let _ = self.maintenance.send(maintenance::Job::Journal(chore));
                }
            }
        }
    }

    /// Keeps the heads a durable group wrote, and forgets the streams it deleted.
    fn remember(&mut self, written: Overlay) {
        if self.heads.len() + written.heads.len() > HEAD_CACHE_ENTRIES {
            self.heads.clear();
        }
        self.heads.extend(written.heads);
        for stream in &written.deleted {
            self.heads.remove(stream);
        }
    }

    /// Writes the group's batch to the journal, not synced yet. The error is a message,
    /// because every commit of the group gets its own copy.
    fn write(
        &mut self,
        batch: &mut WriteBatch,
        head: u64,
    ) -> Result<(super::journal::Unsynced, Vec<super::journal::Chore>), String> {
        if head != self.head {
            let meta = self.shared.cf(Cf::Meta).map_err(|e| e.to_string())?;
            batch.put_cf(meta, keys::HEAD, head.to_be_bytes());
        }
        self.journal.write(batch.data())
    }
}

/// Options for RocksDB writes: the journal has made them durable already.
pub(crate) fn unlogged() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    options
}

/// (events, bytes of payload) of a commit, for sizing groups.
fn commit_size(commit: &Commit) -> (usize, usize) {
    let rewrapped = commit.rewrap.iter().map(|r| r.to.len()).sum::<usize>()
        + commit.snapshots.iter().map(|s| s.data.len()).sum::<usize>();
    commit
        .appends
        .iter()
        .fold((0, rewrapped), |(events, bytes), a| {
            (
                events + a.events.len(),
                bytes
                    + a.events.iter().map(|e| e.data.len()).sum::<usize>()
                    + a.blobs.iter().map(Vec::len).sum::<usize>(),
            )
        })
}

/// Checks a commit's shape: everything that does not depend on stored state.
fn validate(commit: &Commit) -> Result<()> {
    let invalid = |reason: String| Err(Error::Invalid(reason));
    if commit.appends.is_empty()
        && commit.delete.is_empty()
        && commit.rewrap.is_empty()
        && commit.snapshots.is_empty()
    {
        return invalid("a commit needs at least one append, deletion, rewrap or snapshot".into());
    }
    let (events, bytes) = commit_size(commit);
    if events > MAX_COMMIT_EVENTS {
        return invalid(format!(
            "{events} events in one commit; at most {MAX_COMMIT_EVENTS}"
        ));
    }
    if bytes > MAX_COMMIT_BYTES {
        return invalid(format!(
            "{bytes} bytes in one commit; at most {MAX_COMMIT_BYTES}"
        ));
    }
    let mut streams = HashSet::new();
    for append in &commit.appends {
        if !streams.insert(append.stream) {
            return invalid(format!("stream {} appears twice", append.stream));
        }
        validate_append(append)?;
    }
    let mut deleted = HashSet::new();
    for stream in &commit.delete {
        if streams.contains(stream) {
            return invalid(format!("stream {stream} is both appended to and deleted"));
        }
        if !deleted.insert(*stream) {
            return invalid(format!("stream {stream} is deleted twice"));
        }
    }
    let mut rewrapped = HashSet::new();
    for rewrap in &commit.rewrap {
        let (stream, version) = (rewrap.stream, rewrap.version);
        if deleted.contains(&stream) {
            return invalid(format!("stream {stream} is both rewrapped and deleted"));
        }
        if !rewrapped.insert((stream, version)) {
            return invalid(format!(
                "data key version {version} of stream {stream} is rewrapped twice"
            ));
        }
        if rewrap.to.is_empty() {
            return invalid(format!(
                "the new wrapping of data key version {version} of stream {stream} is empty"
            ));
        }
    }
    let mut snapshotted = HashSet::new();
    for snapshot in &commit.snapshots {
        let stream = snapshot.stream;
        if deleted.contains(&stream) {
            return invalid(format!("stream {stream} is both snapshotted and deleted"));
        }
        if !snapshotted.insert(stream) {
            return invalid(format!("stream {stream} is snapshotted twice"));
        }
        if snapshot.seq == 0 {
            return invalid(format!("a snapshot of stream {stream} at seq 0"));
        }
    }
    Ok(())
}

fn validate_append(append: &StreamAppend) -> Result<()> {
    let invalid = |reason: String| Err(Error::Invalid(reason));
    if append.events.is_empty() {
        return invalid(format!("the append to {} has no events", append.stream));
    }
    for event in &append.events {
        if event.event_type.is_empty() || event.event_type.len() > encoding::MAX_EVENT_TYPE {
            return invalid(format!(
                "event type must be 1 to {} bytes, got {}",
                encoding::MAX_EVENT_TYPE,
                event.event_type.len()
            ));
        }
        if event.actor.len() > encoding::MAX_ACTOR {
            return invalid(format!(
                "actor must be at most {} bytes, got {}",
                encoding::MAX_ACTOR,
                event.actor.len()
            ));
        }
        if event.data.len() > MAX_EVENT_DATA {
            return invalid(format!(
                "event data must be at most {MAX_EVENT_DATA} bytes, got {}",
                event.data.len()
            ));
        }
        if event.occurred_at.timestamp_subsec_nanos() >= 1_000_000_000 {
            return invalid("occurred_at falls in a leap second".into());
        }
    }
    let mut seen = HashSet::new();
    for r in append.reserve.iter().chain(&append.release) {
        if r.scope.is_empty() || r.scope.len() > encoding::MAX_SCOPE {
            return invalid(format!(
                "reservation scope must be 1 to {} bytes",
                encoding::MAX_SCOPE
            ));
        }
        if r.key.is_empty() || r.key.len() > encoding::MAX_RESERVATION_KEY {
            return invalid(format!(
                "reservation key must be 1 to {} bytes",
                encoding::MAX_RESERVATION_KEY
            ));
        }
        if !seen.insert(r) {
            return invalid(format!("{r} is named twice in one append"));
        }
    }
    let mut versions = HashSet::new();
    for key in &append.keys {
        if !versions.insert(key.version) {
            return invalid(format!("data key version {} is given twice", key.version));
        }
    }
    Ok(())
}

/// What the commits staged so far in a group (or one commit being staged) will change.
#[derive(Default)]
struct Overlay {
    heads: HashMap<StreamId, StreamHead>,
    /// (seq, position) of events staged per stream, for a deletion later in the group.
    events: HashMap<StreamId, Vec<(u64, u64)>>,
    /// Reservation key → owner after the staged writes (`None`: released).
    reservations: HashMap<Vec<u8>, Option<StreamId>>,
    /// Reservation keys taken per stream, for a deletion later in the group.
    taken: HashMap<StreamId, Vec<Vec<u8>>>,
    /// Data keys stored or rewrapped, with their wrapped bytes.
    data_keys: HashMap<(StreamId, u32), Vec<u8>>,
    /// The seq of each snapshot stored.
    snapshots: HashMap<StreamId, u64>,
    deleted: HashSet<StreamId>,
}

impl Overlay {
    fn merge(&mut self, other: Overlay) {
        self.heads.extend(other.heads);
        for (stream, events) in other.events {
            self.events.entry(stream).or_default().extend(events);
        }
        self.reservations.extend(other.reservations);
        for (stream, taken) in other.taken {
            self.taken.entry(stream).or_default().extend(taken);
        }
        self.data_keys.extend(other.data_keys);
        self.snapshots.extend(other.snapshots);
        self.deleted.extend(other.deleted);
    }
}

/// State before the group: the database, with the committer's cache of stream heads in front,
/// and in front of both what the groups written but not finished yet change.
struct Durable<'a> {
    shared: &'a Shared,
    heads: &'a HashMap<StreamId, StreamHead>,
    unfinished: &'a VecDeque<(u64, Overlay)>,
}

/// Stored state as the group will leave it: the commit's own changes, then the group's, then
/// the durable state.
struct View<'a> {
    durable: &'a Durable<'a>,
    group: &'a Overlay,
    own: &'a Overlay,
}

impl View<'_> {
    /// Newest first: the commit's own changes, the group's, then each unfinished group's.
    fn layers(&self) -> impl Iterator<Item = &Overlay> {
        [self.own, self.group].into_iter().chain(
            self.durable
                .unfinished
                .iter()
                .rev()
                .map(|(_, overlay)| overlay),
        )
    }

    fn is_deleted(&self, stream: StreamId) -> Result<bool> {
        if self.layers().any(|l| l.deleted.contains(&stream)) {
            return Ok(true);
        }
        if self.durable.heads.contains_key(&stream) {
            return Ok(false); // cached heads are of live streams
        }
        super::is_deleted(self.durable.shared, stream)
    }

    fn head(&self, stream: StreamId) -> Result<Option<StreamHead>> {
        for layer in self.layers() {
            if let Some(head) = layer.heads.get(&stream) {
                return Ok(Some(*head));
            }
        }
        if let Some(head) = self.durable.heads.get(&stream) {
            return Ok(Some(*head));
        }
        super::stream_head(self.durable.shared, stream)
    }

    fn owner(&self, key: &[u8]) -> Result<Option<StreamId>> {
        for layer in self.layers() {
            if let Some(owner) = layer.reservations.get(key) {
                return Ok(*owner);
            }
        }
        super::reservation_owner(self.durable.shared, key)
    }

    /// The wrapped bytes of a stored data key (`None` once its stream is deleted).
    fn data_key(&self, stream: StreamId, version: u32) -> Result<Option<Vec<u8>>> {
        for layer in self.layers() {
            // A layer cannot store keys for a stream after deleting it, so a deletion in a
            // layer is the newest word on that stream's keys.
            if layer.deleted.contains(&stream) {
                return Ok(None);
            }
            if let Some(wrapped) = layer.data_keys.get(&(stream, version)) {
                return Ok(Some(wrapped.clone()));
            }
        }
        let shared = self.durable.shared;
        shared
            .db
            .get_cf(shared.cf(Cf::Keys)?, keys::data_key(stream, version))
            .map_err(|e| Error::storage("reading a data key", e))
    }
}

impl View<'_> {
    /// The seq of the stream's stored snapshot (`None` if none, or once its stream is deleted).
    fn snapshot_seq(&self, stream: StreamId) -> Result<Option<u64>> {
        for layer in self.layers() {
            if layer.deleted.contains(&stream) {
                return Ok(None);
            }
            if let Some(seq) = layer.snapshots.get(&stream) {
                return Ok(Some(*seq));
            }
        }
        Ok(super::snapshot(self.durable.shared, stream)?.map(|s| s.seq))
    }

    /// The hash of the stream's event at `seq`, if it is on disk. Events staged but not
    /// finished yet are not looked at: a snapshot describes events its maker read.
    fn stored_hash(&self, stream: StreamId, seq: u64) -> Result<Option<crate::Digest32>> {
        let shared = self.durable.shared;
        let value = shared
            .db
            .get_pinned_cf(shared.cf(Cf::Streams)?, keys::stream(stream, seq))
            .map_err(|e| Error::storage("reading a stream index entry", e))?;
        value
            .map(|value| super::parse_index_value(stream, seq, &value).map(|(_, hash)| hash))
            .transpose()
    }
}

enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// One commit, checked against stored state and ready to join the group's batch.
struct Staged {
    ops: Vec<Op>,
    events: Vec<RecordedEvent>,
    delta: Overlay,
    compactions: Vec<Compaction>,
    /// The log head once this commit is written.
    head: u64,
}

impl Staged {
    /// Adds every op to `batch`, or none of them.
    fn write_into(&self, shared: &Shared, batch: &mut WriteBatch) -> Result<()> {
        for cf in Cf::ALL {
            shared.cf(cf)?;
        }
        for op in &self.ops {
            match op {
                Op::Put(cf, key, value) => batch.put_cf(shared.cf(*cf)?, key, value),
                Op::Delete(cf, key) => batch.delete_cf(shared.cf(*cf)?, key),
                Op::DeleteRange(cf, from, to) => batch.delete_range_cf(shared.cf(*cf)?, from, to),
            }
        }
        Ok(())
    }
}

fn stage(
    durable: &Durable<'_>,
    group: &Overlay,
    head: u64,
    commit: Commit,
    known_index: &mut HashMap<StreamId, Vec<(u64, u64)>>,
) -> Result<Staged> {
    let mut staged = Staged {
        ops: Vec::new(),
        events: Vec::new(),
        delta: Overlay::default(),
        compactions: Vec::new(),
        head,
    };
    for append in commit.appends {
        stage_append(durable, group, &mut staged, append)?;
    }
    for rewrap in commit.rewrap {
        stage_rewrap(durable, group, &mut staged, rewrap)?;
    }
    for snapshot in commit.snapshots {
        stage_snapshot(durable, group, &mut staged, snapshot)?;
    }
    for stream in commit.delete {
        let known = known_index.remove(&stream).unwrap_or_default();
        stage_deletion(durable, group, &mut staged, stream, known)?;
    }
    Ok(staged)
}

/// Replaces a stored data key's wrapping, if it is still stored as the rewrap read it.
fn stage_rewrap(
    durable: &Durable<'_>,
    group: &Overlay,
    staged: &mut Staged,
    rewrap: KeyRewrap,
) -> Result<()> {
    let KeyRewrap {
        stream,
        version,
        from,
        to,
    } = rewrap;
    let view = View {
        durable,
        group,
        own: &staged.delta,
    };
    if view.data_key(stream, version)?.as_deref() != Some(from.as_slice()) {
        return Err(Error::KeyChanged { stream, version });
    }
    staged.ops.push(Op::Put(
        Cf::Keys,
        keys::data_key(stream, version).to_vec(),
        to.clone(),
    ));
    staged.delta.data_keys.insert((stream, version), to);
    Ok(())
}

/// Stores a snapshot in place of its stream's older one, if it names a stored event.
fn stage_snapshot(
    durable: &Durable<'_>,
    group: &Overlay,
    staged: &mut Staged,
    snapshot: Snapshot,
) -> Result<()> {
    let Snapshot {
        stream,
        seq,
        hash,
        data,
    } = snapshot;
    let view = View {
        durable,
        group,
        own: &staged.delta,
    };
    if view.is_deleted(stream)? {
        return Err(Error::StreamDeleted { stream });
    }
    if view.stored_hash(stream, seq)? != Some(hash) {
        return Err(Error::SnapshotMismatch { stream, seq });
    }
    if let Some(stored) = view.snapshot_seq(stream)?
        && stored >= seq
    {
        return Err(Error::SnapshotOutdated {
            stream,
            seq,
            stored,
        });
    }
    staged.ops.push(Op::Put(
        Cf::Snapshots,
        keys::snapshot(stream).to_vec(),
        keys::snapshot_value(seq, &hash, &data),
    ));
    staged.delta.snapshots.insert(stream, seq);
    Ok(())
}

fn stage_append(
    durable: &Durable<'_>,
    group: &Overlay,
    staged: &mut Staged,
    append: StreamAppend,
) -> Result<()> {
    let stream = append.stream;
    let view = View {
        durable,
        group,
        own: &staged.delta,
    };
    if view.is_deleted(stream)? {
        return Err(Error::StreamDeleted { stream });
    }
    let current = view.head(stream)?;
    let current_seq = current.map_or(0, |h| h.seq);
    let expected_seq = match append.expected {
        Expected::NoStream => Some(0),
        Expected::At(seq) => Some(seq),
        Expected::Any => None,
    };
    if expected_seq.is_some_and(|seq| seq != current_seq) {
        return Err(Error::WrongExpectedSeq {
            stream,
            expected: append.expected,
            current: current_seq,
        });
    }

    // Releases first, so that one append can move a key (release old, reserve new).
    let mut owners: HashMap<Vec<u8>, Option<StreamId>> = HashMap::new();
    for reservation in &append.release {
        let key = keys::reservation(reservation);
        if view.owner(&key)? != Some(stream) {
            return Err(Error::ReservationNotHeld {
                stream,
                reservation: reservation.clone(),
            });
        }
        staged.ops.push(Op::Delete(
            Cf::Owned,
            keys::owned(stream, reservation).to_vec(),
        ));
        staged.ops.push(Op::Delete(Cf::Reservations, key.to_vec()));
        owners.insert(key.to_vec(), None);
    }
    let mut taken = Vec::new();
    for reservation in &append.reserve {
        let key = keys::reservation(reservation).to_vec();
        let owner = match owners.get(&key) {
            Some(owner) => *owner,
            None => view.owner(&key)?,
        };
        if owner.is_some() {
            return Err(Error::ReservationTaken {
                reservation: reservation.clone(),
            });
        }
        staged.ops.push(Op::Put(
            Cf::Reservations,
            key.clone(),
            stream.0.as_bytes().to_vec(),
        ));
        staged.ops.push(Op::Put(
            Cf::Owned,
            keys::owned(stream, reservation).to_vec(),
            Vec::new(),
        ));
        owners.insert(key.clone(), Some(stream));
        taken.push(key);
    }
    for key in &append.keys {
        if view.data_key(stream, key.version)?.is_some() {
            return Err(Error::KeyExists {
                stream,
                version: key.version,
            });
        }
    }

    for key in append.keys {
        staged.ops.push(Op::Put(
            Cf::Keys,
            keys::data_key(stream, key.version).to_vec(),
            key.wrapped.clone(),
        ));
        staged
            .delta
            .data_keys
            .insert((stream, key.version), key.wrapped);
    }
    for id in &append.drop_blobs {
        staged
            .ops
            .push(Op::Delete(Cf::Blobs, keys::blob(stream, id).to_vec()));
    }
    for blob in append.blobs {
        let id = blob_id(&blob);
        staged
            .ops
            .push(Op::Put(Cf::Blobs, keys::blob(stream, &id).to_vec(), blob));
    }
    let mut seq = current_seq;
    let mut prev_hash = current.map_or(ZERO_HASH, |h| h.hash);
    let mut positions = Vec::with_capacity(append.events.len());
    for new in append.events {
        seq += 1;
        staged.head += 1;
        let mut event = RecordedEvent {
            id: new.id,
            stream,
            seq,
            position: staged.head,
            event_type: new.event_type,
            schema_version: new.schema_version,
            occurred_at: new.occurred_at,
            actor: new.actor,
            data: new.data,
            prev_hash,
            hash: ZERO_HASH,
        };
        let bytes = encoding::seal(&mut event);
        prev_hash = event.hash;
        staged.ops.push(Op::Put(
            Cf::Events,
            keys::event(event.position, stream, seq).to_vec(),
            bytes,
        ));
        staged.ops.push(Op::Put(
            Cf::Streams,
            keys::stream(stream, seq).to_vec(),
            keys::stream_value(event.position, &event.hash).to_vec(),
        ));
        positions.push((seq, event.position));
        staged.events.push(event);
    }
    staged.delta.heads.insert(
        stream,
        StreamHead {
            seq,
            position: staged.head,
            hash: prev_hash,
        },
    );
    staged.delta.events.insert(stream, positions);
    staged.delta.reservations.extend(owners);
    staged.delta.taken.insert(stream, taken);
    Ok(())
}

/// Removes a stream with everything it holds: its events (by position, from the stream index),
/// its index, its reservations, blobs, data keys and snapshot, and leaves a tombstone. `known` is the
/// start of the stream's stored index, read before the commit was queued (possibly empty); the
/// rest is read here.
fn stage_deletion(
    durable: &Durable<'_>,
    group: &Overlay,
    staged: &mut Staged,
    stream: StreamId,
    known: Vec<(u64, u64)>,
) -> Result<()> {
    let shared = durable.shared;
    let view = View {
        durable,
        group,
        own: &staged.delta,
    };
    if view.is_deleted(stream)? {
        return Err(Error::StreamDeleted { stream });
    }

    // Events: stored ones from the index, plus any an earlier commit of this group staged.
    // A stream's index only grows at its end (a deleted stream is never written again), so
    // what was read before stays true: only entries after it are read now.
    let after = known.last().map_or(0, |(seq, _)| *seq);
    let mut events = known;
    events.extend(stored_index(shared, stream, after)?);
    events.extend(group.events.get(&stream).into_iter().flatten().copied());
    events.sort_unstable_by_key(|(_, position)| *position);
    for run in events.chunk_by(|a, b| b.1 == a.1 + 1) {
        match run {
            [(seq, position)] => staged.ops.push(Op::Delete(
                Cf::Events,
                keys::event(*position, stream, *seq).to_vec(),
            )),
            [(_, first), .., (_, last)] => staged.ops.push(Op::DeleteRange(
                Cf::Events,
                keys::event_seek(*first).to_vec(),
                keys::event_seek(last + 1).to_vec(),
            )),
            [] => {}
        }
    }
    if let (Some((_, first)), Some((_, last))) = (events.first(), events.last()) {
        staged.compactions.push(Compaction {
            cf: Cf::Events,
            from: keys::event_seek(*first).to_vec(),
            to: keys::event_seek(last + 1).to_vec(),
        });
    }

    // Reservations: every key the stream holds, stored or staged in this group.
    let mut held = stored_owned(shared, stream)?;
    held.extend(group.taken.get(&stream).into_iter().flatten().cloned());
    let mut freed = Vec::with_capacity(held.len());
    for key in held {
        // A key released earlier in this group may already belong to someone else.
        if view.owner(&key)? == Some(stream) {
            freed.push(key);
        }
    }
    for key in freed {
        staged
            .compactions
            .push(Compaction::point(Cf::Reservations, &key));
        staged.ops.push(Op::Delete(Cf::Reservations, key.clone()));
        staged.delta.reservations.insert(key, None);
    }

    // Everything else lives under the stream's prefix.
    let (start, end) = keys::stream_prefix_range(stream);
    for cf in [Cf::Streams, Cf::Owned, Cf::Blobs, Cf::Keys, Cf::Snapshots] {
        staged
            .ops
            .push(Op::DeleteRange(cf, start.to_vec(), end.to_vec()));
        staged.compactions.push(Compaction {
            cf,
            from: start.to_vec(),
            to: end.to_vec(),
        });
    }
    staged.ops.push(Op::Put(
        Cf::Meta,
        keys::tombstone(stream).to_vec(),
        staged.head.to_be_bytes().to_vec(),
    ));
    staged.delta.deleted.insert(stream);
    Ok(())
}

/// (seq, position) of every stored event of `stream` after seq `after` (0: all of them).
pub(crate) fn stored_index(
    shared: &Shared,
    stream: StreamId,
    after: u64,
) -> Result<Vec<(u64, u64)>> {
    let (_, end) = keys::stream_prefix_range(stream);
    let start = keys::stream(stream, after.saturating_add(1));
    let mut options = rocksdb::ReadOptions::default();
    options.set_iterate_upper_bound(end.to_vec());
    let mut iter = shared
        .db
        .raw_iterator_cf_opt(shared.cf(Cf::Streams)?, options);
    iter.seek(start);
    let mut out = Vec::new();
    while let Some((key, value)) = iter.item() {
        let place = keys::parse_stream(key)
            .zip(keys::parse_stream_value(value))
            .map(|((_, seq), (position, _))| (seq, position));
        let Some(place) = place else {
            return Err(Error::Corrupt {
                at: Location {
                    stream: Some(stream),
                    ..Location::default()
                },
                reason: "unreadable stream index entry".into(),
            });
        };
        out.push(place);
        iter.next();
    }
    iter.status()
        .map_err(|e| Error::storage("reading a stream index", e))?;
    Ok(out)
}

/// The reservation keys `stream` holds on disk.
fn stored_owned(shared: &Shared, stream: StreamId) -> Result<Vec<Vec<u8>>> {
    let (start, end) = keys::stream_prefix_range(stream);
    let mut options = rocksdb::ReadOptions::default();
    options.set_iterate_upper_bound(end.to_vec());
    let mut iter = shared
        .db
        .raw_iterator_cf_opt(shared.cf(Cf::Owned)?, options);
    iter.seek(start);
    let mut out = Vec::new();
    while let Some(key) = iter.key() {
        out.push(key[16.min(key.len())..].to_vec());
        iter.next();
    }
    iter.status()
        .map_err(|e| Error::storage("reading reservations of a stream", e))?;
    Ok(out)
}
