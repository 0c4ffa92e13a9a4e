//! The projectors: one task per projection that tails the log into its read models.
//!
//! A projector reads a batch of events after its checkpoint, applies them in one database
//! transaction that also moves the checkpoint, and commits: every event takes effect exactly
//! once, whatever crashes. It sleeps on the log's commit notifications, never on a timer.
//!
//! An event that cannot be applied quarantines its tenant: the batch is rolled back and
//! redone with that tenant's events skipped from the failing seq on, and the quarantine
//! recorded in the same transaction. Every other tenant goes on. A quarantined tenant is
//! retried from its failing seq when the projections start again.
//!
//! A rebuild fills a new generation from position 0 beside the served one, in the same task,
//! and swaps it in once it has caught up; readers see the old generation until then.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventlog::{EventLog, RecordedEvent};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::audit::{self, AuditBatch};
use crate::codec;
use crate::db::{Backend, Generation};
use crate::directory::{self, DirectoryBatch};
use crate::error::{Error, Result};
use crate::projection::Projection;
use crate::read::ReadModels;

/// Where a test can make a projector fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultPoint {
    /// After a batch's rows are written, before its checkpoint: the projector stops there, as
    /// if killed; its transaction is never committed.
    BeforeCheckpoint {
        projection: Projection,
        position: u64,
    },
    /// Applying one event of one tenant: the event fails as a bad event would.
    Apply {
        projection: Projection,
        tenant: Uuid,
        seq: u64,
    },
}

/// Fault injection for tests: a function that says which points fail.
#[derive(Clone, Default)]
pub struct Faults(Option<Arc<dyn Fn(FaultPoint) -> bool + Send + Sync>>);

impl Faults {
    pub fn new(fails: impl Fn(FaultPoint) -> bool + Send + Sync + 'static) -> Faults {
        Faults(Some(Arc::new(fails)))
    }

    fn hit(&self, point: FaultPoint) -> bool {
        self.0.as_ref().is_some_and(|fails| fails(point))
    }
}

/// How the projectors run.
#[derive(Clone)]
pub struct Options {
    /// At most this many events per transaction. Catching up, bigger batches cost fewer
    /// statements per event (see BENCHMARKS.md); caught up, a batch is whatever was committed
    /// since the last one.
    pub batch_size: usize,
    pub faults: Faults,
    /// Start even when a read model was projected from another log (it records another log's
    /// identity, or has applied more than this log holds): only to rebuild them, which
    /// `idemd rebuild` does.
    pub allow_other_log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: 20_000,
            faults: Faults::default(),
            allow_other_log: false,
        }
    }
}

/// A tenant whose projection stopped at one event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct Quarantined {
    pub tenant: Uuid,
    pub seq: u64,
    pub position: u64,
    pub event_type: String,
    pub error: String,
}

/// How far a rebuild has come.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct RebuildProgress {
    pub generation: u64,
    pub checkpoint: u64,
}

/// One projector as it stands.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct ProjectorStatus {
    pub projection: &'static str,
    /// The generation being served.
    pub generation: u64,
    /// The last log position applied to the served generation.
    pub checkpoint: u64,
    pub quarantined: Vec<Quarantined>,
    pub rebuilding: Option<RebuildProgress>,
    /// The last error, cleared by the next batch that succeeds.
    pub failure: Option<String>,
    /// The projector has stopped (shut down, or an injected fault).
    pub stopped: bool,
}

/// Every projector, against the log's head.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Status {
    pub head: u64,
    pub projectors: Vec<ProjectorStatus>,
}

impl Status {
    /// How many positions the furthest-behind projector lags the log.
    pub fn lag(&self) -> u64 {
        self.projectors
            .iter()
            .map(|p| self.head.saturating_sub(p.checkpoint))
            .max()
            .unwrap_or(0)
    }

    /// Ready to serve reads: every projector running and not failing, and lag within
    /// `max_lag`. A quarantined tenant does not make the service unready: taking every
    /// instance out of a load balancer over one tenant's bad event would take all tenants
    /// down with it. Quarantines are reported beside readiness (`quarantined`).
    pub fn is_ready(&self, max_lag: u64) -> bool {
        self.lag() <= max_lag
            && self
                .projectors
                .iter()
                .all(|p| !p.stopped && p.failure.is_none())
    }

