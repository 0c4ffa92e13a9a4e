//! idemd's log lines leave through a bounded buffer and a thread of their own, so that a slow
//! reader of its standard error (journald stalled, a full pipe) never holds up a request.
//!
//! tracing's formatter writes each event where it is logged: on the runtime's worker threads.
//! Written straight to stderr, a log line is a blocking `write` on a worker, and once the
//! reader stops draining, every worker that logs waits with it (one bench run with a line per
//! request saw a 200 ms p99 from its own pipe filling up). Here a line is appended to a shared
//! buffer; when the buffer is full the line is dropped and counted
//! (`idem_log_lines_dropped_total`), as a lossy log is better than a stalled identity
//! service. The thread is woken by the first line into an empty buffer, lets lines gather for
//! [`GATHER`], then writes them all at once: under load one write per interval instead of a
//! wake-up and a write per line (which cost ~30 µs per request in the agent bench), and no
//! wake-up at all while nothing is logged. `flush` waits for every line queued before it
//! (idemd calls it on its way out).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Bytes of log the buffer holds before it drops new lines: ~4,500 request lines, a burst
/// of thousands of lines per gathering interval with room to spare.
pub const BUFFERED_BYTES: usize = 1 << 20;

/// How long the thread lets lines gather once one has come.
pub const GATHER: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Bytes ever queued, and ever written: a flush waits for the second to reach the first.
    queued: u64,
    written: u64,
    /// Whether the thread waits for a line (then the next line wakes it).
    idle: bool,
    /// Whether a flush is waiting (then the thread does not let lines gather).
    flushing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the thread: a line into an empty buffer, or a flush.
    wake: Condvar,
    /// Wakes flushes: a batch written.
    written: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle on the buffer: what tracing's formatter writes to (`MakeWriter`). Clones share it.
#[derive(Clone)]
pub struct LogPipe {
    shared: Arc<Shared>,
}

thread_local! {
    /// Set on the thread that writes the lines out.
    static ON_LOG_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The pipe idemd logs through, once `install` has been called.
static INSTALLED: OnceLock<LogPipe> = OnceLock::new();

impl LogPipe {
    /// Starts the thread that writes buffered lines to `sink`, keeping at most `capacity`
    /// bytes waiting.
    pub fn start<W: Write + Send + 'static>(sink: W, capacity: usize) -> std::io::Result<LogPipe> {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            wake: Condvar::new(),
            written: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        });
        let drained = shared.clone();
        std::thread::Builder::new()
            .name("idem-log".into())
            .spawn(move || drain(sink, &drained))?;
        Ok(LogPipe { shared })
    }

    /// Makes this the pipe `/metrics` reports on.
    pub fn install(&self) {
        let _ = INSTALLED.set(self.clone());
    }

    /// The pipe installed by idemd, if any (not in a service started in-process by tests).
    pub fn installed() -> Option<&'static LogPipe> {
        INSTALLED.get()
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `within`) until every line queued so far is written and flushed;
    /// whether it was.
    pub fn flush(&self, within: Duration) -> bool {
        let mut pending = self.shared.lock();
        let target = pending.queued;
        pending.flushing = true;
        self.shared.wake.notify_all();
        let deadline = std::time::Instant::now() + within;
        while pending.written < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = match self.shared.written.wait_timeout(pending, left) {
                Ok((pending, _)) => pending,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    fn queue(&self, line: &[u8]) {
        // The log thread's own line (how many were dropped) may use the last bytes, which
        // other lines leave free: it is never dropped itself.
        let capacity = self.shared.capacity;
        let limit = if ON_LOG_THREAD.get() {
            capacity
        } else {
            capacity - (capacity / 64).min(4096)
        };
        let mut pending = self.shared.lock();
        if pending.bytes.len() + line.len() > limit {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.queued += line.len() as u64;
        if pending.idle {
            pending.idle = false;
            self.shared.wake.notify_all();
        }
    }
}

/// Writes what gathers in the buffer, for as long as the process lives.
fn drain<W: Write>(mut sink: W, shared: &Shared) {
    ON_LOG_THREAD.set(true);
    let mut batch = Vec::new();
    let mut reported = 0;
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.flushing {
            pending.idle = true;
            pending = match shared.wake.wait(pending) {
                Ok(pending) => pending,
                Err(e) => e.into_inner(),
            };
        }
        let gather = !pending.flushing;
        drop(pending);
        if gather {
            // Let more lines come, so that they leave in one write.
            std::thread::sleep(GATHER);
        }
        // Lines dropped since the last report are said in the log itself, in this batch:
        // after the lines that were kept, and before a flush waiting for it counts it
        // written. Drops happen only while the buffer is full, so there is always a next
        // batch to carry the report.
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            tracing::warn!(
                dropped = dropped - reported,
                "log lines dropped: the reader of idemd's stderr fell behind"
            );
            reported = dropped;
        }
        let mut pending = shared.lock();
        pending.flushing = false;
        std::mem::swap(&mut batch, &mut pending.bytes);
        let upto = pending.queued;
        drop(pending);
        let _ = sink.write_all(&batch);
        let _ = sink.flush();
        batch.clear();
        shared.lock().written = upto;
        shared.written.notify_all();
    }
}

