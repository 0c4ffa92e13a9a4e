//! idemd's log lines leave through a bounded queue and a thread of their own, so that a slow
//! reader of its standard error (journald stalled, a full pipe) never holds up a request.
//!
//! tracing's formatter writes each event where it is logged: on the runtime's worker threads.
//! Written straight to stderr, a log line is a blocking `write` on a worker, and once the
//! reader stops draining, every worker that logs waits with it (one bench run with a line per
//! request saw a 200 ms p99 from its own pipe filling up). Here a line is queued without
//! waiting; when the queue is full the line is dropped and counted
//! (`idem_log_lines_dropped_total`), as a lossy log is better than a stalled identity
//! service. The thread writes what is queued through one buffer, flushed whenever the queue
//! runs dry, and `flush` waits for every line queued before it (idemd calls it on its way out).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Lines the queue holds before it drops new ones: a few MB of log at most.
pub const QUEUED_LINES: usize = 16_384;

enum Message {
    Line(Vec<u8>),
    /// Answered once everything queued before it is written and flushed.
    Flush(std::sync::mpsc::Sender<()>),
}

/// A handle on the queue: what tracing's formatter writes to (`MakeWriter`). Clones share it.
#[derive(Clone)]
pub struct LogPipe {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// The pipe idemd logs through, once `install` has been called.
static INSTALLED: OnceLock<LogPipe> = OnceLock::new();

impl LogPipe {
    /// Starts the thread that writes queued lines to `sink`.
    pub fn start<W: Write + Send + 'static>(sink: W, capacity: usize) -> std::io::Result<LogPipe> {
        let (queue, messages) = std::sync::mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("idem-log".into())
            .spawn(move || drain(std::io::BufWriter::new(sink), messages))?;
        Ok(LogPipe {
            queue,
            dropped: Arc::default(),
        })
    }

    /// Makes this the pipe `/metrics` reports on.
    pub fn install(&self) {
        let _ = INSTALLED.set(self.clone());
    }

    /// The pipe installed by idemd, if any (not in a service started in-process by tests).
    pub fn installed() -> Option<&'static LogPipe> {
        INSTALLED.get()
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `within`) until every line queued so far is written and flushed;
    /// whether it was.
    pub fn flush(&self, within: Duration) -> bool {
        let (done, written) = std::sync::mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_err() {
            return false;
        }
        written.recv_timeout(within).is_ok()
    }

    fn queue(&self, line: Vec<u8>) {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes queued lines until every handle is gone.
fn drain<W: Write>(mut sink: std::io::BufWriter<W>, messages: Receiver<Message>) {
    let mut next = messages.recv();
    while let Ok(message) = next {
        match message {
            Message::Line(line) => {
                let _ = sink.write_all(&line);
            }
            Message::Flush(done) => {
                let _ = sink.flush();
                let _ = done.send(());
            }
        }
        // More waiting: keep buffering. None: write what the buffer holds, then wait.
        next = match messages.try_recv() {
            Ok(message) => Ok(message),
            Err(_) => {
                let _ = sink.flush();
                messages.recv()
            }
        };
    }
    let _ = sink.flush();
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
            self.pipe.queue(std::mem::take(&mut self.line));
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
        let pipe = LogPipe::start(gate.clone(), 4).unwrap();
        // The thread takes the first line and is held writing it out (the queue ran dry);
        // four more fill the queue; the next fifteen are dropped, and logging them waits for
        // nothing (a wait would hang this test, the gate being shut).
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
        let pipe = LogPipe::start(gate.clone(), QUEUED_LINES).unwrap();
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