    /// Every quarantined tenant, per projection.
    pub fn quarantined(&self) -> impl Iterator<Item = (&'static str, &Quarantined)> {
        self.projectors
            .iter()
            .flat_map(|p| p.quarantined.iter().map(move |q| (p.projection, q)))
    }
}

enum Command {
    Rebuild(oneshot::Sender<Result<u64>>),
    /// Answers how many tenants stay quarantined.
    RetryQuarantined(oneshot::Sender<Result<usize>>),
}

struct Worker {
    projection: Projection,
    status: watch::Receiver<ProjectorStatus>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

/// Waits for the projectors to reach a position; cheap to clone.
#[derive(Clone)]
pub struct Progress {
    statuses: Vec<watch::Receiver<ProjectorStatus>>,
}

impl Progress {
    /// Progress as the given statuses tell it: for tests of what waits on projectors.
    pub fn watching(statuses: Vec<watch::Receiver<ProjectorStatus>>) -> Progress {
        Progress { statuses }
    }

    /// True once a projector has stopped (shut down, or an injected fault): what it has not
    /// applied yet will not come.
    pub fn stopped(&self) -> bool {
        self.statuses.iter().any(|status| status.borrow().stopped)
    }

    /// True once every projection has applied `position` (or `false` after `timeout`, or if a
    /// projector stopped).
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let all = async {
            for status in &self.statuses {
                let mut status = status.clone();
                let reached = status
                    .wait_for(|s| s.checkpoint >= position || s.stopped)
                    .await
                    .map(|s| s.checkpoint >= position);
                if !matches!(reached, Ok(true)) {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, all).await.unwrap_or(false)
    }
}

/// The running projectors and the read models they keep.
pub struct Projections<L> {
    log: Arc<L>,
    workers: Vec<Worker>,
    read: ReadModels,
    shutdown: watch::Sender<bool>,
}

impl<L: EventLog> Projections<L> {
    /// Opens (or creates) every projection's served generation, retries quarantined tenants,
    /// and starts the projectors.
    pub async fn start(log: Arc<L>, backend: Backend, options: Options) -> Result<Self> {
        backend.prepare()?;
        let (shutdown, _) = watch::channel(false);
        let mut workers = Vec::new();
        let mut slots = HashMap::new();
        for projection in Projection::ALL {
            let mut target = Target::serve(&backend, projection).await?;
            // Read models of another log (another deployment's database, a data directory's
            // read models copied beside this log) would show what is not in this log, and the
            // events still to come would be applied on top of what they do not follow.
            let log_id = log.log_id();
            match target.log_id {
                Some(projected_from) if projected_from != log_id => {
                    if !options.allow_other_log {
                        return Err(Error::OtherLog {
                            projection: projection.name(),
                            projected_from,
                            log: log_id,
                        });
                    }
                }
                Some(_) => {}
                // A new generation, or one made before logs had an identity: it is this log's.
                None => target.record_log_id(log_id).await?,
            }
            // Read models past the log's head were projected from events this log does not
            // hold: another log's, or this one's before it was restored from a backup.
            let head = log.head_position();
            if target.checkpoint > head && !options.allow_other_log {
                return Err(Error::AheadOfLog {
                    projection: projection.name(),
                    checkpoint: target.checkpoint,
                    head,
                });
            }
            let slot = watch::channel(target.generation.clone()).0;
            let status = watch::channel(ProjectorStatus {
                projection: projection.name(),
                generation: target.generation.number,
                checkpoint: target.checkpoint,
                quarantined: Vec::new(),
                rebuilding: None,
                failure: None,
                stopped: false,
            })
            .0;
            let mut runner = Runner {
                log: log.clone(),
                backend: backend.clone(),
                projection,
                options: options.clone(),
                live: target,
                rebuild: None,
                slot,
                status,
            };
            runner.retry_quarantined().await?;
            runner.publish(None);
            slots.insert(projection, runner.slot.subscribe());
            let status = runner.status.subscribe();
            let (commands, receiver) = mpsc::channel(4);
            let stop = shutdown.subscribe();
            let task = tokio::spawn(runner.run(receiver, stop));
            workers.push(Worker {
                projection,
                status,
                commands,
                task,
            });
        }
        let read = ReadModels::new(slots)?;
        Ok(Projections {
            log,
            workers,
            read,
            shutdown,
        })
    }

