//! The second half of a commit: sync the journal record of a group, apply its batch to RocksDB,
//! publish the new head and answer the writers.
//!
//! The committer stages a group and writes its journal record, then either finishes it itself
//! (a lone commit with nothing ahead of it: no thread hand-over on the path of a single
//! writer's append) or hands it to the *syncer* thread and goes on to stage the next group
//! while the disk syncs this one. That overlap is what lets concurrent writers fill the disk's
//! syncs: before it, the CPU sat idle during each sync and the disk during each staging.
//!
//! Groups finish strictly in the order they were written, whichever thread finishes them: a
//! group is applied and answered only after every group before it, so no reader sees a later
//! position before an earlier one, and nobody is answered (not even with a conflict) on the
//! strength of a write that is not durable. The syncer takes every group queued for it and
//! writes once per segment file: one write makes every record given to that file durable.
//!
//! A failed sync or RocksDB write fails that group and every group after it (they were staged
//! on its state), and the committer stops the journal ([`Progress::failure`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;

use rocksdb::WriteBatch;
use tokio::sync::{oneshot, watch};

use super::Shared;
use super::committer::unlogged;
use super::journal::{Chore, Unsynced};
use super::maintenance::{self, Compaction};
use crate::error::{Error, Result};
use crate::model::Committed;

/// A commit's answer, sent once its group is finished.
pub(crate) type Answer = (oneshot::Sender<Result<Committed>>, Result<Committed>);

/// A group whose journal record is written (or that writes nothing: all its commits were
/// refused), waiting to be finished.
pub(crate) struct Written {
    /// Groups are numbered from 1 in the order they were written.
    pub(crate) number: u64,
    /// `Ok(None)`: nothing to write. `Err`: writing the record failed.
    pub(crate) record: std::result::Result<Option<Unsynced>, String>,
    pub(crate) batch: WriteBatch,
    /// The log head once the group is applied.
    pub(crate) head: u64,
    pub(crate) answers: Vec<Answer>,
    pub(crate) chores: Vec<Chore>,
    pub(crate) compactions: Vec<Compaction>,
}

/// How far finishing has come; shared by the committer and the syncer.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
}

#[derive(Default)]
struct ProgressState {
    /// The number of the newest finished group.
    finished: u64,
    /// Set by the first failed sync or RocksDB write.
    failure: Option<String>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of the newest finished group.
    #[cfg(test)]
    fn finished(&self) -> u64 {
        self.lock().finished
    }

    /// The first failure, once there was one.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Waits until at least group `number` is finished; returns the newest finished.
    pub(crate) fn wait_for(&self, number: u64) -> u64 {
        let mut state = self.lock();
        while state.finished < number {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.finished
    }

    /// Stops writes with `reason` (unless they are stopped already): every group from now on
    /// fails. Only for tests; a real failure is recorded when its group is finished.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn fail(&self, reason: &str) {
        let mut state = self.lock();
        if state.failure.is_none() {
            state.failure = Some(reason.to_string());
        }
    }

