//! Per-token rate limits: governor's GCRA, keyed by a hash-derived token key.
//!
//! A limit of N requests per minute is a burst of N refilled evenly (N/60 per
//! second), which absorbs the handful of requests an MCP client sends at
//! connect time. Tokens may carry different limits (workspace and token
//! overrides), so there is one keyed limiter per distinct limit value; the set
//! of values is small (configuration plus per-token overrides).
//!
//! Scope: [`Limiter`] is per instance (N instances behind a load balancer
//! admit up to N times the limit); [`cluster::ClusterLimiter`] shares one
//! limit across instances through Redis. [`Limits`] picks one per the
//! configuration.
//!
//! Apart from the cluster limiter's Redis calls this module does no I/O, and
//! it knows nothing of HTTP.

pub mod cluster;
pub mod lease;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

type Keyed<C> = RateLimiter<u64, DashMapStateStore<u64>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A refusal, with what the client needs to back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit in force, requests per minute.
    pub limit: u32,
    /// Seconds until one more request is allowed (at least 1).
    pub retry_after_secs: u64,
}

pub struct Limiter<C: Clock = DefaultClock> {
    clock: C,
    by_limit: DashMap<u32, Arc<Keyed<C>>>,
}

impl Limiter<DefaultClock> {
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl Default for Limiter<DefaultClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter on a custom clock (tests use governor's fake clock).
    pub fn with_clock(clock: C) -> Self {
        Limiter {
            clock,
            by_limit: DashMap::new(),
        }
    }

    /// Counts one request of `key` against `per_minute`.
    pub fn check(&self, key: u64, per_minute: u32) -> Result<(), RateLimited> {
        let per_minute = per_minute.max(1);
        // Hot path: the limiter for this limit exists; check under the one
        // read guard instead of cloning the Arc out (two atomic RMWs on a
        // cache line every request shares).
        if let Some(l) = self.by_limit.get(&per_minute) {
            return self.verdict(l.value(), key, per_minute);
        }
        let limiter = Arc::clone(
            self.by_limit
                .entry(per_minute)
                .or_insert_with(|| {
                    let quota = Quota::per_minute(NonZeroU32::new(per_minute).expect("max(1)"));
                    Arc::new(RateLimiter::new(quota, DashMapStateStore::default(), self.clock.clone()))
                })
                .value(),
        );
        self.verdict(&limiter, key, per_minute)
    }

    fn verdict(&self, limiter: &Keyed<C>, key: u64, per_minute: u32) -> Result<(), RateLimited> {
        limiter.check_key(&key).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(self.clock.now());
            RateLimited {
                limit: per_minute,
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Drops state of keys that are back at full burst (idle), so the
    /// limiter's memory follows active tokens, not every token ever seen.
    pub fn sweep(&self) {
        for l in self.by_limit.iter() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys currently tracked (for metrics).
    pub fn len(&self) -> usize {
        self.by_limit.iter().map(|l| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limiter in force: local, or cluster-wide with a local fallback.
pub enum Limits {
    Instance(Limiter),
    Cluster(Box<cluster::ClusterLimiter>),
}

impl Limits {
    /// Counts one request. The flag is true when the cluster limiter could not
    /// be reached and this instance decided alone.
    pub async fn check(&self, key: u64, per_minute: u32) -> (bool, Result<(), RateLimited>) {
        match self {
            Limits::Instance(l) => (false, l.check(key, per_minute)),
            Limits::Cluster(c) => {
                let (counted, verdict) = c.check(key, per_minute).await;
                (counted == cluster::Counted::LocalFallback, verdict)
            }
        }
    }

    pub fn sweep(&self) {
        match self {
            Limits::Instance(l) => l.sweep(),
            Limits::Cluster(c) => c.sweep(),
        }
    }

    /// Keys held in memory (for metrics).
    pub fn len(&self) -> usize {
        match self {
            Limits::Instance(l) => l.len(),
            Limits::Cluster(c) => c.local_keys(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn exactly_the_burst_is_allowed_then_refused_with_retry_after() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(clock.clone());
        for i in 0..120 {
            assert!(l.check(1, 120).is_ok(), "request {i} of the burst");
        }
        let refused = l.check(1, 120).unwrap_err();
        assert_eq!(
            refused,
            RateLimited {
                limit: 120,
                retry_after_secs: 1
            }
        );
        // Other tokens are unaffected.
        assert!(l.check(2, 120).is_ok());
        // 2 per second refill: after 500 ms exactly one more.
        clock.advance(Duration::from_millis(500));
        assert!(l.check(1, 120).is_ok());
        assert!(l.check(1, 120).is_err());
    }

    #[test]
    fn retry_after_reflects_slow_limits() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(clock.clone());
        assert!(l.check(1, 2).is_ok());
        assert!(l.check(1, 2).is_ok());
        // 2 per minute: one more after 30 s.
        assert_eq!(l.check(1, 2).unwrap_err().retry_after_secs, 30);
        clock.advance(Duration::from_secs(30));
        assert!(l.check(1, 2).is_ok());
    }

    #[test]
    fn idle_keys_are_swept() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(clock.clone());
        for key in 0..1000 {
            l.check(key, 60).unwrap();
        }
        assert_eq!(l.len(), 1000);
        clock.advance(Duration::from_secs(61));
        l.sweep();
        assert_eq!(l.len(), 0);
    }
}
