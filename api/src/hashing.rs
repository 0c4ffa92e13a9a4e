//! The password-hashing pool: argon2id is costly by design (about 15 ms of one CPU per hash at
//! the default parameters), so it never runs on the async workers.
//!
//! One thread per CPU takes jobs from a queue, each keeping its argon2 working memory between
//! hashes (allocating and clearing 19 MiB per hash cost about a tenth of it). A thread that
//! finishes a hash takes the next queued one at once, so a burst of logins keeps every CPU
//! hashing with no hand-over gap. The threads run at a lower scheduling priority (nice 10) than
//! the rest of idemd: a flood of logins takes the CPU the other requests leave, instead of
//! holding them up.
//!
//! The queue is fair between tenants, and within a tenant between the sources of its jobs
//! (the workstation of an agent login, the person setting a password): each tenant has its
//! own line, each source its own place in it, and the threads take one job from each waiting
//! tenant in turn, that tenant's sources taking turns too. A password spray from one
//! workstation waits behind itself; a login at another workstation, of the same tenant or
//! another, waits for at most one job per waiting tenant and source, not for the flood. A
//! tenant may hold at most half the queue and one source a quarter, so a flood is refused
//! before it can take every place.
//!
//! A job whose request went away before its turn is dropped unhashed, and the queue is bounded:
//! past `QUEUED_PER_THREAD` jobs per thread (about two seconds of hashing) a request is refused
//! at once with 503 and `Retry-After`, rather than queued behind a flood.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use domain::crypto::HashMemory;
use uuid::Uuid;

type Job = Box<dyn FnOnce(&mut HashMemory) + Send>;

/// Nice value of the hashing threads: below the async workers (0), not starved by them.
const HASHING_NICE: i32 = 10;

/// Jobs that may wait per hashing thread before new ones are refused.
pub const QUEUED_PER_THREAD: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// The queue, or the tenant's share of it, is full: the caller should come back shortly.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    /// The pool has stopped (idemd is shutting down) or the hash panicked.
    #[error("the password-hashing pool did not answer")]
    Failed,
}

/// Queues by key, served in turn: one item of each waiting key, round and round.
struct Turns<T> {
    by_key: HashMap<Uuid, T>,
    /// Keys with waiting items, in the order they are served.
    order: VecDeque<Uuid>,
    queued: usize,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Turns {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            queued: 0,
        }
    }
}

/// What `Turns` holds per key: a plain queue, or `Turns` again for a second level.
trait Line: Default {
    type Item;
    fn push(&mut self, item: Self::Item);
    fn pop(&mut self) -> Option<Job>;
    /// Jobs waiting in this line.
    fn held(&self) -> usize;
}

impl Line for VecDeque<Job> {
    type Item = Job;
    fn push(&mut self, job: Job) {
        self.push_back(job);
    }
    fn pop(&mut self) -> Option<Job> {
        self.pop_front()
    }
    fn held(&self) -> usize {
        self.len()
    }
}

impl<L: Line> Line for Turns<L> {
    type Item = (Uuid, L::Item);
    fn push(&mut self, (key, item): (Uuid, L::Item)) {
        let line = self.by_key.entry(key).or_default();
        if line.held() == 0 {
            self.order.push_back(key);
        }
        line.push(item);
        self.queued += 1;
    }
    /// The next job of the key whose turn it is; the key then goes to the back.
    fn pop(&mut self) -> Option<Job> {
        while let Some(key) = self.order.pop_front() {
            let Some(line) = self.by_key.get_mut(&key) else {
                continue;
            };
            let job = line.pop();
            if line.held() == 0 {
                self.by_key.remove(&key);
            } else {
                self.order.push_back(key);
            }
            if let Some(job) = job {
                self.queued -= 1;
                return Some(job);
            }
        }
        None
    }
    fn held(&self) -> usize {
        self.queued
    }
}

impl<L: Line> Turns<L> {
    /// Jobs waiting under `key`.
    fn held_by(&self, key: &Uuid) -> usize {
        self.by_key.get(key).map_or(0, L::held)
    }
}

/// The waiting jobs: by tenant, then by source within the tenant.
#[derive(Default)]
struct Lines {
    jobs: Turns<Turns<VecDeque<Job>>>,
    /// Every handle has been dropped: the threads end.
    closed: bool,
}

