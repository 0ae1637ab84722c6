//! One instance's lease of a token's shared budget (cluster scope).
//!
//! The shared GCRA bucket lives in Redis; an instance takes a *lease* of
//! several requests from it in one script call and spends it locally, one
//! atomic decrement per request. A lease is taken out of the shared bucket
//! before it is spent, so the cluster never admits more than the bucket
//! granted; what leasing adds is *when* a request is admitted: a unit granted
//! in one minute may be spent early in the next. The excess over one shared
//! limit in any window is therefore at most the units the instances hold
//! unspent when the window starts, which [`max_lease`] keeps to 2% of the
//! limit in all.
//!
//! Sizing: a lease covers [`HORIZON_US`] of this instance's recent rate for
//! the token, capped by [`max_lease`], and is topped up in the background
//! when half of it is spent, so a request normally finds units waiting and
//! never waits on Redis. Below the cap's floor (limits under 50 per minute
//! per live instance) nothing is held ahead: each request asks Redis for one
//! unit, which is exact, and such tokens send few requests anyway.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// The most all instances together may hold unspent, as a fraction of the
/// limit: 1/50 = 2%.
pub const OVERSHOOT_DIVISOR: u32 = 50;

/// How much of an instance's recent rate one lease covers. With the top-up
/// at half, a busy token costs each instance about two Redis calls a second.
pub const HORIZON_US: u64 = 1_000_000;

/// The largest lease one instance may hold for `per_minute`, when
/// `instances` share the limit: `instances × max_lease ≤ per_minute / 50`.
/// 0 means "hold nothing ahead" (take one unit per request).
pub fn max_lease(per_minute: u32, instances: u32) -> u32 {
    per_minute / (OVERSHOOT_DIVISOR * instances.max(1))
}

/// The next lease size: `HORIZON_US` of the rate seen since the last grant
/// (`spent` units in `elapsed_us`), within `1..=cap`. It grows at most 8-fold
/// per grant (two quick requests say little about the rate, and a one-off
/// token should not strand a large lease) and shrinks at most by half (a
/// pause should not collapse a busy token's lease).
pub fn next_size(prev: u32, spent: u64, elapsed_us: u64, cap: u32) -> u32 {
    // Below a millisecond the estimate is noise: treat it as a millisecond.
    let rate_per_s = spent.saturating_mul(1_000_000) / elapsed_us.max(1_000);
    let want = rate_per_s.saturating_mul(HORIZON_US).div_ceil(1_000_000);
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    want.clamp(prev / 2, prev.max(1).saturating_mul(8)).clamp(1, cap.max(1))
}

/// Per (token, limit) state on one instance.
pub struct Lease {
    /// Units granted by Redis and not yet spent. Spending is a `fetch_sub`
    /// that is undone when it went below zero, so it may dip below zero for
    /// an instant but never admits more than was deposited.
    units: AtomicI64,
    /// Lease size in use (see [`next_size`]).
    pub size: AtomicU64,
    /// Units right after the last deposit, and when (µs on the limiter's
    /// clock): the spending rate since then sizes the next lease.
    after_grant: AtomicI64,
    granted_at_us: AtomicU64,
    /// The shared bucket was empty: until then (µs on the limiter's clock)
    /// refuse locally once the units are spent, without asking Redis again.
    pub denied_until_us: AtomicU64,
    /// Last request (µs, updated at most once a second): idle leases are swept.
    pub last_used_us: AtomicU64,
    /// A background top-up is queued or running.
    pub refilling: AtomicBool,
    /// Serialises this instance's Redis calls for the token, so that requests
    /// finding the lease empty wait for one grant instead of each asking.
    pub lock: tokio::sync::Mutex<()>,
}

