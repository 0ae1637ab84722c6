//! Cluster-wide per-token limits: one GCRA bucket per token in Redis, spent
//! locally through leases.
//!
//! The script takes up to `want` units from the token's bucket at once and
//! reads the server's clock (`TIME`), so instances need no clock agreement.
//! The key holds the bucket's theoretical arrival time (TAT, µs) and expires
//! once the bucket is full again, so Redis keeps state only for active
//! tokens. Each instance spends its grant locally ([`super::lease`]): a
//! request costs an atomic decrement, and a background top-up keeps units
//! waiting, so Redis sees a few calls a second per active token and
//! instance, not one per request.
//!
//! The bound: whatever is admitted was granted by the shared bucket first,
//! so the cluster admits no more than one limiter would over the long run;
//! in any window it may admit at most the units the instances held unspent
//! when the window began more, which is at most 2% of the limit (limits
//! below 50 a minute per live instance hold nothing ahead and are exact).
//! An instance that dies takes its unspent units with it: the others admit
//! less, never more.
//!
//! Refusals are cached too: when the bucket is empty the script says how
//! long until the next unit, and this instance refuses locally until then
//! with that `Retry-After`, instead of asking Redis on every refused request.
//!
//! If Redis fails, a request without a leased unit is decided by the local
//! limiter at this instance's share of the limit (limit divided by the
//! instances seen recently), and the caller is told so; Redis is asked again
//! after [`RETRY_REDIS_US`].
//!
//! Keys are `portcullis:rl:{<token key>}:<limit>`: everything for one token
//! sits in one hash slot, so in a sharded Redis Cluster each call touches
//! one shard and tokens spread over all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::Script;

use crate::store::redis::{RedisConn, RedisStore};

use super::lease::{Lease, max_lease};
use super::{Limiter, RateLimited};

/// Takes `min(want, available)` units; `{granted, 0}`, or `{0, µs until one
/// unit is available}`. Intervals are fractional µs (a limit above 60 million
/// a minute is under 1 µs apart), so the TAT is stored with decimals.
const GRANT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((tolerance - (tat - now)) / interval + 1e-9)
if room < 1 then
  return {0, math.ceil(tat + interval - tolerance - now)}
end
if room < want then want = room end
local new_tat = tat + want * interval
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {want, 0}
"#;

/// After a failed Redis call, requests without a leased unit are decided
/// locally for this long before Redis is asked again (one probe, not one
/// timeout per request).
pub const RETRY_REDIS_US: u64 = 1_000_000;

/// Leases idle this long are dropped by [`ClusterLimiter::sweep`].
const IDLE_US: u64 = 60_000_000;

/// Most (token, limit) leases held; beyond it a request asks Redis for one
/// unit directly (exact, one call per request) rather than grow the map.
const MAX_LEASES: usize = 1 << 20;

pub struct ClusterLimiter {
    shared: Arc<Shared>,
    fallback: Limiter,
    /// Instances seen heartbeating recently (at least 1), kept by the store.
    instances: Arc<AtomicU32>,
    store: RedisStore,
    leases: DashMap<(u64, u32), Arc<Lease>>,
}

/// What a background top-up needs.
struct Shared {
    conn: RedisConn,
    script: Script,
    epoch: Instant,
    /// Until then (µs on `epoch`), do not ask Redis: it just failed.
    redis_down_until_us: AtomicU64,
}

/// How a request was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// By the shared limit in Redis (a leased unit or a cached refusal).
    Cluster,
    /// Redis failed: by the local limiter at this instance's share.
    LocalFallback,
}

/// A grant from the script.
enum Grant {
    Units(u64),
    /// The bucket is empty; the next unit in this long.
    Empty(Duration),
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn redis_down(&self, now_us: u64) -> bool {
        now_us < self.redis_down_until_us.load(Ordering::Relaxed)
    }

