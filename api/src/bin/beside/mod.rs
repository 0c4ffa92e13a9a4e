//! The benchmarks' writer beside an operation: another tenant appending one event at a time
//! while the operation runs, and then alone for as long, so that what the operation costs
//! other tenants shows as the difference between the two latency lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eventlog::{EventLog, Expected, NewEvent, RocksLog, StreamAppend, StreamId};

/// Appends one `event()` at a time to a new stream until `stop`, answering each append's
/// latency.
pub async fn writer(
    log: Arc<RocksLog>,
    stop: Arc<AtomicBool>,
    event: impl Fn() -> NewEvent,
) -> Vec<Duration> {
    let stream = StreamId(uuid::Uuid::now_v7());
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let event = event();
        let started = Instant::now();
        log.append(StreamAppend::new(stream, Expected::Any).event(event))
            .await
            .unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

/// The count, p50, p99 and max in milliseconds.
pub fn percentiles(mut latencies: Vec<Duration>) -> String {
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    format!(
        "{} appends, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
