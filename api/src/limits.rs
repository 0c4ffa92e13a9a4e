//! Rate limits: token buckets per key (an account, a client address), in memory. A refused
//! call learns how long to wait (`Retry-After`). Keys are what the caller typed, so an unknown
//! email is limited exactly like a known one and the answers reveal nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many calls a key may make in a window: `burst` at once, refilled evenly over `window`.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub burst: u32,
    pub window: Duration,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One limit, e.g. onboarding starts per account.
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept at most; beyond it, full buckets (keys at rest) are forgotten.
const MAX_KEYS: usize = 100_000;

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call for `key` at `now`, or answers how long until one is allowed.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst.max(1));
        let per_second = burst / self.rate.window.as_secs_f64().max(0.001);
        // A poisoned lock only means another call panicked mid-update; the counts stay usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

impl Limiter {
    /// Gives back the call `key` took: for limits on failures only (a successful call costs
    /// nothing).
    pub fn refund(&self, key: &str) {
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(burst);
        }
    }
}

/// Every limit of the service.
pub struct Limits {
    pub onboarding_start_per_account: Limiter,
    pub onboarding_complete_per_account: Limiter,
    pub onboarding_per_address: Limiter,
    pub challenges_per_address: Limiter,
    pub approvals_per_address: Limiter,
    pub approvals_per_device: Limiter,
    pub enrollments_per_address: Limiter,
    /// Password logins per device and username.
    pub logins_per_account: Limiter,
    /// Whole-stream walks (verifying the chain, replaying a state) per tenant.
    pub audit_walks_per_tenant: Limiter,
    /// Reports of ended elevations per device (one per elevation, which needs a technician).
    pub elevation_reports_per_device: Limiter,
}

impl Limits {
    /// The limits, with `agent_login_rate` workstation logins per device and username in five
    /// minutes.
    pub fn new(agent_login_rate: u32) -> Limits {
        Limits {
            logins_per_account: Limiter::new(Rate {
                burst: agent_login_rate,
                window: Duration::from_secs(5 * 60),
            }),
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let quarter = Duration::from_secs(15 * 60);
        Limits {
            // A code lives 15 minutes: three codes in that time is plenty for a person.
            onboarding_start_per_account: Limiter::new(Rate {
                burst: 3,
                window: quarter,
            }),
            // Five tries per code, and a little more for a person fumbling two codes.
            onboarding_complete_per_account: Limiter::new(Rate {
                burst: 10,
                window: quarter,
            }),
            onboarding_per_address: Limiter::new(Rate {
                burst: 60,
                window: quarter,
            }),
            // A login page asks for a new challenge every two minutes while it is open; an
            // office behind one address has many people logging in.
            challenges_per_address: Limiter::new(Rate {
                burst: 120,
                window: Duration::from_secs(5 * 60),
            }),
            // Each approval checks a signature and may write a session.
            approvals_per_address: Limiter::new(Rate {
                burst: 120,
                window: quarter,
            }),
            approvals_per_device: Limiter::new(Rate {
                burst: 30,
                window: quarter,
            }),
            // Each elevation ends once, and each needed a technician's approval: a backlog
            // sent after a day offline is a handful.
            elevation_reports_per_device: Limiter::new(Rate {
                burst: 30,
                window: quarter,
            }),
            // Failed enrollments only (a bad token): rolling out a hundred workstations from
            // one office is not an attack.
            enrollments_per_address: Limiter::new(Rate {
                burst: 30,
                window: quarter,
            }),
            // A person mistyping a few times, not a guesser.
            logins_per_account: Limiter::new(Rate {
                burst: 10,
                window: Duration::from_secs(5 * 60),
            }),
            // Each walk reads and hashes the tenant's whole stream: an auditor checks a few
            // times in a session, a script looping on it would keep a CPU busy.
            audit_walks_per_tenant: Limiter::new(Rate {
                burst: 10,
                window: Duration::from_secs(10 * 60),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_evenly() {
        let limiter = Limiter::new(Rate {
            burst: 3,
            window: Duration::from_secs(30),
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("k", t0).is_ok());
        }
        // One call per 10 s comes back.
        let wait = limiter.take("k", t0).unwrap_err();
        assert_eq!(wait.as_secs(), 10);
        assert!(limiter.take("k", t0 + Duration::from_secs(9)).is_err());
        assert!(limiter.take("k", t0 + Duration::from_secs(10)).is_ok());
        assert!(limiter.take("k", t0 + Duration::from_secs(10)).is_err());
        // Other keys are untouched, and a long rest refills to the burst, not beyond.
        assert!(limiter.take("other", t0).is_ok());
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.take("k", later).is_ok());
        }
        assert!(limiter.take("k", later).is_err());
        // A refunded call can be made again, but never beyond the burst.
        limiter.refund("k");
        assert!(limiter.take("k", later).is_ok());
        for _ in 0..10 {
            limiter.refund("k");
        }
        for _ in 0..3 {
            assert!(limiter.take("k", later).is_ok());
        }
        assert!(limiter.take("k", later).is_err());
    }
}