/// One event's text, queued whole when the formatter is done with it.
pub struct PipeLine<'a> {
    pipe: &'a LogPipe,
    line: Vec<u8>,
}

impl Write for PipeLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeLine<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.pipe.queue(&self.line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogPipe {
    type Writer = PipeLine<'a>;

    fn make_writer(&'a self) -> PipeLine<'a> {
        PipeLine {
            pipe: self,
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    /// (open, a write is waiting for it to open)
    type GateState = (bool, bool);

    /// A sink that takes nothing until opened, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gate {
        state: Arc<(Mutex<GateState>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Gate {
        fn open(&self) {
            let (state, changed) = &*self.state;
            state.lock().unwrap().0 = true;
            changed.notify_all();
        }

        /// Returns once a write is held at the closed gate.
        fn wait_for_a_held_write(&self) {
            let (state, changed) = &*self.state;
            let mut state = state.lock().unwrap();
            while !state.1 {
                state = changed.wait(state).unwrap();
            }
        }
    }

    impl Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (state, changed) = &*self.state;
            let mut state = state.lock().unwrap();
            state.1 = true;
            changed.notify_all();
            while !state.0 {
                state = changed.wait(state).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(pipe: &LogPipe, text: &str) {
        pipe.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_stalled_sink_costs_dropped_lines_not_a_wait_and_the_rest_come_out_in_order() {
        let gate = Gate::default();
        // Room for four lines of 7 bytes.
        let pipe = LogPipe::start(gate.clone(), 28).unwrap();
        // The thread takes the first line and is held writing it out; four more fill the
        // buffer; the next fifteen are dropped, and logging them waits for nothing (a wait
        // would hang this test, the gate being shut).
        log(&pipe, "line 0\n");
        gate.wait_for_a_held_write();
        for n in 1..20 {
            log(&pipe, &format!("line {n}\n"));
        }
        assert_eq!(pipe.dropped(), 15);
        gate.open();
        assert!(pipe.flush(Duration::from_secs(30)));
        let written = String::from_utf8(gate.written.lock().unwrap().clone()).unwrap();
        assert_eq!(
            written, "line 0\nline 1\nline 2\nline 3\nline 4\n",
            "the first, in order"
        );
    }

    #[test]
    fn flush_waits_for_every_line_queued_before_it() {
        let gate = Gate::default();
        gate.open();
        let pipe = LogPipe::start(gate.clone(), BUFFERED_BYTES).unwrap();
        for n in 0..1000 {
            log(&pipe, &format!("{n}\n"));
        }
        assert!(pipe.flush(Duration::from_secs(30)));
        assert_eq!(pipe.dropped(), 0);
        let written = gate.written.lock().unwrap().clone();
        assert_eq!(String::from_utf8(written).unwrap().lines().count(), 1000);
        // An empty write (the formatter wrote nothing) queues nothing.
        drop(pipe.make_writer());
        assert!(pipe.flush(Duration::from_secs(30)));
        assert_eq!(gate.written.lock().unwrap().len(), {
            (0..1000)
                .map(|n: u32| n.to_string().len() + 1)
                .sum::<usize>()
        });
    }
}
