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

use crate::store::redis::{RedisConn, RedisStore};

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
    conn: RedisConn,
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

#[cfg(test)]
mod tests {
    //! The limiter against a real, private `redis-server` on a free loopback
    //! port (as the integration tests start theirs), never a shared one.
    use redis::AsyncCommands;

    use super::*;

    struct Server {
        port: u16,
        child: std::process::Child,
        _dir: tempfile::TempDir,
    }

    impl Server {
        async fn start() -> Server {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test-deps.sh installs it)");
            let s = Server { port, child, _dir: dir };
            // Ready when it answers PING (bounded: a hang guard).
            for _ in 0..500 {
                if let Ok(mut c) = redis::Client::open(s.url()).unwrap().get_multiplexed_async_connection().await
                    && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
                {
                    return s;
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

        async fn conn(&self) -> redis::aio::MultiplexedConnection {
            redis::Client::open(self.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }

        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn tat_key(per_minute: u32, key: u64) -> String {
        format!("portcullis:rl:{per_minute}:{key:016x}")
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
        let mut conn = redis.conn().await;
        let tat: i64 = conn.get(tat_key(60, 7)).await.unwrap();
        let _: () = conn.set(tat_key(60, 7), tat - 1_000_000).await.unwrap();
        assert_eq!(l.check(7, 60).await.1, Ok(()), "one more after one interval");
        assert!(l.check(7, 60).await.1.is_err(), "and only one");
    }

    #[tokio::test]
    async fn state_is_kept_only_while_the_bucket_is_not_full() {
        let redis = Server::start().await;
        let l = redis.limiter().await;
        assert_eq!(l.check(9, 3).await.1, Ok(()));
        let mut conn = redis.conn().await;
        // One request at 3 a minute is 20 s of debt: the key expires when it
        // is paid back, so idle tokens cost Redis nothing.
        let ttl: i64 = conn.pttl(tat_key(3, 9)).await.unwrap();
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
        assert_eq!(l.local_keys(), 1);
    }
}