    fn record(&self, finished: u64, failure: Option<&String>) {
        let mut state = self.lock();
        state.finished = finished;
        if state.failure.is_none() {
            state.failure = failure.cloned();
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Finishes groups; used by the committer for a lone group and by the syncer thread.
pub(crate) struct Finisher {
    pub(crate) shared: Arc<Shared>,
    pub(crate) head_tx: watch::Sender<u64>,
    pub(crate) maintenance: mpsc::Sender<maintenance::Job>,
    pub(crate) progress: Arc<Progress>,
}

impl Finisher {
    /// Syncs the records of `groups` (given in order, following every group finished before),
    /// then applies and answers each in order.
    pub(crate) fn finish(&self, groups: Vec<Written>) {
        // In order: the committer finishes a group itself only when every group before it is
        // finished, and hands the others to the one syncer in the order it wrote them.
        let mut failure = self.progress.failure();
        if failure.is_none() {
            failure = self.sync(&groups).err();
        }
        let stats = &self.shared.stats;
        for group in groups {
            if failure.is_none() {
                failure = match group.record {
                    Ok(None) => None,
                    Ok(Some(_)) => self
                        .shared
                        .db
                        .write_opt(group.batch, &unlogged())
                        .err()
                        .map(|e| e.into_string()),
                    Err(e) => Some(e),
                };
            }
            // Before the answers: a writer told of a failure finds the log saying so.
            self.progress.record(group.number, failure.as_ref());
            match &failure {
                None => {
                    self.head_tx.send_if_modified(|head| {
                        let moved = *head != group.head;
                        *head = group.head;
                        moved
                    });
                    if !group.compactions.is_empty() {
                        // The maintenance thread outlives the committer; if it is gone the log
                        // is closing, and the data is unreadable already: compaction only
                        // reclaims it.
                        let _ = self
                            .maintenance
                            .send(maintenance::Job::Compact(group.compactions));
                    }
                    for chore in group.chores {
                        let _ = self.maintenance.send(maintenance::Job::Journal(chore));
                    }
                    for (reply, answer) in group.answers {
                        match &answer {
                            Ok(committed) => {
                                stats.commits.fetch_add(1, Ordering::Relaxed);
                                let events = committed.events.len() as u64;
                                stats.events.fetch_add(events, Ordering::Relaxed);
                            }
                            Err(_) => {
                                stats.rejected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        let _ = reply.send(answer);
                    }
                }
                Some(e) => {
                    for (reply, answer) in group.answers {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        let answer = match answer {
                            Ok(_) => Err(Error::storage(
                                "writing a commit",
                                std::io::Error::other(e.clone()),
                            )),
                            rejected => rejected,
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
        }
    }

    /// Makes the groups' records durable, oldest first. The first record of each segment file
    /// writes every byte pending in it, so the records after it in that file need no write.
    fn sync(&self, groups: &[Written]) -> std::result::Result<(), String> {
        let records = groups
            .iter()
            .filter_map(|group| group.record.as_ref().ok().and_then(Option::as_ref));
        for record in records {
            if record.sync()? {
                self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Starts the syncer thread: it finishes, in order, the groups the committer sends, taking
/// every group queued when it is free, so that one sync serves them all.
///
/// One thread, so one sync at a time: two syncer threads (each syncing what it took, then
/// waiting for its turn to apply) were measured slower here (64 writers: 105k against 125k
/// appends/s), although the disk completes two independent write+sync loops at ~1.6 times
/// the rate of one.
pub(crate) fn start_syncer(
    finisher: Arc<Finisher>,
) -> Result<(mpsc::Sender<Written>, JoinHandle<()>)> {
    let (sender, queue) = mpsc::channel::<Written>();
    let thread = std::thread::Builder::new()
        .name("eventlog-syncer".into())
        .spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut groups = vec![first];
                groups.extend(queue.try_iter());
                finisher.finish(groups);
            }
        })
        .map_err(|e| Error::storage("starting the syncer thread", e))?;
    Ok((sender, thread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Committed, StreamId};
    use crate::rocks::RocksLog;

    fn group(number: u64, record: std::result::Result<Option<Unsynced>, String>) -> Written {
        Written {
            number,
            record,
            batch: WriteBatch::default(),
            head: number * 10,
            answers: Vec::new(),
            chores: Vec::new(),
            compactions: Vec::new(),
        }
    }

    fn answered(written: &mut Written) -> oneshot::Receiver<Result<Committed>> {
        let (reply, answer) = oneshot::channel();
        let committed = Committed {
            position: written.head,
            events: Vec::new(),
        };
        written.answers.push((reply, Ok(committed)));
        let (refused, _) = oneshot::channel();
        let conflict = Error::StreamDeleted {
            stream: StreamId(uuid::Uuid::nil()),
        };
        written.answers.push((refused, Err(conflict)));
        answer
    }

    #[test]
    fn a_failed_group_fails_every_group_after_it_and_moves_no_head() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLog::open(dir.path()).unwrap();
        let (head_tx, head) = watch::channel(0);
        let (maintenance, _jobs) = mpsc::channel();
        let finisher = Finisher {
            shared: Arc::clone(&log.shared),
            head_tx,
            maintenance,
            progress: Arc::new(Progress::default()),
        };

        let mut first = group(1, Ok(None));
        let first_answer = answered(&mut first);
        finisher.finish(vec![first]);
        assert!(first_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(*head.borrow(), 10, "a finished group publishes its head");

        let mut failed = group(2, Err("the disk went away".into()));
        let mut after = group(3, Ok(None));
        let (failed_answer, after_answer) = (answered(&mut failed), answered(&mut after));
        finisher.finish(vec![failed, after]);
        for answer in [failed_answer, after_answer] {
            let error = answer.blocking_recv().unwrap().unwrap_err();
            assert!(matches!(error, Error::Storage { .. }), "{error:?}");
        }
        assert_eq!(*head.borrow(), 10, "no head past the failure");
        assert_eq!(
            finisher.progress.finished(),
            3,
            "failed groups are finished too"
        );
        let failure = finisher.progress.failure().unwrap();
        assert!(failure.contains("the disk went away"), "{failure}");

        // Later groups fail without being written.
        let mut later = group(4, Ok(None));
        let later_answer = answered(&mut later);
        finisher.finish(vec![later]);
        assert!(later_answer.blocking_recv().unwrap().is_err());
        assert_eq!(*head.borrow(), 10);
    }
}