    async fn grant(&self, key: u64, per_minute: u32, want: u64) -> redis::RedisResult<Grant> {
        let interval_us = 60_000_000f64 / f64::from(per_minute);
        // A burst of `per_minute`: the TAT may run a minute ahead.
        let tolerance_us = 60_000_000u64;
        let (granted, wait_us): (u64, u64) = self
            .script
            .key(redis_key(key, per_minute))
            .arg(format!("{interval_us:.6}"))
            .arg(tolerance_us)
            .arg(want.max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if granted > 0 {
            Grant::Units(granted)
        } else {
            Grant::Empty(Duration::from_micros(wait_us.max(1)))
        })
    }

    fn failed(&self, e: &redis::RedisError) {
        tracing::warn!(error = %e, "cluster rate limiter unavailable; using this instance's share locally");
        let until = self.now_us() + RETRY_REDIS_US;
        self.redis_down_until_us.store(until, Ordering::Relaxed);
    }

    /// Tops the lease up to its size, in the background of the requests
    /// spending it.
    async fn top_up(&self, key: u64, per_minute: u32, lease: &Lease, cap: u32) {
        let _one = lease.lock.lock().await;
        let sent = self.now_us();
        let size = lease.size.load(Ordering::Relaxed).min(u64::from(cap));
        let want = size.saturating_sub(lease.units() as u64);
        if want > 0 && !self.redis_down(sent) {
            match self.grant(key, per_minute, want).await {
                Ok(Grant::Units(g)) => lease.deposit(g, 0, self.now_us(), cap),
                Ok(Grant::Empty(wait)) => {
                    lease.denied_until_us.store(sent + wait.as_micros() as u64, Ordering::Relaxed);
                }
                Err(e) => self.failed(&e),
            }
        }
        lease.refilling.store(false, Ordering::Release);
    }
}

/// The token's bucket: hash-tagged by token so one token is one slot.
pub fn redis_key(key: u64, per_minute: u32) -> String {
    crate::store::redis_keys::rate_limit(key, per_minute)
}

fn refused(per_minute: u32, wait_us: u64) -> RateLimited {
    RateLimited {
        limit: per_minute,
        // Whole seconds, rounded up: a client that waits as told finds a unit.
        retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
    }
}

impl ClusterLimiter {
    /// Uses `store`'s connection and its live-instance count; the caller
    /// keeps the count fresh with [`ClusterLimiter::heartbeat`].
    pub fn new(store: RedisStore) -> Self {
        ClusterLimiter {
            shared: Arc::new(Shared {
                conn: store.connection(),
                script: Script::new(GRANT),
                epoch: Instant::now(),
                redis_down_until_us: AtomicU64::new(0),
            }),
            fallback: Limiter::new(),
            instances: store.live_instances(),
            store,
            leases: DashMap::new(),
        }
    }

    /// Sets the live-instance count (benchmarks run several limiters in one
    /// process, which the registry counts once).
    #[doc(hidden)]
    pub fn assume_instances(&self, n: u32) {
        self.instances.store(n.max(1), Ordering::Relaxed);
    }

    fn cap(&self, per_minute: u32) -> u32 {
        max_lease(per_minute, self.instances.load(Ordering::Relaxed))
    }

    pub async fn check(&self, key: u64, per_minute: u32) -> (Counted, Result<(), RateLimited>) {
        let per_minute = per_minute.max(1);
        let now = self.shared.now_us();
        // Hot path, under the map's read guard (no await while it is held).
        let lease = match self.leases.get(&(key, per_minute)) {
            Some(lease) => {
                if let Some(verdict) = self.spend(key, per_minute, lease.value(), now) {
                    return (Counted::Cluster, verdict);
                }
                Arc::clone(lease.value())
            }
            None if self.leases.len() >= MAX_LEASES => return self.direct(key, per_minute).await,
            None => Arc::clone(
                self.leases
                    .entry((key, per_minute))
                    .or_insert_with(|| Arc::new(Lease::new(now)))
                    .value(),
            ),
        };
        self.ask(key, per_minute, &lease).await
    }

    /// A leased unit or a cached refusal, without Redis; `None`: ask Redis.
    fn spend(&self, key: u64, per_minute: u32, lease: &Arc<Lease>, now: u64) -> Option<Result<(), RateLimited>> {
        lease.touch(now);
        if let Some(left) = lease.take() {
            self.maybe_top_up(key, per_minute, lease, left);
            return Some(Ok(()));
        }
        let denied_until = lease.denied_until_us.load(Ordering::Relaxed);
        (now < denied_until).then(|| Err(refused(per_minute, denied_until - now)))
    }