    /// The query side, served from each projection's current generation.
    pub fn read_models(&self) -> &ReadModels {
        &self.read
    }

    /// Every projector against the log's head.
    pub fn status(&self) -> Status {
        Status {
            head: self.log.head_position(),
            projectors: self
                .workers
                .iter()
                .map(|w| w.status.borrow().clone())
                .collect(),
        }
    }

    /// Changes of one projector's status, e.g. to draw a rebuild's progress.
    pub fn watch(&self, projection: Projection) -> Option<watch::Receiver<ProjectorStatus>> {
        self.workers
            .iter()
            .find(|w| w.projection == projection)
            .map(|w| w.status.clone())
    }

    /// Waits until every projection has applied the log up to `position`, or `timeout`
    /// passes; true if they have. This is how a read sees its own writes.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        self.progress().wait_for(position, timeout).await
    }

    /// A handle that waits for the projectors' progress, for tasks that outlive a borrow.
    pub fn progress(&self) -> Progress {
        Progress {
            statuses: self.workers.iter().map(|w| w.status.clone()).collect(),
        }
    }

    /// Rebuilds `projection` from position 0 into a new generation while the current one is
    /// served, and swaps it in once caught up; answers the new generation's number.
    pub async fn rebuild(&self, projection: Projection) -> Result<u64> {
        let worker = self
            .workers
            .iter()
            .find(|w| w.projection == projection)
            .ok_or(Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        worker
            .commands
            .send(Command::Rebuild(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Retries every quarantined tenant of every projection now, as a start does: a tenant
    /// whose events now apply (a bug fixed by an upgrade, a transient failure gone) catches
    /// up and leaves quarantine. Answers, per projection, how many tenants stay quarantined.
    pub async fn retry_quarantined(&self) -> Result<Vec<(Projection, usize)>> {
        let mut left = Vec::new();
        for worker in &self.workers {
            let (reply, answer) = oneshot::channel();
            worker
                .commands
                .send(Command::RetryQuarantined(reply))
                .await
                .map_err(|_| Error::Closed)?;
            left.push((worker.projection, answer.await.map_err(|_| Error::Closed)??));
        }
        Ok(left)
    }

    /// Stops every projector after its current batch.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for worker in self.workers {
            if let Err(e) = worker.task.await {
                tracing::error!(projection = %worker.projection, error = %e, "projector task failed");
            }
        }
        self.read.close().await;
    }
}

/// A generation being written, with its checkpoint and quarantined tenants.
struct Target {
    generation: Arc<Generation>,
    checkpoint: u64,
    quarantined: HashMap<Uuid, Quarantined>,
    /// The log this generation was projected from; `None` until it is recorded.
    log_id: Option<Uuid>,
}

impl Target {
    /// The generation to serve: the highest active one, or a new first one; every other
    /// generation is removed.
    async fn serve(backend: &Backend, projection: Projection) -> Result<Target> {
        let generations = backend.generations(projection).await?;
        let active = generations
            .iter()
            .filter(|(_, active)| *active)
            .map(|(n, _)| *n)
            .max();
        for (number, _) in &generations {
            if Some(*number) != active {
                backend.remove(projection, *number).await?;
            }
        }
        let number = active.unwrap_or(1);
        let generation = backend.open(projection, number).await?;
        if active.is_none() {
            sqlx::query("UPDATE projector_state SET active = 1 WHERE singleton = 1")
                .execute(&generation.pool)
                .await?;
        }
        Target::open(generation).await
    }

    async fn open(generation: Generation) -> Result<Target> {
        let row = sqlx::query("SELECT position, log_id FROM projector_state WHERE singleton = 1")
            .fetch_one(&generation.pool)
            .await?;
        let checkpoint = unsigned(row.try_get::<i64, _>(0)?)?;
        let log_id = row
            .try_get::<Option<String>, _>(1)?
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(|e| Error::Corrupt(format!("the recorded log identity: {e}")))?;
        let rows =
            sqlx::query("SELECT tenant_id, seq, position, event_type, error FROM quarantine")
                .fetch_all(&generation.pool)
                .await?;
        let mut quarantined = HashMap::new();
        for row in rows {
            let tenant: String = row.try_get(0)?;
            let tenant = Uuid::parse_str(&tenant).map_err(|e| Error::Corrupt(e.to_string()))?;
            quarantined.insert(
                tenant,
                Quarantined {
                    tenant,
                    seq: unsigned(row.try_get(1)?)?,
                    position: unsigned(row.try_get(2)?)?,
                    event_type: row.try_get(3)?,
                    error: row.try_get(4)?,
                },
            );
        }
        Ok(Target {
            generation: Arc::new(generation),
            checkpoint,
            quarantined,
            log_id,
        })
    }

    /// Records that this generation is projected from the log `log_id`.
    async fn record_log_id(&mut self, log_id: Uuid) -> Result<()> {
        sqlx::query("UPDATE projector_state SET log_id = $1 WHERE singleton = 1")
            .bind(log_id.to_string())
            .execute(&self.generation.pool)
            .await?;
        self.log_id = Some(log_id);
        Ok(())
    }

    fn skips(&self, recorded: &RecordedEvent) -> bool {
        self.quarantined
            .get(&recorded.stream.0)
            .is_some_and(|q| recorded.seq >= q.seq)
    }
}

fn unsigned(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::Corrupt(format!("negative number {n}")))
}

fn signed(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Corrupt(format!("number {n} out of range")))
}

/// Whether an error may pass by itself (a lost connection, a busy database), as opposed to
/// one that the same event would raise again.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::Database(e) => match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // SQLite busy or locked; PostgreSQL connection, rollback, resources, shutdown.
                matches!(code.as_ref(), "5" | "6" | "517" | "262")
                    || ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c))
            }
            _ => false,
        },
        Error::Log(_) | Error::Io(_) | Error::Closed => true,
        _ => false,
    }
}

