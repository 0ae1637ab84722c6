//! Cluster-wide per-token limits: GCRA in Redis, one round trip per request.
//!
//! The script reads the server's clock (`TIME`), so instances need no clock
//! agreement. The key holds the token's theoretical arrival time (TAT) in
//! microseconds and expires once the bucket is full again, so Redis keeps
//! state only for active tokens. If Redis fails, the request is decided by
//! the local limiter at this instance's share of the limit (limit divided by
//! the instances seen recently), and the caller is told so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::store::redis::RedisStore;

use super::{Limiter, RateLimited};

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return ahead - tolerance
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor(ahead / 1000) + 1)
return 0
"#;

pub struct ClusterLimiter {
    conn: ConnectionManager,
    script: Script,
    fallback: Limiter,
    /// Instances seen heartbeating recently (at least 1), kept by the store.
    instances: Arc<AtomicU32>,
    store: RedisStore,
}

/// How a request was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// By the shared limit in Redis.
    Cluster,
    /// Redis failed: by the local limiter at this instance's share.
    LocalFallback,
}

impl ClusterLimiter {
    /// Uses `store`'s connection and its live-instance count; the caller
    /// keeps the count fresh with [`ClusterLimiter::heartbeat`].
    pub fn new(store: RedisStore) -> Self {
        ClusterLimiter {
            conn: store.connection(),
            script: Script::new(GCRA),
            fallback: Limiter::new(),
            instances: store.live_instances(),
            store,
        }
    }

    pub async fn check(&self, key: u64, per_minute: u32) -> (Counted, Result<(), RateLimited>) {
        let per_minute = per_minute.max(1);
        let interval_us = 60_000_000 / u64::from(per_minute);
        // A burst of `per_minute` requests: the TAT may run ahead by a minute.
        let tolerance_us = interval_us * u64::from(per_minute);
        let redis_key = format!("portcullis:rl:{per_minute}:{key:016x}");
        let result: redis::RedisResult<u64> = self
            .script
            .key(redis_key)
            .arg(interval_us)
            .arg(tolerance_us)
            .invoke_async(&mut self.conn.clone())
            .await;
        match result {
            Ok(0) => (Counted::Cluster, Ok(())),
            Ok(wait_us) => (
                Counted::Cluster,
                Err(RateLimited {
                    limit: per_minute,
                    retry_after_secs: Duration::from_micros(wait_us).as_secs_f64().ceil().max(1.0) as u64,
                }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cluster rate limiter unavailable; using this instance's share locally");
                let share = (per_minute / self.instances.load(Ordering::Relaxed).max(1)).max(1);
                let verdict = self.fallback.check(key, share).map_err(|l| RateLimited { limit: per_minute, ..l });
                (Counted::LocalFallback, verdict)
            }
        }
    }

    /// Refreshes the live-instance count that sets the fallback share.
    pub async fn heartbeat(&self) {
        use crate::store::TokenStore;
        if let Err(e) = self.store.heartbeat().await {
            tracing::debug!(error = %e, "instance heartbeat failed");
        }
    }

    pub fn sweep(&self) {
        self.fallback.sweep();
    }

    pub fn local_keys(&self) -> usize {
        self.fallback.len()
    }
}