    /// Starts a background top-up when half the lease is spent (never for
    /// limits too small to hold units ahead).
    fn maybe_top_up(&self, key: u64, per_minute: u32, lease: &Arc<Lease>, left: i64) {
        // Cheapest and commonest exit first: more than half left.
        if left as u64 > lease.size.load(Ordering::Relaxed) / 2 || lease.refilling.load(Ordering::Relaxed) {
            return;
        }
        let cap = self.cap(per_minute);
        if cap == 0 || lease.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (shared, lease) = (Arc::clone(&self.shared), Arc::clone(lease));
        tokio::spawn(async move { shared.top_up(key, per_minute, &lease, cap).await });
    }

    /// The lease is empty and no refusal is cached: one grant for this and
    /// the requests queued behind it.
    async fn ask(&self, key: u64, per_minute: u32, lease: &Arc<Lease>) -> (Counted, Result<(), RateLimited>) {
        let _one = lease.lock.lock().await;
        // Whoever held the lock may have filled the lease or found it empty.
        let sent = self.shared.now_us();
        if let Some(verdict) = self.spend(key, per_minute, lease, sent) {
            return (Counted::Cluster, verdict);
        }
        if self.shared.redis_down(sent) {
            return self.local(key, per_minute);
        }
        let cap = self.cap(per_minute);
        // The cap may have shrunk since the size was set (more instances).
        let want = lease.size.load(Ordering::Relaxed).clamp(1, u64::from(cap.max(1)));
        match self.shared.grant(key, per_minute, want).await {
            Ok(Grant::Units(g)) => {
                lease.deposit(g, 1, self.shared.now_us(), cap);
                self.maybe_top_up(key, per_minute, lease, lease.units());
                (Counted::Cluster, Ok(()))
            }
            Ok(Grant::Empty(wait)) => {
                // From when the call was sent: Redis measured the wait later,
                // so the cached refusal never outlasts the real one (at worst
                // the next request asks again a little early).
                let wait = wait.as_micros() as u64;
                lease.denied_until_us.store(sent + wait, Ordering::Relaxed);
                (Counted::Cluster, Err(refused(per_minute, wait)))
            }
            Err(e) => {
                self.shared.failed(&e);
                self.local(key, per_minute)
            }
        }
    }

    /// No room for another lease: one unit per request, straight from Redis.
    async fn direct(&self, key: u64, per_minute: u32) -> (Counted, Result<(), RateLimited>) {
        if self.shared.redis_down(self.shared.now_us()) {
            return self.local(key, per_minute);
        }
        match self.shared.grant(key, per_minute, 1).await {
            Ok(Grant::Units(_)) => (Counted::Cluster, Ok(())),
            Ok(Grant::Empty(wait)) => (Counted::Cluster, Err(refused(per_minute, wait.as_micros() as u64))),
            Err(e) => {
                self.shared.failed(&e);
                self.local(key, per_minute)
            }
        }
    }

    /// Redis failed: this instance's share of the limit, decided alone.
    fn local(&self, key: u64, per_minute: u32) -> (Counted, Result<(), RateLimited>) {
        let share = (per_minute / self.instances.load(Ordering::Relaxed).max(1)).max(1);
        let verdict = self.fallback.check(key, share).map_err(|l| RateLimited { limit: per_minute, ..l });
        (Counted::LocalFallback, verdict)
    }

    /// Refreshes the live-instance count that sets the fallback share and
    /// the lease cap.
    pub async fn heartbeat(&self) {
        use crate::store::TokenStore;
        if let Err(e) = self.store.heartbeat().await {
            tracing::debug!(error = %e, "instance heartbeat failed");
        }
    }

    /// Drops idle leases (their unspent units are lost to the cluster until
    /// the bucket refills: fewer admissions, never more) and idle fallback
    /// keys, so memory follows active tokens.
    pub fn sweep(&self) {
        self.sweep_at(self.shared.now_us());
    }

