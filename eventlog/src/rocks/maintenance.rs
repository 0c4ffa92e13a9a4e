//! Background work the committer must not wait for: compactions after deletions (a range
//! delete hides a stream's data from every read at once; compacting the range afterwards
//! removes the bytes from the table files), and the journal's chores (retiring segments once
//! RocksDB's table files hold their writes, zeroing them, preparing spares).

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rocksdb::{BottommostLevelCompaction, CompactOptions};
use tokio::sync::oneshot;

use super::committer;
use super::journal::{self, Chore, Retired, Spares};
use super::{Cf, Shared};
use crate::encoding::keys;
use crate::error::{Error, Result};

/// A key range `[from, to)` of one column family to compact.
pub(crate) struct Compaction {
    pub(crate) cf: Cf,
    pub(crate) from: Vec<u8>,
    pub(crate) to: Vec<u8>,
}

impl Compaction {
    /// The range holding exactly `key`.
    pub(crate) fn point(cf: Cf, key: &[u8]) -> Self {
        let mut to = key.to_vec();
        to.push(0);
        Compaction {
            cf,
            from: key.to_vec(),
            to,
        }
    }
}

pub(crate) enum Job {
    Compact(Vec<Compaction>),
    Journal(Chore),
    /// Answered once every job queued before it has run.
    Settle(oneshot::Sender<()>),
}

pub(crate) struct Handle {
    sender: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    pub(crate) fn start(shared: Arc<Shared>, journal: JournalFiles) -> Result<Self> {
        let (sender, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("eventlog-maintenance".into())
            .spawn(move || run(&shared, journal, &jobs))
            .map_err(|e| Error::storage("starting the maintenance thread", e))?;
        Ok(Handle {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    pub(crate) fn sender(&self) -> mpsc::Sender<Job> {
        match &self.sender {
            Some(sender) => sender.clone(),
            // Only `stop` clears it, and only while the log is being dropped.
            None => mpsc::channel().0,
        }
    }

    pub(crate) async fn settle(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.sender
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Job::Settle(done))
            .map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)
    }

    /// Finishes queued jobs and joins the thread (once every other sender is gone too).
    pub(crate) fn stop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The journal's files, as the maintenance thread sees them.
pub(crate) struct JournalFiles {
    pub(crate) spares: Spares,
    pub(crate) segment_bytes: u64,
    /// Retired files not zeroed yet because RocksDB could not be flushed: retried with the
    /// next retirement (until then they hold generations recovery would replay).
    pub(crate) unretired: Vec<Retired>,
}

/// Runs jobs as they come. Jobs queued together are merged: one compaction per column family
/// over the range covering all of theirs. A burst of deletions (each of whose event ranges
/// spans most of the log, as positions interleave tenants) then costs one compaction, not one
/// each; and one flush serves every retirement queued together.
fn run(shared: &Shared, mut journal: JournalFiles, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut ranges = Vec::new();
        let mut settled = Vec::new();
        let mut retire_below = None;
        let mut prepare = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Compact(more) => ranges.extend(more),
                Job::Journal(Chore::Retire { below, files }) => {
                    retire_below = retire_below.max(Some(below));
                    journal.unretired.extend(files);
                }
                Job::Journal(Chore::Prepare(path)) => prepare.push(path),
                Job::Settle(done) => settled.push(done),
            }
            next = jobs.try_recv().ok();
        }
        if !ranges.is_empty() {
            compact(shared, &cover(ranges));
        }
        if let Some(below) = retire_below {
            retire(shared, &mut journal, below);
        }
        for path in prepare {
            // Without a spare the journal writes to a growing file: slower syncs, no harm.
            if journal::prepare(&path, journal.segment_bytes).is_ok() {
                journal::add_prepared(&journal.spares, path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        for done in settled {
            let _ = done.send(());
        }
    }
}

/// Makes RocksDB's table files hold every write of the generations below `below`, records
/// that as the checkpoint, then gives the retired files back to the journal's pool.
fn retire(shared: &Shared, journal: &mut JournalFiles, below: u64) {
    let flushed = Cf::ALL.iter().all(|cf| {
        shared
            .cf(*cf)
            .is_ok_and(|handle| shared.db.flush_cf(handle).is_ok())
    });
    if !flushed {
        return;
    }
    let Ok(meta) = shared.cf(Cf::Meta) else {
        return;
    };
    let recorded = shared
        .db
        .put_cf_opt(
            meta,
            keys::JOURNAL_CHECKPOINT,
            below.to_be_bytes(),
            &committer::unlogged(),
        )
        .and_then(|()| shared.db.flush_cf(meta));
    if recorded.is_err() {
        return;
    }
    for retired in journal.unretired.drain(..) {
        journal::give_back(&journal.spares, retired, journal.segment_bytes);
    }
}

/// One range per column family, covering every range given for it.
fn cover(ranges: Vec<Compaction>) -> Vec<Compaction> {
    let mut covered: Vec<Compaction> = Vec::new();
    for range in ranges {
        match covered.iter_mut().find(|c| c.cf == range.cf) {
            Some(c) => {
                if range.from < c.from {
                    c.from = range.from;
                }
                if range.to > c.to {
                    c.to = range.to;
                }
            }
            None => covered.push(range),
        }
    }
    covered
}

/// Flushes each family's memtable (so the deletion's tombstones reach the table files), then
/// compacts every range down to and including the bottommost level, where RocksDB finally drops
/// deleted entries.
fn compact(shared: &Shared, ranges: &[Compaction]) {
    let mut options = CompactOptions::default();
    options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    let mut flushed = Vec::new();
    for range in ranges {
        // Failures here leave the deleted data unreadable but on disk until a later
        // compaction; there is no caller to tell, and the next deletion retries the families.
        let Ok(cf) = shared.cf(range.cf) else {
            continue;
        };
        if !flushed.contains(&range.cf) {
            let _ = shared.db.flush_cf(cf);
            flushed.push(range.cf);
        }
        shared
            .db
            .compact_range_cf_opt(cf, Some(&range.from), Some(&range.to), &options);
    }
}
