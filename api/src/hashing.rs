//! The password-hashing pool: argon2id is costly by design (about 15 ms of one CPU per hash at
//! the default parameters), so it never runs on the async workers.
//!
//! One thread per CPU takes jobs from a queue, each keeping its argon2 working memory between
//! hashes (allocating and clearing 19 MiB per hash cost about a tenth of it). A thread that
//! finishes a hash takes the next queued one at once, so a burst of logins keeps every CPU
//! hashing with no hand-over gap. The threads run at a lower scheduling priority (nice 10) than
//! the rest of idemd: a flood of logins takes the CPU the other requests leave, instead of
//! holding them up.
//! A job whose request went away before its turn is dropped unhashed, and the queue is bounded:
//! past `QUEUED_PER_THREAD` jobs per thread (about two seconds of hashing) a request is refused
//! at once with 503 and `Retry-After`, rather than queued behind a flood.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use domain::crypto::HashMemory;

type Job = Box<dyn FnOnce(&mut HashMemory) + Send>;

/// Nice value of the hashing threads: below the async workers (0), not starved by them.
const HASHING_NICE: i32 = 10;

/// Jobs that may wait per hashing thread before new ones are refused.
pub const QUEUED_PER_THREAD: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// The queue is full: the caller should come back shortly.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    /// The pool has stopped (idemd is shutting down) or the hash panicked.
    #[error("the password-hashing pool did not answer")]
    Failed,
}

/// Handle on the hashing threads; they end when the last handle is dropped.
#[derive(Clone)]
pub struct HashingPool {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet taken by a thread.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one), each with `QUEUED_PER_THREAD` places
    /// in the queue.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        Self::with_capacity(threads, threads.max(1) * QUEUED_PER_THREAD)
    }

    /// Starts `threads` hashing threads with room for `capacity` waiting jobs.
    pub fn with_capacity(threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let queued = Arc::new(AtomicUsize::new(0));
        for n in 0..threads.max(1) {
            let (queue, queued) = (queue.clone(), queued.clone());
            std::thread::Builder::new()
                .name(format!("idem-hashing-{n}"))
                .spawn(move || work(&queue, &queued))?;
        }
        Ok(HashingPool {
            jobs,
            queued,
            capacity,
        })
    }

    /// Runs `hash` on a hashing thread with that thread's working memory.
    pub async fn run<T: Send + 'static>(
        &self,
        hash: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(HashingError::Busy);
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The request was dropped (its client went away) while queued: hash nothing.
            if answer.is_closed() {
                return;
            }
            let _ = answer.send(hash(memory));
        });
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(HashingError::Failed);
        }
        answered.await.map_err(|_| HashingError::Failed)
    }
}

fn work(queue: &Mutex<mpsc::Receiver<Job>>, queued: &AtomicUsize) {
    lower_priority();
    let mut memory = HashMemory::default();
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return; // every handle dropped: idemd is stopping
        };
        queued.fetch_sub(1, Ordering::SeqCst);
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

    #[tokio::test]
    async fn hashes_run_on_the_pool_threads_and_answer_their_callers() {
        let pool = HashingPool::start(2).unwrap();
        let verifier = PasswordVerifier::create("correct horse", [3; 16], FAST).unwrap();
        let answers = (0..8).map(|n| {
            let (pool, verifier) = (pool.clone(), verifier.clone());
            async move {
                let password = if n % 2 == 0 { "correct horse" } else { "wrong" };
                pool.run(move |memory| {
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
            pool.run(move |_| {
                let _ = started.send(());
                let _ = held.recv();
                "held"
            })
            .await
        });
        running.await.unwrap();
        (release, holder)
    }

    /// Queues a job answering `answer` and waits until it is in the queue.
    async fn queue(
        pool: &HashingPool,
        answer: &'static str,
    ) -> tokio::task::JoinHandle<Result<&'static str, HashingError>> {
        let before = pool.queued.load(Ordering::SeqCst);
        let job = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(move |_| answer).await }
        });
        while pool.queued.load(Ordering::SeqCst) == before {
            tokio::task::yield_now().await;
        }
        job
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_takes_jobs_again_once_it_drains() {
        let pool = HashingPool::with_capacity(1, 2).unwrap();
        let (release, holder) = hold_the_thread(&pool).await;
        // The thread is busy and both places in the queue are taken.
        let second = queue(&pool, "second").await;
        let third = queue(&pool, "third").await;
        assert!(matches!(
            pool.run(|_| "fourth").await,
            Err(HashingError::Busy)
        ));
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap().unwrap(), "held");
        assert_eq!(second.await.unwrap().unwrap(), "second");
        assert_eq!(third.await.unwrap().unwrap(), "third");
        assert_eq!(pool.run(|_| "fifth").await.unwrap(), "fifth");
        assert_eq!(pool.queued.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_panicking_hash_fails_its_caller_and_the_pool_goes_on() {
        let pool = HashingPool::start(1).unwrap();
        #[allow(clippy::panic)]
        let failed = pool.run(|_| -> u32 { panic!("boom") }).await;
        assert!(failed.is_err());
        assert_eq!(pool.run(|_| 7).await.unwrap(), 7);
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
            pool.run(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await;
        assert!(abandoned.is_err());
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        // A job queued after it runs, so the abandoned one has been taken off the queue.
        assert_eq!(pool.run(|_| 1).await.unwrap(), 1);
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
