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

const INSTANCES_KEY: &str = "portcullis:instances";

pub struct ClusterLimiter {
    conn: ConnectionManager,
    script: Script,
    fallback: Limiter,
    /// Instances seen heartbeating recently (at least 1).
    instances: Arc<AtomicU32>,
    instance_id: String,
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
    pub fn new(conn: ConnectionManager) -> Self {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("OS random source");
        ClusterLimiter {
            conn,
            script: Script::new(GCRA),
            fallback: Limiter::new(),
            instances: Arc::new(AtomicU32::new(1)),
            instance_id: id.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    pub async fn check(&self, key: u64, per_minute: u32) -> (Counted, Result<(), RateLimited>) {
        let per_minute = per_minute.max(1);
        let interval_us = 60_000_000 / u64::from(per_minute);
        // A burst of `per_minute` requests: the TAT may run ahead by a minute.
        let tolerance_us = interval_us * u64::from(per_minute);
        let redis_key = format!("portcullis:rl:{per_minute}:{key:016x}");
        let result: redis::RedisResult<u64> = self.script.key(redis_key).arg(interval_us).arg(tolerance_us).invoke_async(&mut self.conn.clone()).await;
        match result {
            Ok(0) => (Counted::Cluster, Ok(())),
            Ok(wait_us) => (
                Counted::Cluster,
                Err(RateLimited { limit: per_minute, retry_after_secs: Duration::from_micros(wait_us).as_secs_f64().ceil().max(1.0) as u64 }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cluster rate limiter unavailable; using this instance's share locally");
                let share = (per_minute / self.instances.load(Ordering::Relaxed).max(1)).max(1);
                let verdict = self.fallback.check(key, share).map_err(|l| RateLimited { limit: per_minute, ..l });
                (Counted::LocalFallback, verdict)
            }
        }
    }

    /// Announces this instance and counts the live ones; run every few seconds.
    pub async fn heartbeat(&self) {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut conn = self.conn.clone();
        let counted: redis::RedisResult<(i64, i64, u32)> = redis::pipe()
            .atomic()
            .zadd(INSTANCES_KEY, &self.instance_id, now_ms)
            .zrembyscore(INSTANCES_KEY, 0, now_ms.saturating_sub(15_000))
            .zcard(INSTANCES_KEY)
            .query_async(&mut conn)
            .await;
        if let Ok((_, _, n)) = counted {
            self.instances.store(n.max(1), Ordering::Relaxed);
        }
    }

    pub fn sweep(&self) {
        self.fallback.sweep();
    }

    pub fn local_keys(&self) -> usize {
        self.fallback.len()
    }
}