impl Lease {
    pub fn new(now_us: u64) -> Self {
        Lease {
            units: AtomicI64::new(0),
            size: AtomicU64::new(1),
            after_grant: AtomicI64::new(0),
            granted_at_us: AtomicU64::new(now_us),
            denied_until_us: AtomicU64::new(0),
            last_used_us: AtomicU64::new(now_us),
            refilling: AtomicBool::new(false),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Spends one unit if there is one; returns the units left after it.
    pub fn take(&self) -> Option<i64> {
        let before = self.units.fetch_sub(1, Ordering::AcqRel);
        if before > 0 {
            Some(before - 1)
        } else {
            self.units.fetch_add(1, Ordering::AcqRel);
            None
        }
    }

    pub fn units(&self) -> i64 {
        self.units.load(Ordering::Acquire).max(0)
    }

    /// Adds a grant of `granted` units (of which the caller may keep some:
    /// `keep` are spent at once) and resizes the next lease.
    pub fn deposit(&self, granted: u64, keep: u64, now_us: u64, cap: u32) {
        let before = self.units();
        let spent = (self.after_grant.load(Ordering::Relaxed) - before).max(0) as u64;
        let elapsed = now_us.saturating_sub(self.granted_at_us.load(Ordering::Relaxed));
        let size = next_size(self.size.load(Ordering::Relaxed) as u32, spent + keep, elapsed, cap);
        self.size.store(u64::from(size), Ordering::Relaxed);
        let add = granted.saturating_sub(keep) as i64;
        let after = self.units.fetch_add(add, Ordering::AcqRel) + add;
        self.after_grant.store(after, Ordering::Relaxed);
        self.granted_at_us.store(now_us, Ordering::Relaxed);
    }

    /// Notes a request at `now_us` (a store at most once a second, so busy
    /// tokens do not write the line on every request).
    pub fn touch(&self, now_us: u64) {
        if now_us.saturating_sub(self.last_used_us.load(Ordering::Relaxed)) >= 1_000_000 {
            self.last_used_us.store(now_us, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_together_hold_at_most_two_percent_of_the_limit() {
        for per_minute in [1, 3, 60, 149, 150, 151, 6000, 120_000, 100_000_000] {
            for instances in 1..=10 {
                let m = max_lease(per_minute, instances);
                assert!(
                    u64::from(m) * u64::from(instances) * 50 <= u64::from(per_minute),
                    "{per_minute}/min over {instances}: lease {m}"
                );
            }
        }
        // Small limits hold nothing ahead: 3 instances cannot admit 3 x 3.
        assert_eq!(max_lease(3, 3), 0);
        assert_eq!(max_lease(149, 3), 0);
        assert_eq!(max_lease(150, 3), 1);
        assert_eq!(max_lease(6000, 3), 40);
    }

    #[test]
    fn the_lease_follows_the_rate_within_the_cap() {
        // 1000 a second for a second's horizon: 1000, if the cap allows,
        // reached in 8-fold steps.
        assert_eq!(next_size(200, 500, 500_000, 10_000), 1000);
        assert_eq!(next_size(1, 500, 500_000, 10_000), 8);
        assert_eq!(next_size(200, 500, 500_000, 40), 40);
        // A quiet token: one unit.
        assert_eq!(next_size(1, 1, 10_000_000, 40), 1);
        // A pause halves the lease at most.
        assert_eq!(next_size(1000, 1, 10_000_000, 10_000), 500);
        // A cap of 0 (no lease ahead) still grants the unit being asked for.
        assert_eq!(next_size(7, 100, 1000, 0), 1);
    }

    #[test]
    fn units_are_never_spent_twice() {
        let l = Lease::new(0);
        assert_eq!(l.take(), None);
        l.deposit(3, 1, 10, 100);
        assert_eq!(l.units(), 2);
        assert_eq!(l.take(), Some(1));
        assert_eq!(l.take(), Some(0));
        assert_eq!(l.take(), None);
        assert_eq!(l.units(), 0);
        // Concurrent spenders take exactly what was deposited.
        let l = std::sync::Arc::new(Lease::new(0));
        l.deposit(10_000, 0, 10, 100_000);
        let taken: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let l = &l;
                    s.spawn(move || (0..5000).filter(|_| l.take().is_some()).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 10_000);
        assert_eq!(l.units(), 0);
    }
}
