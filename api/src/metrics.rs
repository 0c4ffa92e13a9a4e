//! Counters and latency histograms of the service, rendered as Prometheus text by `/metrics`:
//! requests by route, method and status with their latencies, commits, logins and approvals
//! by outcome, rate-limit rejections. In memory, per process, since start.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What is counted of one route.
#[derive(Default)]
struct RouteStats {
    /// (method, status, count): a handful per route, so a scan finds one without allocating.
    outcomes: Vec<(String, u16, u64)>,
    latency: Histogram,
}

#[derive(Default)]
struct Inner {
    /// route → its counts by method and status, and its latency histogram. Looked up by
    /// `&str`: a request allocates nothing here once its route has been seen.
    routes: BTreeMap<String, RouteStats>,
    /// (name, label value) → count, for the event counters below.
    events: BTreeMap<(&'static str, String), u64>,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// What an event counter counts.
#[derive(Clone, Copy)]
pub enum Counter {
    /// Commits to the log, by kind (`command`, `record`).
    Commits,
    /// Portal login approvals, by outcome (`approved`, or the refusal's status).
    Approvals,
    /// QR challenges created, by purpose.
    Challenges,
    /// Sessions started, by method (`qr`, `sso`).
    Sessions,
    /// Calls refused by a rate limit, by limit.
    RateLimited,
    /// Tenant histories folded because the cache did not hold them, by where the fold began
    /// (`snapshot`, `start`).
    HistoryFolds,
    /// Events read and folded by those folds, likewise.
    HistoryEvents,
    /// Snapshots of folded state, by outcome (`written`, `outdated`, `failed`, `unusable`).
    Snapshots,
}

impl Counter {
    fn name(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Counter::Commits => ("idem_commits_total", "kind", "Commits to the event log."),
            Counter::Approvals => (
                "idem_login_approvals_total",
                "outcome",
                "QR login approvals, by outcome.",
            ),
            Counter::Challenges => (
                "idem_login_challenges_total",
                "purpose",
                "QR login challenges created.",
            ),
            Counter::Sessions => (
                "idem_sessions_started_total",
                "method",
                "Sessions started, by method.",
            ),
            Counter::RateLimited => (
                "idem_rate_limited_total",
                "limit",
                "Calls refused by a rate limit.",
            ),
            Counter::HistoryFolds => (
                "idem_history_folds_total",
                "from",
                "Tenant histories folded from the log (not held in memory), by where the fold began.",
            ),
            Counter::HistoryEvents => (
                "idem_history_folded_events_total",
                "from",
                "Events folded by those folds, by where the fold began.",
            ),
            Counter::Snapshots => (
                "idem_snapshots_total",
                "outcome",
                "Snapshots of a tenant's folded state: written, not written as a newer one was stored, failed to write, or found unusable.",
            ),
        }
    }
}

const COUNTERS: [Counter; 8] = [
    Counter::Commits,
    Counter::Approvals,
    Counter::Challenges,
    Counter::Sessions,
    Counter::RateLimited,
    Counter::HistoryFolds,
    Counter::HistoryEvents,
    Counter::Snapshots,
];

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request to `route` (the router's pattern, never the raw path).
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut inner = self.lock();
        if !inner.routes.contains_key(route) {
            inner.routes.insert(route.to_owned(), RouteStats::default());
        }
        let Some(stats) = inner.routes.get_mut(route) else {
            return;
        };
        match stats
            .outcomes
            .iter_mut()
            .find(|(m, s, _)| *s == status && m == method)
        {
            Some((_, _, count)) => *count += 1,
            None => stats.outcomes.push((method.to_owned(), status, 1)),
        }
        let histogram = &mut stats.latency;
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Adds one to `counter` for `label`.
    pub fn count(&self, counter: Counter, label: &str) {
        self.add(counter, label, 1);
    }

    /// Adds `n` to `counter` for `label`.
    pub fn add(&self, counter: Counter, label: &str, n: u64) {
        let mut inner = self.lock();
        *inner
            .events
            .entry((counter.name().0, label.to_owned()))
            .or_default() += n;
    }

    /// Prometheus text of everything counted.
    pub fn render(&self, out: &mut String) {
        let inner = self.lock();
        let _ = writeln!(
            out,
            "# HELP idem_http_requests_total HTTP requests by route, method and status.\n\
             # TYPE idem_http_requests_total counter"
        );
        for (route, stats) in &inner.routes {
            let mut outcomes: Vec<_> = stats.outcomes.iter().collect();
            outcomes.sort();
            for (method, status, count) in outcomes {
                let _ = writeln!(
                    out,
                    "idem_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP idem_http_request_duration_seconds HTTP request latency by route.\n\
             # TYPE idem_http_request_duration_seconds histogram"
        );
        for (
            route,
            RouteStats {
                latency: histogram, ..
            },
        ) in &inner.routes
        {
            for (count, bound) in histogram.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "idem_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "idem_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 idem_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 idem_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                histogram.count, histogram.sum, histogram.count
            );
        }
        for counter in COUNTERS {
            let (name, label, help) = counter.name();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((_, value), count) in inner.events.iter().filter(|((n, _), _)| *n == name) {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_events_are_counted_and_rendered() {
        let metrics = Metrics::default();
        metrics.request("/api/v1/me", "GET", 200, Duration::from_millis(3));
        metrics.request("/api/v1/me", "GET", 200, Duration::from_millis(300));
        metrics.request("/api/v1/me", "GET", 401, Duration::from_micros(500));
        metrics.count(Counter::Approvals, "approved");
        metrics.count(Counter::RateLimited, "approvals_per_device");
        metrics.count(Counter::RateLimited, "approvals_per_device");
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains(
            "idem_http_requests_total{route=\"/api/v1/me\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(out.contains(
            "idem_http_requests_total{route=\"/api/v1/me\",method=\"GET\",status=\"401\"} 1"
        ));
        // 0.5 ms and 3 ms are within 5 ms; 300 ms is not.
        assert!(out.contains(
            "idem_http_request_duration_seconds_bucket{route=\"/api/v1/me\",le=\"0.005\"} 2"
        ));
        assert!(out.contains("idem_http_request_duration_seconds_count{route=\"/api/v1/me\"} 3"));
        assert!(out.contains("idem_login_approvals_total{outcome=\"approved\"} 1"));
        assert!(out.contains("idem_rate_limited_total{limit=\"approvals_per_device\"} 2"));
    }
}