struct Queue {
    lines: Mutex<Lines>,
    ready: Condvar,
    capacity: usize,
    per_tenant: usize,
    per_source: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the queue when the last handle goes, so the threads end with idemd.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// Handle on the hashing threads; they end when the last handle is dropped.
#[derive(Clone)]
pub struct HashingPool {
    queue: Arc<Queue>,
    _closer: Arc<Closer>,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one), each with `QUEUED_PER_THREAD` places
    /// in the queue.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        Self::with_capacity(threads, threads.max(1) * QUEUED_PER_THREAD)
    }

    /// Starts `threads` hashing threads with room for `capacity` waiting jobs, at most half of
    /// them from one tenant and a quarter from one source (and at least one).
    pub fn with_capacity(threads: usize, capacity: usize) -> std::io::Result<Self> {
        let queue = Arc::new(Queue {
            lines: Mutex::default(),
            ready: Condvar::new(),
            capacity,
            per_tenant: (capacity / 2).max(1),
            per_source: (capacity / 4).max(1),
        });
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("idem-hashing-{n}"))
                .spawn(move || work(&queue))?;
        }
        Ok(HashingPool {
            _closer: Arc::new(Closer(queue.clone())),
            queue,
        })
    }

    /// Runs `hash` for `source` (a device, a person) of `tenant` on a hashing thread with that
    /// thread's working memory.
    pub async fn run<T: Send + 'static>(
        &self,
        tenant: Uuid,
        source: Uuid,
        hash: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The request was dropped (its client went away) while queued: hash nothing.
            if answer.is_closed() {
                return;
            }
            let _ = answer.send(hash(memory));
        });
        {
            let mut lines = self.queue.lock();
            let jobs = &mut lines.jobs;
            let sources = jobs.by_key.get(&tenant);
            if jobs.held() >= self.queue.capacity
                || jobs.held_by(&tenant) >= self.queue.per_tenant
                || sources.map_or(0, |line| line.held_by(&source)) >= self.queue.per_source
            {
                return Err(HashingError::Busy);
            }
            jobs.push((tenant, (source, job)));
        }
        self.queue.ready.notify_one();
        answered.await.map_err(|_| HashingError::Failed)
    }

    /// Jobs waiting now (not counting those being hashed).
    pub fn queued(&self) -> usize {
        self.queue.lock().jobs.held()
    }
}

fn work(queue: &Queue) {
    lower_priority();
    let mut memory = HashMemory::default();
    loop {
        let job = {
            let mut lines = queue.lock();
            loop {
                if let Some(job) = lines.jobs.pop() {
                    break job;
                }
                if lines.closed {
                    return; // every handle dropped: idemd is stopping
                }
                lines = queue.ready.wait(lines).unwrap_or_else(|e| e.into_inner());
            }
        };
        // A panicking hash drops its answer (its request gets a 500); the thread carries on.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            tracing::error!("a password hash panicked");
        }
    }
}