/// Why a batch did not commit.
enum BatchError {
    /// Event `index` of the batch failed with a non-transient error.
    Event {
        index: usize,
        error: Error,
    },
    Other(Error),
}

impl From<Error> for BatchError {
    fn from(error: Error) -> Self {
        BatchError::Other(error)
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        BatchError::Other(error.into())
    }
}

struct Runner<L> {
    log: Arc<L>,
    backend: Backend,
    projection: Projection,
    options: Options,
    live: Target,
    rebuild: Option<(Target, oneshot::Sender<Result<u64>>)>,
    slot: watch::Sender<Arc<Generation>>,
    status: watch::Sender<ProjectorStatus>,
}

/// Which target a step works on.
#[derive(Clone, Copy)]
enum Which {
    Live,
    Rebuild,
}

impl<L: EventLog> Runner<L> {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        let mut heads = self.log.subscribe();
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                break;
            }
            heads.borrow_and_update();
            while let Ok(command) = commands.try_recv() {
                self.command(command).await;
            }
            let mut busy = false;
            let mut failure = None;
            match self.step(Which::Live).await {
                Ok(more) => busy |= more,
                Err(e) => failure = Some(e),
            }
            if failure.is_none() && self.rebuild.is_some() {
                match self.step(Which::Rebuild).await {
                    Ok(more) => busy |= more,
                    Err(e) => failure = Some(e),
                }
                if failure.is_none() {
                    match self.swap_if_caught_up().await {
                        Ok(swapped) => busy |= !swapped,
                        Err(e) => failure = Some(e),
                    }
                }
            }
            if let Some(error) = failure {
                let injected = matches!(error, Error::Injected(_));
                tracing::error!(projection = %self.projection, %error, "projector batch failed");
                self.publish(Some(error.to_string()));
                if injected {
                    self.status.send_modify(|s| s.stopped = true);
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            backoff = Duration::from_millis(50);
            self.publish(None);
            if busy {
                continue;
            }
            tokio::select! {
                changed = heads.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                _ = stop.changed() => {}
            }
        }
        self.status.send_modify(|s| s.stopped = true);
    }

    fn publish(&self, failure: Option<String>) {
        let mut quarantined: Vec<Quarantined> = self.live.quarantined.values().cloned().collect();
        quarantined.sort_by_key(|q| q.position);
        let status = ProjectorStatus {
            projection: self.projection.name(),
            generation: self.live.generation.number,
            checkpoint: self.live.checkpoint,
            quarantined,
            rebuilding: self.rebuild.as_ref().map(|(t, _)| RebuildProgress {
                generation: t.generation.number,
                checkpoint: t.checkpoint,
            }),
            failure,
            stopped: false,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::RetryQuarantined(reply) => {
                let retried = self.retry_quarantined().await;
                self.publish(None);
                let _ = reply.send(retried.map(|()| self.live.quarantined.len()));
            }
            Command::Rebuild(reply) => {
                if self.rebuild.is_some() {
                    let _ = reply.send(Err(Error::Config(format!(
                        "a rebuild of {} is already running",
                        self.projection
                    ))));
                    return;
                }
                let number = self.live.generation.number + 1;
                let opened = async {
                    self.backend.remove(self.projection, number).await?;
                    Target::open(self.backend.open(self.projection, number).await?).await
                }
                .await;
                match opened {
                    Ok(target) => {
                        tracing::info!(projection = %self.projection, generation = number, "rebuild started");
                        self.rebuild = Some((target, reply));
                        self.publish(None);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Swaps the rebuilt generation in once it has reached the served one's checkpoint (or
    /// the log's head, when the served one was projected from a longer log).
    async fn swap_if_caught_up(&mut self) -> Result<bool> {
        let goal = self.live.checkpoint.min(self.log.head_position());
        let caught_up = self
            .rebuild
            .as_ref()
            .is_some_and(|(t, _)| t.checkpoint >= goal);
        if !caught_up {
            return Ok(false);
        }
        let Some((mut new, reply)) = self.rebuild.take() else {
            return Ok(false);
        };
        new.record_log_id(self.log.log_id()).await?;
        sqlx::query("UPDATE projector_state SET active = 1 WHERE singleton = 1")
            .execute(&new.generation.pool)
            .await?;
        let number = new.generation.number;
        self.slot.send_replace(new.generation.clone());
        let old = std::mem::replace(&mut self.live, new);
        self.publish(None);
        old.generation.pool.close().await;
        let removed = self
            .backend
            .remove(self.projection, old.generation.number)
            .await;
        tracing::info!(projection = %self.projection, generation = number, "rebuild swapped in");
        let _ = reply.send(Ok(number));
        removed.map(|()| true)
    }

    fn target(&mut self, which: Which) -> Option<&mut Target> {
        match which {
            Which::Live => Some(&mut self.live),
            Which::Rebuild => self.rebuild.as_mut().map(|(t, _)| t),
        }
    }

    /// Applies the next batch to `which`; true if there may be more to do at once.
    async fn step(&mut self, which: Which) -> Result<bool> {
        let head = self.log.head_position();
        let batch_size = self.options.batch_size.max(1);
        let Some(target) = self.target(which) else {
            return Ok(false);
        };
        if target.checkpoint >= head {
            return Ok(false);
        }
        let from = target.checkpoint + 1;
        let events = self.log.read_all(from, batch_size).await?;
        let last = events.last().map_or(0, |e| e.position);
        let next = if events.len() < batch_size {
            head.max(last)
        } else {
            last
        };
        match self
            .commit_events(which, &events, next, events.len() == 1)
            .await
        {
            Err(error)
                if events.len() > 1
                    && !is_transient(&error)
                    && !matches!(error, Error::Injected(_)) =>
            {
                // A failure no single event was named for (a bulk write): one event per
                // transaction finds the event, and only its tenant is quarantined.
                tracing::warn!(projection = %self.projection, %error, "batch failed as a whole; applying it event by event");
                for (i, recorded) in events.iter().enumerate() {
                    let upto = if i + 1 == events.len() {
                        next
                    } else {
                        recorded.position
                    };
                    self.commit_events(which, std::slice::from_ref(recorded), upto, true)
                        .await?;
                }
            }
            other => other?,
        }
        Ok(events.len() == batch_size)
    }

    /// Commits `events` and the checkpoint `next` in one transaction, quarantining the tenant
    /// of each event that fails (`blame_first`: also for a failure that names no event).
    async fn commit_events(
        &mut self,
        which: Which,
        events: &[RecordedEvent],
        next: u64,
        blame_first: bool,
    ) -> Result<()> {
        let mut newly: Vec<Quarantined> = Vec::new();
        loop {
            let target = self.target(which).ok_or(Error::Closed)?;
            let generation = target.generation.clone();
            let outcome = self
                .apply_batch(&generation, which, events, &newly, next)
                .await;
            let (index, error) = match outcome {
                Ok(()) => {
                    let projection = self.projection;
                    let target = self.target(which).ok_or(Error::Closed)?;
                    target.checkpoint = next;
                    for q in newly {
                        tracing::warn!(%projection, tenant = %q.tenant, seq = q.seq, error = %q.error, "tenant quarantined");
                        target.quarantined.insert(q.tenant, q);
                    }
                    return Ok(());
                }
                Err(BatchError::Event { index, error }) => (index, error),
                Err(BatchError::Other(error))
                    if blame_first && !matches!(error, Error::Injected(_)) =>
                {
                    (0, error)
                }
                Err(BatchError::Other(error)) => return Err(error),
            };
            let Some(recorded) = events.get(index) else {
                return Err(error);
            };
            if is_transient(&error) || newly.iter().any(|q| q.tenant == recorded.stream.0) {
                return Err(error);
            }
            newly.push(Quarantined {
                tenant: recorded.stream.0,
                seq: recorded.seq,
                position: recorded.position,
                event_type: recorded.event_type.clone(),
                error: error.to_string(),
            });
        }
    }

    async fn apply_batch(
        &self,
        generation: &Generation,
        which: Which,
        events: &[RecordedEvent],
        newly: &[Quarantined],
        next: u64,
    ) -> Result<(), BatchError> {
        let target = match which {
            Which::Live => &self.live,
            Which::Rebuild => match &self.rebuild {
                Some((t, _)) => t,
                None => return Err(Error::Closed.into()),
            },
        };
        let mut tx = generation.pool.begin().await?;
        let mut state = BatchState::default();
        let included: Vec<(usize, &RecordedEvent)> = events
            .iter()
            .enumerate()
            .filter(|(_, recorded)| {
                !(target.skips(recorded)
                    || newly
                        .iter()
                        .any(|q| q.tenant == recorded.stream.0 && recorded.seq >= q.seq))
            })
            .collect();
        let records: Vec<&RecordedEvent> = included.iter().map(|(_, r)| *r).collect();
        self.apply_events(&mut tx, &mut state, &records)
            .await
            .map_err(|e| match e {
                BatchError::Event { index, error } => BatchError::Event {
                    index: included.get(index).map_or(usize::MAX, |(i, _)| *i),
                    error,
                },
                other => other,
            })?;
        state.flush(&mut tx).await?;
        for q in newly {
            sqlx::query(
                "INSERT INTO quarantine (tenant_id, seq, position, event_type, error) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(q.tenant.to_string())
            .bind(signed(q.seq)?)
            .bind(signed(q.position)?)
            .bind(q.event_type.clone())
            .bind(q.error.clone())
            .execute(&mut *tx)
            .await?;
        }
        if self.options.faults.hit(FaultPoint::BeforeCheckpoint {
            projection: self.projection,
            position: next,
        }) {
            return Err(Error::Injected(FaultPoint::BeforeCheckpoint {
                projection: self.projection,
                position: next,
            })
            .into());
        }
        sqlx::query("UPDATE projector_state SET position = $1 WHERE singleton = 1")
            .bind(signed(next)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies `events` in order; a failing event is named by its index in `events`.
    async fn apply_events(
        &self,
        conn: &mut AnyConnection,
        state: &mut BatchState,
        events: &[&RecordedEvent],
    ) -> Result<(), BatchError> {
        let named = |recorded: &RecordedEvent, error: Error| match error {
            Error::Apply { reason, .. } => Error::Apply {
                event_type: recorded.event_type.clone(),
                seq: recorded.seq,
                reason,
            },
            other => other,
        };
        let injected = |recorded: &RecordedEvent| {
            self.options.faults.hit(FaultPoint::Apply {
                projection: self.projection,
                tenant: recorded.stream.0,
                seq: recorded.seq,
            })
        };
        let failed = |reason: String| Error::Apply {
            event_type: String::new(),
            seq: 0,
            reason,
        };
        match self.projection {
            Projection::Directory => {
                let decoded: Vec<Result<domain::event::Event>> = events
                    .iter()
                    .map(|recorded| codec::decode(recorded).map_err(|e| failed(e.to_string())))
                    .collect();
                let good: Vec<(&RecordedEvent, &domain::event::Event)> = events
                    .iter()
                    .zip(&decoded)
                    .filter_map(|(recorded, event)| event.as_ref().ok().map(|e| (*recorded, e)))
                    .collect();
                state.directory.prefetch(conn, &good).await?;
                for (index, (recorded, event)) in events.iter().zip(decoded).enumerate() {
                    let applied = match event {
                        _ if injected(recorded) => Err(failed("injected fault".into())),
                        Ok(event) => {
                            directory::apply(conn, &mut state.directory, recorded, &event).await
                        }
                        Err(e) => Err(e),
                    };
                    applied.map_err(|error| BatchError::Event {
                        index,
                        error: named(recorded, error),
                    })?;
                }
            }
            Projection::Audit => {
                for (index, recorded) in events.iter().enumerate() {
                    let applied = if injected(recorded) {
                        Err(failed("injected fault".into()))
                    } else {
                        audit::apply(conn, &mut state.audit, recorded).await
                    };
                    applied.map_err(|error| BatchError::Event {
                        index,
                        error: named(recorded, error),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// At start: re-applies each quarantined tenant's events from its failing seq up to the
    /// checkpoint; a tenant that now applies cleanly leaves quarantine.
    async fn retry_quarantined(&mut self) -> Result<()> {
        let tenants: Vec<Quarantined> = self.live.quarantined.values().cloned().collect();
        for q in tenants {
            let stream = eventlog::StreamId(q.tenant);
            let generation = self.live.generation.clone();
            let mut tx = generation.pool.begin().await?;
            let tenant = q.tenant.to_string();
            let outcome: Result<()> = async {
                if self.log.is_deleted(stream).await? {
                    match self.projection {
                        Projection::Directory => directory::delete_tenant(&mut tx, &tenant).await,
                        Projection::Audit => audit::delete_tenant(&mut tx, &tenant).await,
                    }?;
                    return Ok(());
                }
                let mut state = BatchState::default();
                let mut from = q.seq;
                loop {
                    let events = self
                        .log
                        .read_stream(stream, from, self.options.batch_size.max(1))
                        .await?;
                    let Some(last) = events.last() else { break };
                    from = last.seq + 1;
                    let due: Vec<&RecordedEvent> = events
                        .iter()
                        .filter(|e| e.position <= self.live.checkpoint)
                        .collect();
                    let done = due.len() < events.len();
                    self.apply_events(&mut tx, &mut state, &due)
                        .await
                        .map_err(|e| match e {
                            BatchError::Event { error, .. } | BatchError::Other(error) => error,
                        })?;
                    state.flush(&mut tx).await?;
                    if done {
                        break;
                    }
                }
                sqlx::query("DELETE FROM quarantine WHERE tenant_id = $1")
                    .bind(tenant.clone())
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }
            .await;
            match outcome {
                Ok(()) => {
                    tx.commit().await?;
                    self.live.quarantined.remove(&q.tenant);
                    tracing::info!(projection = %self.projection, tenant = %q.tenant, "tenant left quarantine");
                }
                Err(error) => {
                    tx.rollback().await?;
                    if is_transient(&error) {
                        return Err(error);
                    }
                    tracing::warn!(projection = %self.projection, tenant = %q.tenant, %error, "tenant stays quarantined");
                    sqlx::query("UPDATE quarantine SET error = $1 WHERE tenant_id = $2")
                        .bind(error.to_string())
                        .bind(tenant)
                        .execute(&generation.pool)
                        .await?;
                    if let Some(entry) = self.live.quarantined.get_mut(&q.tenant) {
                        entry.error = error.to_string();
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a batch defers to its end, per projection.
#[derive(Default)]
struct BatchState {
    directory: DirectoryBatch,
    audit: AuditBatch,
}

impl BatchState {
    async fn flush(&mut self, conn: &mut AnyConnection) -> Result<()> {
        self.directory.flush(conn).await?;
        audit::flush(conn, &mut self.audit).await
    }
}