    fn sweep_at(&self, now: u64) {
        self.fallback.sweep();
        self.leases.retain(|_, l| {
            now.saturating_sub(l.last_used_us.load(Ordering::Relaxed)) < IDLE_US
                || l.refilling.load(Ordering::Relaxed)
                || l.lock.try_lock().is_err()
        });
        self.leases.shrink_to_fit();
    }

    /// Tokens tracked in memory: leases and fallback keys.
    pub fn local_keys(&self) -> usize {
        self.fallback.len() + self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    //! The limiter against a real, private `redis-server` on a free loopback
    //! port (as the integration tests start theirs), never a shared one.
    //! Several limiters on one Redis, each with its own connection, are
    //! several instances.
    use redis::AsyncCommands;

    use super::*;

    struct Server {
        port: u16,
        child: Option<std::process::Child>,
        dir: tempfile::TempDir,
    }

    impl Server {
        async fn start() -> Server {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut s = Server { port, child: None, dir };
            s.run().await;
            s
        }

        /// Starts redis-server on the port (again, after `kill`), empty.
        async fn run(&mut self) {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
                .arg(self.dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test-deps.sh installs it)");
            self.child = Some(child);
            // Ready when it answers PING (bounded: a hang guard).
            for _ in 0..500 {
                if let Ok(mut c) = redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await
                    && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("redis-server did not start");
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }

        /// Another instance's limiter: its own connection to the same Redis.
        async fn limiter(&self) -> ClusterLimiter {
            ClusterLimiter::new(RedisStore::connect(&self.url(), Duration::from_millis(300)).await.unwrap())
        }

        /// `n` instances that know of each other (as their heartbeats would
        /// tell them), so each holds at most its share of the 2% ahead.
        async fn limiters(&self, n: u32) -> Vec<ClusterLimiter> {
            let mut v = Vec::new();
            for _ in 0..n {
                let l = self.limiter().await;
                l.instances.store(n, Ordering::Relaxed);
                v.push(l);
            }
            v
        }

        async fn conn(&self) -> redis::aio::MultiplexedConnection {
            redis::Client::open(self.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }

        /// Script calls so far (`EVALSHA` and `EVAL`).
        async fn script_calls(&self) -> u64 {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut self.conn().await)
                .await
                .unwrap();
            info.lines()
                .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
                .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
                .sum()
        }

        fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    async fn admitted(l: &ClusterLimiter, key: u64, per_minute: u32, n: usize) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            let (counted, verdict) = l.check(key, per_minute).await;
            assert_eq!(counted, Counted::Cluster, "Redis is up");
            ok += usize::from(verdict.is_ok());
        }
        ok
    }

    /// Refill allowance for `started.elapsed()` at `per_minute`, rounded up.
    fn refill(per_minute: u32, started: Instant) -> usize {
        (started.elapsed().as_secs_f64() * f64::from(per_minute) / 60.0).ceil() as usize
    }

    #[tokio::test]
    async fn the_burst_is_shared_by_every_instance_then_refused_with_retry_after() {
        let redis = Server::start().await;
        let (a, b) = (redis.limiter().await, redis.limiter().await);
        // 3 a minute: three requests in all, wherever they land.
        assert_eq!(a.check(1, 3).await, (Counted::Cluster, Ok(())));
        assert_eq!(b.check(1, 3).await, (Counted::Cluster, Ok(())));
        assert_eq!(a.check(1, 3).await, (Counted::Cluster, Ok(())));
        for l in [&a, &b] {
            let (counted, verdict) = l.check(1, 3).await;
            assert_eq!(counted, Counted::Cluster);
            // One more is allowed 20 s after the first: just under 20 s from now.
            assert_eq!(
                verdict,
                Err(RateLimited {
                    limit: 3,
                    retry_after_secs: 20
                })
            );
        }
        // Other tokens, and the same token under another limit, count apart.
        assert_eq!(b.check(2, 3).await.1, Ok(()));
        assert_eq!(b.check(1, 4).await.1, Ok(()));
    }

    #[tokio::test]
    async fn the_bucket_refills_one_request_per_interval() {
        let redis = Server::start().await;
        let l = redis.limiter().await;
        for _ in 0..60 {
            assert_eq!(l.check(7, 60).await.1, Ok(()));
        }
        assert_eq!(l.check(7, 60).await.1.unwrap_err().retry_after_secs, 1);
        // Redis's clock cannot be moved; moving the stored arrival time one
        // interval (1 s at 60 a minute) back is the same as a second passing.
        // `l` now refuses from its cached refusal until that second has
        // really passed, so another instance asks.
        let mut conn = redis.conn().await;
        let tat: f64 = conn.get::<_, String>(redis_key(7, 60)).await.unwrap().parse().unwrap();
        let _: () = conn.set(redis_key(7, 60), format!("{:.3}", tat - 1_000_000.0)).await.unwrap();
        let other = redis.limiter().await;
        assert_eq!(other.check(7, 60).await.1, Ok(()), "one more after one interval");
        assert!(other.check(7, 60).await.1.is_err(), "and only one");
    }

    #[tokio::test]
    async fn state_is_kept_only_while_the_bucket_is_not_full() {
        let redis = Server::start().await;
        let l = redis.limiter().await;
        assert_eq!(l.check(9, 3).await.1, Ok(()));
        let mut conn = redis.conn().await;
        // One request at 3 a minute is 20 s of debt: the key expires when it
        // is paid back, so idle tokens cost Redis nothing.
        let ttl: i64 = conn.pttl(redis_key(9, 3)).await.unwrap();
        assert!((19_000..=20_001).contains(&ttl), "PTTL {ttl}");
    }

    #[tokio::test]
    async fn without_redis_each_instance_decides_alone_at_its_share() {
        let mut redis = Server::start().await;
        let l = redis.limiter().await;
        // Two instances alive: each gets half of 4 a minute.
        l.instances.store(2, Ordering::Relaxed);
        redis.kill();
        assert_eq!(l.check(5, 4).await, (Counted::LocalFallback, Ok(())));
        assert_eq!(l.check(5, 4).await, (Counted::LocalFallback, Ok(())));
        let (counted, verdict) = l.check(5, 4).await;
        assert_eq!(counted, Counted::LocalFallback);
        // The client is told the limit in force, not the share.
        assert_eq!(verdict.unwrap_err().limit, 4);
        // One fallback key and the (empty) lease entry.
        assert_eq!(l.fallback.len(), 1);
        assert_eq!(l.local_keys(), 2);
    }

    #[tokio::test]
    async fn small_limits_hold_nothing_ahead_so_three_instances_admit_the_limit_once() {
        let redis = Server::start().await;
        let ls = redis.limiters(3).await;
        // 3 a minute and 120 a minute (below 50 per instance): exact.
        for (key, per_minute) in [(11, 3), (12, 120)] {
            let started = Instant::now();
            let mut total = 0;
            for round in 0..(per_minute as usize + 20) {
                for l in &ls {
                    total += admitted(l, key, per_minute, 1).await;
                }
                if round == 0 {
                    assert_eq!(ls[0].leases.get(&(key, per_minute)).unwrap().units(), 0, "nothing held ahead");
                }
            }
            let most = per_minute as usize + refill(per_minute, started);
            assert!(
                (per_minute as usize..=most).contains(&total),
                "{per_minute}/min: 3 instances admitted {total}"
            );
        }
    }

    /// Sends `n` requests in turns over `ls`, `weights[i]` at a time to
    /// instance i, from concurrent tasks per instance; the admitted count.
    async fn drive(ls: &[ClusterLimiter], key: u64, per_minute: u32, weights: &[usize], n: usize) -> usize {
        let mut total = 0;
        let mut sent = 0;
        while sent < n {
            for (l, w) in ls.iter().zip(weights) {
                let batch = (*w).min(n - sent);
                let verdicts = futures_util::future::join_all((0..batch).map(|_| l.check(key, per_minute))).await;
                for (counted, v) in verdicts {
                    assert_eq!(counted, Counted::Cluster, "Redis is up");
                    total += usize::from(v.is_ok());
                }
                sent += batch;
            }
        }
        total
    }

    #[tokio::test]
    async fn alternating_and_skewed_traffic_over_three_instances_stays_within_the_bound() {
        let redis = Server::start().await;
        let ls = redis.limiters(3).await;
        // 6000 a minute: each instance may hold 40 ahead (2% of the limit in all).
        let per_minute = 6000;
        let ahead = 3 * max_lease(per_minute, 3) as usize;
        assert_eq!(ahead, 120);
        for (key, weights) in [(21, [8, 8, 8]), (22, [30, 3, 1])] {
            let before = redis.script_calls().await;
            let started = Instant::now();
            let total = drive(&ls, key, per_minute, &weights, 9000).await;
            // From a full bucket every admitted unit was granted first, so the
            // bucket's own bound holds; at most the leases left unspent at the
            // end are missing.
            let most = per_minute as usize + refill(per_minute, started);
            assert!(
                total + ahead >= per_minute as usize && total <= most,
                "{weights:?}: admitted {total} of 9000 (limit {per_minute}, refill to {most})"
            );
            // Leases and cached refusals: far fewer Redis calls than requests
            // (while the bucket is empty each instance asks once per unit
            // refilled, 100 a second, however many requests it refuses).
            let calls = redis.script_calls().await - before;
            let most = 900 + 300 * started.elapsed().as_secs().saturating_add(1);
            assert!(
                calls <= most,
                "{weights:?}: {calls} script calls for 9000 requests (at most {most})"
            );
        }
    }

    #[tokio::test]
    async fn leases_held_when_a_window_starts_add_at_most_two_percent() {
        let redis = Server::start().await;
        let ls = redis.limiters(3).await;
        let per_minute = 6000;
        let key = 31;
        // Warm every instance's lease to its cap with a steady trickle well
        // under the limit.
        for _ in 0..40 {
            for l in &ls {
                for _ in 0..5 {
                    assert_eq!(l.check(key, per_minute).await.1, Ok(()));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let held: i64 = ls.iter().map(|l| l.leases.get(&(key, per_minute)).unwrap().units()).sum();
        assert!(held > 0, "the instances hold units ahead");
        assert!(held <= 120, "held {held}, over 3 x the cap of 40");
        // A new window: the shared bucket is full again (as after a quiet
        // minute), while the instances keep their leases. A burst from all
        // three admits the bucket, its refill, and at most what they held.
        let _: () = redis.conn().await.del(redis_key(key, per_minute)).await.unwrap();
        let started = Instant::now();
        let total = drive(&ls, key, per_minute, &[16, 16, 16], 9000).await;
        let most = per_minute as usize + refill(per_minute, started) + held as usize;
        assert!(
            total <= most && total * 100 <= (per_minute as usize + refill(per_minute, started)) * 102,
            "burst admitted {total} (limit {per_minute}, held {held})"
        );
    }

    #[tokio::test]
    async fn a_dead_instance_lease_lets_the_others_admit_less_not_more() {
        let redis = Server::start().await;
        let mut ls = redis.limiters(3).await;
        let per_minute = 6000;
        let key = 41;
        let started = Instant::now();
        let mut total = drive(&ls, key, per_minute, &[10, 10, 10], 1500).await;
        let dead = ls.pop().unwrap();
        let stranded = dead.leases.get(&(key, per_minute)).unwrap().units() as usize;
        drop(dead);
        total += drive(&ls, key, per_minute, &[10, 10], 9000).await;
        let most = per_minute as usize + refill(per_minute, started);
        assert!(total <= most, "admitted {total} after an instance died (at most {most})");
        assert!(
            total + stranded + 80 >= per_minute as usize,
            "admitted {total}, stranded {stranded}: more lost than the leases held"
        );
    }

    #[tokio::test]
    async fn refusals_are_cached_until_the_bucket_has_a_unit() {
        let redis = Server::start().await;
        let ls = redis.limiters(3).await;
        // 60 a minute, 3 instances: nothing held ahead; one unit a second.
        let key = 51;
        let mut ok = 0;
        for l in &ls {
            ok += admitted(l, key, 60, 20).await;
        }
        assert_eq!(ok, 60);
        let before = redis.script_calls().await;
        let started = Instant::now();
        let mut late = 0;
        for l in &ls {
            for _ in 0..500 {
                let (counted, verdict) = l.check(key, 60).await;
                assert_eq!(counted, Counted::Cluster);
                match verdict {
                    Ok(()) => late += 1,
                    // The wait for the next unit (under a second), rounded up.
                    Err(r) => assert_eq!(
                        r,
                        RateLimited {
                            limit: 60,
                            retry_after_secs: 1
                        }
                    ),
                }
            }
        }
        // Only what refilled meanwhile (one a second) was admitted.
        let secs = started.elapsed().as_secs();
        assert!(late as u64 <= secs + 1, "{late} admitted over the limit in {secs} s");
        // Each instance asked Redis once per cached second (plus the admitted).
        let calls = redis.script_calls().await - before;
        assert!(
            calls <= 3 * (secs + 2) + 2 * late as u64,
            "{calls} script calls for 1500 requests in {secs} s"
        );
    }

    #[tokio::test]
    async fn a_busy_token_costs_redis_calls_per_interval_not_per_request() {
        let redis = Server::start().await;
        let l = redis.limiter().await;
        let before = redis.script_calls().await;
        let started = Instant::now();
        let n = 20_000;
        let ok = drive(std::slice::from_ref(&l), 61, 100_000_000, &[32], n).await;
        assert_eq!(ok, n);
        let calls = redis.script_calls().await - before;
        // A ramp of 8-fold steps, then about two top-ups a second.
        let most = 20 + 4 * started.elapsed().as_secs().saturating_add(1);
        assert!(calls <= most, "{calls} script calls for {n} requests (at most {most})");
    }

    #[tokio::test]
    async fn a_redis_restart_falls_back_then_recovers() {
        let mut redis = Server::start().await;
        let ls = redis.limiters(2).await;
        let key = 71;
        // 6000 a minute over 2 instances: leases of up to 60 each.
        for l in &ls {
            assert_eq!(admitted(l, key, 6000, 50).await, 50);
        }
        redis.kill();
        // Leased units are spent first (they were granted), then each
        // instance decides alone at its share: 3000 a minute.
        let mut fallback = 0;
        let mut ok = 0;
        let started = Instant::now();
        for _ in 0..4000 {
            let (counted, verdict) = ls[0].check(key, 6000).await;
            if counted == Counted::LocalFallback {
                fallback += 1;
                ok += usize::from(verdict.is_ok());
                if let Err(l) = verdict {
                    assert_eq!(l.limit, 6000, "the limit in force, not the share");
                }
            }
        }
        assert!(fallback > 3000, "only {fallback} requests decided locally");
        let most = 3000 + refill(3000, started);
        assert!((3000..=most).contains(&ok), "the fallback admitted {ok} at a share of 3000");
        // Redis comes back (empty): the shared limit is consulted again.
        redis.run().await;
        let hang_guard = Instant::now() + Duration::from_secs(20);
        loop {
            // Instance 0 spent its lease: this asks Redis.
            if ls[0].check(key, 6000).await == (Counted::Cluster, Ok(())) {
                break;
            }
            assert!(Instant::now() < hang_guard, "never back on the shared limit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(redis.conn().await.exists::<_, bool>(redis_key(key, 6000)).await.unwrap());
    }

    #[tokio::test]
    async fn idle_leases_are_swept() {
        let redis = Server::start().await;
        let l = redis.limiter().await;
        for key in 0..50 {
            assert_eq!(l.check(key, 6000).await.1, Ok(()));
        }
        assert_eq!(l.local_keys(), 50);
        l.sweep();
        assert_eq!(l.local_keys(), 50, "recent leases are kept");
        // Leases idle for a minute go (once their top-ups have landed: one
        // in flight keeps its lease).
        while l.leases.iter().any(|e| e.refilling.load(Ordering::Acquire)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        l.sweep_at(l.shared.now_us() + IDLE_US + 1);
        assert_eq!(l.local_keys(), 0);
    }
}