/// Gives this thread (not the process) a lower priority; failing that, it keeps the default.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(thread), HASHING_NICE) {
            tracing::warn!(error = %e, "cannot lower the hashing threads' priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::crypto::{Argon2Params, PasswordVerifier};

    const FAST: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    const TENANT: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);
    const THIRD: Uuid = Uuid::from_u128(3);
    /// A workstation or person asking for hashes.
    const SOURCE: Uuid = Uuid::from_u128(10);

    #[tokio::test]
    async fn hashes_run_on_the_pool_threads_and_answer_their_callers() {
        let pool = HashingPool::start(2).unwrap();
        let verifier = PasswordVerifier::create("correct horse", [3; 16], FAST).unwrap();
        let answers = (0..8).map(|n| {
            let (pool, verifier) = (pool.clone(), verifier.clone());
            async move {
                let password = if n % 2 == 0 { "correct horse" } else { "wrong" };
                pool.run(TENANT, SOURCE, move |memory| {
                    let thread = std::thread::current().name().map(str::to_owned);
                    let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                        .unwrap();
                    (verifier.verify_in(password, memory).unwrap(), thread, nice)
                })
                .await
                .unwrap()
            }
        });
        let answers = futures_join(answers).await;
        for (n, (matched, thread, nice)) in answers.into_iter().enumerate() {
            assert_eq!(matched, n % 2 == 0, "answer {n} went to its own caller");
            assert!(thread.unwrap().starts_with("idem-hashing-"));
            assert!(
                nice >= HASHING_NICE,
                "hashing threads yield to the rest: nice {nice}"
            );
        }
    }

    /// Occupies the pool's one thread until the returned sender is used, so later jobs queue.
    async fn hold_the_thread(
        pool: &HashingPool,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<&'static str, HashingError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let pool = pool.clone();
        let holder = tokio::spawn(async move {
            pool.run(TENANT, SOURCE, move |_| {
                let _ = started.send(());
                let _ = held.recv();
                "held"
            })
            .await
        });
        running.await.unwrap();
        (release, holder)
    }

    /// Queues a job of `tenant` (from a source of its own) answering `answer` and waits until
    /// it is in the queue.
    async fn queue(
        pool: &HashingPool,
        tenant: Uuid,
        answer: &'static str,
    ) -> tokio::task::JoinHandle<Result<&'static str, HashingError>> {
        queue_logged(pool, (tenant, Uuid::now_v7()), answer, &Arc::default()).await
    }

    /// Like `queue` for a (tenant, source), and the job notes `answer` in `ran` when it runs.
    async fn queue_logged(
        pool: &HashingPool,
        (tenant, source): (Uuid, Uuid),
        answer: &'static str,
        ran: &Arc<Mutex<Vec<&'static str>>>,
    ) -> tokio::task::JoinHandle<Result<&'static str, HashingError>> {
        let before = pool.queued();
        let job = tokio::spawn({
            let (pool, ran) = (pool.clone(), ran.clone());
            async move {
                pool.run(tenant, source, move |_| {
                    ran.lock().unwrap().push(answer);
                    answer
                })
                .await
            }
        });
        while pool.queued() == before {
            tokio::task::yield_now().await;
        }
        job
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_takes_jobs_again_once_it_drains() {
        let pool = HashingPool::with_capacity(1, 2).unwrap();
        let (release, holder) = hold_the_thread(&pool).await;
        // The thread is busy and both places in the queue are taken.
        let second = queue(&pool, TENANT, "second").await;
        let third = queue(&pool, OTHER, "third").await;
        assert!(matches!(
            pool.run(THIRD, SOURCE, |_| "fourth").await,
            Err(HashingError::Busy)
        ));
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap().unwrap(), "held");
        assert_eq!(second.await.unwrap().unwrap(), "second");
        assert_eq!(third.await.unwrap().unwrap(), "third");
        assert_eq!(
            pool.run(TENANT, SOURCE, |_| "fifth").await.unwrap(),
            "fifth"
        );
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn tenants_take_turns_so_a_flood_does_not_delay_the_others() {
        let pool = HashingPool::with_capacity(1, 16).unwrap();
        let (release, holder) = hold_the_thread(&pool).await;
        let ran = Arc::default();
        let mut jobs = Vec::new();
        // Tenant 1 floods the queue, then tenants 2 and 3 each ask once.
        for answer in ["flood-1", "flood-2", "flood-3", "flood-4"] {
            jobs.push(queue_logged(&pool, (TENANT, SOURCE), answer, &ran).await);
        }
        jobs.push(queue_logged(&pool, (OTHER, SOURCE), "other", &ran).await);
        jobs.push(queue_logged(&pool, (THIRD, SOURCE), "third", &ran).await);
        jobs.push(queue_logged(&pool, (OTHER, SOURCE), "other-again", &ran).await);
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        // One job per waiting tenant in turn, each tenant's own jobs in order.
        assert_eq!(
            *ran.lock().unwrap(),
            [
                "flood-1",
                "other",
                "third",
                "flood-2",
                "other-again",
                "flood-3",
                "flood-4"
            ]
        );
    }

    #[tokio::test]
    async fn a_tenants_sources_take_turns_within_its_turn() {
        let pool = HashingPool::with_capacity(1, 16).unwrap();
        let (release, holder) = hold_the_thread(&pool).await;
        let ran = Arc::default();
        let (spraying, other_desk) = (Uuid::from_u128(20), Uuid::from_u128(21));
        let mut jobs = Vec::new();
        // One workstation sprays; another workstation of the same tenant, then another
        // tenant, each ask once.
        for answer in ["spray-1", "spray-2", "spray-3"] {
            jobs.push(queue_logged(&pool, (TENANT, spraying), answer, &ran).await);
        }
        jobs.push(queue_logged(&pool, (TENANT, other_desk), "desk", &ran).await);
        jobs.push(queue_logged(&pool, (OTHER, SOURCE), "other", &ran).await);
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        // Tenants in turn; within the tenant, its workstations in turn.
        assert_eq!(
            *ran.lock().unwrap(),
            ["spray-1", "other", "desk", "spray-2", "spray-3"]
        );
    }

    #[tokio::test]
    async fn one_source_may_hold_at_most_a_quarter_of_the_queue() {
        let pool = HashingPool::with_capacity(1, 8).unwrap();
        let (release, holder) = hold_the_thread(&pool).await;
        let ran = Arc::default();
        let first = queue_logged(&pool, (TENANT, SOURCE), "first", &ran).await;
        let second = queue_logged(&pool, (TENANT, SOURCE), "second", &ran).await;
        assert!(matches!(
            pool.run(TENANT, SOURCE, |_| "refused").await,
            Err(HashingError::Busy)
        ));
        // The tenant's other sources still have room.
        let desk = queue(&pool, TENANT, "desk").await;
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        for (job, answer) in [(first, "first"), (second, "second"), (desk, "desk")] {
            assert_eq!(job.await.unwrap().unwrap(), answer);
        }
    }

    #[tokio::test]
    async fn one_tenant_may_hold_at_most_half_the_queue() {
        let pool = HashingPool::with_capacity(1, 4).unwrap();
        let (release, holder) = hold_the_thread(&pool).await;
        let first = queue(&pool, TENANT, "first").await;
        let second = queue(&pool, TENANT, "second").await;
        // Its half is taken: refused, though the queue has room, and the room stays for others.
        assert!(matches!(
            pool.run(TENANT, SOURCE, |_| "refused").await,
            Err(HashingError::Busy)
        ));
        assert_eq!(pool.queued(), 2);
        let other = queue(&pool, OTHER, "other").await;
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        assert_eq!(first.await.unwrap().unwrap(), "first");
        assert_eq!(second.await.unwrap().unwrap(), "second");
        assert_eq!(other.await.unwrap().unwrap(), "other");
        // Drained: the tenant has its places back.
        assert_eq!(
            pool.run(TENANT, SOURCE, |_| "again").await.unwrap(),
            "again"
        );
    }

    #[test]
    fn dropping_the_last_handle_ends_the_threads() {
        let pool = HashingPool::start(2).unwrap();
        let queue = Arc::downgrade(&pool.queue);
        let copy = pool.clone();
        drop(pool);
        // A copy keeps the pool open.
        assert!(!copy.queue.lock().closed);
        drop(copy);
        // Each thread holds the queue until it returns; wait (bounded) for both to let go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queue.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "threads still running"
            );
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn a_panicking_hash_fails_its_caller_and_the_pool_goes_on() {
        let pool = HashingPool::start(1).unwrap();
        #[allow(clippy::panic)]
        let failed = pool
            .run(TENANT, SOURCE, |_| -> u32 { panic!("boom") })
            .await;
        assert!(failed.is_err());
        assert_eq!(pool.run(TENANT, SOURCE, |_| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_not_run() {
        let pool = HashingPool::start(1).unwrap();
        // Hold the only thread so the next job waits in the queue.
        let (release, holder) = hold_the_thread(&pool).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        // Polled once (the job is queued behind the blocker), then dropped as its deadline has
        // passed: the caller went away while its job waited.
        let abandoned = tokio::time::timeout(
            std::time::Duration::ZERO,
            pool.run(TENANT, SOURCE, move |_| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst)
            }),
        )
        .await;
        assert!(abandoned.is_err());
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        // A job queued after it runs, so the abandoned one has been taken off the queue.
        assert_eq!(pool.run(TENANT, SOURCE, |_| 1).await.unwrap(), 1);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let tasks: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }
}
