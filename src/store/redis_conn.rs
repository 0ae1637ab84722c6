//! How every Redis user (the stores, the cluster limiter) reaches Redis:
//! [`RedisConn`], one cloneable multiplexed connection whatever the
//! deployment (`store::redis_url`).
//!
//! - One primary: the `redis` crate's `ConnectionManager` (reconnects to the
//!   same address).
//! - Cluster: the crate's `cluster_async::ClusterConnection`, which follows
//!   `MOVED` redirections and the promotion of a replica, and reads from
//!   primaries only (replica reads are never enabled: a lagging replica
//!   could resurrect a revoked token). It learns a new topology only from
//!   `MOVED` answers and dropped connections, so a primary that hangs
//!   (frozen, partitioned: connections open, no answers) would keep its
//!   slots forever; [`ClusterLink`] therefore builds a fresh connection,
//!   which reads the topology again, after a command times out.
//! - Sentinel: [`SentinelConn`], a small reconnecting wrapper, because the
//!   crate's `ConnectionManager` reconnects to the address it first had and
//!   never asks Sentinel again. It asks the Sentinels for the primary, checks
//!   with `ROLE` that the node it reached is a primary (a demoted one must not
//!   be read), drops the connection on any error that may mean a failover,
//!   and re-checks `ROLE` twice a second, so that a primary demoted under an
//!   open connection stops being used within that time.
//!
//! While a failover is under way commands fail, which the stores report as
//! `StoreError::Unavailable`: requests fail closed (503) until the new
//! primary answers, and nothing needs restarting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use super::redis_url::{RedisTarget, SentinelTarget};

/// The connection every Redis-backed store and the cluster limiter use.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterLink),
    Sentinel(SentinelConn),
}

/// A Cluster connection, replaced by a fresh one after a timeout.
#[derive(Clone)]
pub struct ClusterLink {
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    client: redis::cluster::ClusterClient,
    conn: Mutex<ClusterConnection>,
    /// Set while a replacement is being built (one at a time).
    rebuilding: std::sync::atomic::AtomicBool,
    timeout: Duration,
    /// `user:password@` of the seed URLs (or empty), for the subscriber's
    /// own connection to one node.
    auth: String,
    /// Bumped at each replacement: subscriptions end with the connection
    /// they were made next to, and are made again on the current primary.
    changes: tokio::sync::watch::Sender<u64>,
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
            RedisConn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a redis::Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(_) => 0,
            RedisConn::Sentinel(c) => c.shared.target.db,
        }
    }
}

/// A pub/sub message stream that ends when its connection does.
pub type MessageStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>;

impl RedisConn {
    /// Connects to `target`; `timeout` bounds each connection attempt and
    /// each command.
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> RedisResult<RedisConn> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(RedisConn::Single(client.get_connection_manager_with_config(config).await?))
            }
            RedisTarget::Cluster(nodes) => {
                let auth = nodes
                    .first()
                    .and_then(|u| u.strip_prefix("redis://"))
                    .and_then(|u| u.rsplit_once('@'))
                    .map_or(String::new(), |(a, _)| format!("{a}@"));
                // Few, quick retries: a command on a slot whose primary is
                // down fails (503) within about two timeouts instead of
                // queueing for the whole failover.
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .overall_response_timeout(Some(timeout * 2))
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(250)
                    .build()?;
                let conn = within(timeout * 2, client.get_async_connection()).await?;
                Ok(RedisConn::Cluster(ClusterLink {
                    shared: Arc::new(ClusterShared {
                        client,
                        conn: Mutex::new(conn),
                        rebuilding: false.into(),
                        timeout,
                        auth,
                        changes: tokio::sync::watch::channel(0).0,
                    }),
                }))
            }
            RedisTarget::Sentinel(t) => Ok(RedisConn::Sentinel(SentinelConn::connect(t, timeout).await?)),
        }
    }

    /// Subscribes to `channel` on a connection of its own. On a Cluster, on
    /// the primary that serves `slot_key` (classic PUBLISH reaches every
    /// node, but only subscribers on the publishing node are counted in
    /// its reply, and the revoke script publishes from the token slot's
    /// primary); with Sentinel, on the current primary, and the stream ends
    /// when a failover replaces it, so the caller resubscribes there.
    pub async fn subscribe(&self, channel: &str, slot_key: &str, timeout: Duration) -> RedisResult<MessageStream> {
        match self {
            RedisConn::Single(_) => Err(io_error("a single-primary store subscribes through its own client")),
            RedisConn::Cluster(link) => {
                let mut changes = link.shared.changes.subscribe();
                let generation = *changes.borrow_and_update();
                let (host, port) = link.primary_of(slot_key).await?;
                let client = redis::Client::open(format!("redis://{}{}:{port}", link.shared.auth, bracket(&host)))?;
                let mut pubsub = within(timeout, client.get_async_pubsub()).await?;
                within(timeout, pubsub.subscribe(channel)).await?;
                Ok(Box::pin(
                    pubsub.into_on_message().take_until(Box::pin(changed(changes, generation))),
                ))
            }
            RedisConn::Sentinel(s) => {
                let (generation, client) = s.shared.primary_client().await?;
                let mut pubsub = within(timeout, client.get_async_pubsub()).await?;
                within(timeout, pubsub.subscribe(channel)).await?;
                let changes = s.shared.changes.subscribe();
                Ok(Box::pin(
                    pubsub.into_on_message().take_until(Box::pin(changed(changes, generation))),
                ))
            }
        }
    }

    /// Keys matching `pattern`, by `SCAN` (never blocking Redis). On a
    /// Cluster, on the primary serving `slot_key`: callers pass a pattern
    /// whose keys all share that key's hash tag.
    pub async fn scan(&self, pattern: &str, slot_key: &str) -> RedisResult<Vec<String>> {
        let mut conn = self.clone();
        let route = match self {
            RedisConn::Cluster(link) => Some(link.slot_of(slot_key).await?),
            _ => None,
        };
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
            let v = match (&mut conn, route) {
                (RedisConn::Cluster(link), Some(slot)) => {
                    let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)));
                    link.route(cmd, to).await?
                }
                _ => cmd.query_async(&mut conn).await?,
            };
            let (next, keys): (u64, Vec<String>) = redis::from_redis_value(v)?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Runs `cmd` on the primary serving `key` (on one primary or
    /// Sentinel: the primary), for commands that name no key (`INFO`,
    /// `CONFIG GET`) but are about the node holding `key`.
    pub async fn on_primary_of(&self, key: &str, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            RedisConn::Cluster(link) => {
                let slot = link.slot_of(key).await?;
                let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)));
                link.route(cmd.clone(), to).await
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }

    /// `"single"`, `"cluster"` or `"sentinel"` (doctor, logs).
    pub fn mode(&self) -> &'static str {
        match self {
            RedisConn::Single(_) => "single",
            RedisConn::Cluster(_) => "cluster",
            RedisConn::Sentinel(_) => "sentinel",
        }
    }
}

/// Resolves once the watched generation is no longer `generation`.
async fn changed(mut changes: tokio::sync::watch::Receiver<u64>, generation: u64) {
    while *changes.borrow_and_update() == generation {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

impl ClusterLink {
    fn current(&self) -> ClusterConnection {
        self.shared.conn.lock().expect("not poisoned").clone()
    }

    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.current().req_packed_command(cmd).await;
            self.check(&r);
            r
        })
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a redis::Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.current().req_packed_commands(pipeline, offset, count).await;
            self.check(&r);
            r
        })
    }

    async fn route(&self, cmd: Cmd, to: RoutingInfo) -> RedisResult<Value> {
        let r = self.current().route_command(cmd, to).await;
        self.check(&r);
        r
    }

    /// After a timeout, builds a fresh connection in the background (the
    /// crate re-reads the topology only on `MOVED` or a dropped connection,
    /// neither of which a hung primary produces) and swaps it in.
    fn check<T>(&self, r: &RedisResult<T>) {
        let Err(e) = r else { return };
        if !(e.is_timeout() || e.is_io_error()) || self.shared.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            match within(shared.timeout * 2, shared.client.get_async_connection()).await {
                Ok(conn) => {
                    *shared.conn.lock().expect("not poisoned") = conn;
                    shared.changes.send_modify(|g| *g += 1);
                    tracing::info!("reconnected to the Redis Cluster after a timeout (topology read again)");
                }
                Err(e) => tracing::warn!(error = %e, "cannot reconnect to the Redis Cluster; will retry on the next failure"),
            }
            // At most one rebuild per half second, however many commands fail.
            tokio::time::sleep(Duration::from_millis(500)).await;
            shared.rebuilding.store(false, Ordering::Release);
        });
    }

    async fn slot_of(&self, key: &str) -> RedisResult<u16> {
        let v = self
            .route(
                redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Ok(redis::from_redis_value(v)?)
    }

    /// `(host, port)` of the primary serving `key`'s slot, from `CLUSTER SLOTS`.
    async fn primary_of(&self, key: &str) -> RedisResult<(String, u16)> {
        let slot = self.slot_of(key).await?;
        let v = self
            .route(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let ranges: Vec<Vec<Value>> = redis::from_redis_value(v)?;
        for r in ranges {
            let (Some(start), Some(end), Some(primary)) = (r.first(), r.get(1), r.get(2)) else {
                continue;
            };
            let (start, end): (u16, u16) = (redis::from_redis_value(start.clone())?, redis::from_redis_value(end.clone())?);
            if (start..=end).contains(&slot) {
                let node: Vec<Value> = redis::from_redis_value(primary.clone())?;
                if let (Some(host), Some(port)) = (node.first(), node.get(1)) {
                    return Ok((redis::from_redis_value(host.clone())?, redis::from_redis_value(port.clone())?));
                }
            }
        }
        Err(io_error("no primary serves the slot (cluster down?)"))
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

/// `f`, failing as an I/O timeout after `timeout`.
async fn within<T>(timeout: Duration, f: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(timeout, f).await.map_err(|_| io_error("timed out"))?
}

fn io_error(msg: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, msg))
}

/// The current primary of a Sentinel group, re-resolved after any error
/// that may mean it changed.
#[derive(Clone)]
pub struct SentinelConn {
    shared: Arc<SentinelShared>,
}

struct SentinelShared {
    target: SentinelTarget,
    timeout: Duration,
    /// Held while resolving, so that one failover makes one Sentinel query.
    resolver: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and its generation.
    current: Mutex<Option<(u64, MultiplexedConnection, redis::Client)>>,
    generation: AtomicU64,
    /// The generation of the connection in use (0: none), for subscribers.
    changes: tokio::sync::watch::Sender<u64>,
    /// When resolving last failed: callers queued behind a failed attempt
    /// fail at once instead of each waiting out another one (under load,
    /// a failover would otherwise build a queue of waits).
    failed_at: Mutex<Option<std::time::Instant>>,
}

/// How long after a failed resolution callers fail without trying again.
const RESOLVE_BACKOFF: Duration = Duration::from_millis(100);

/// An error after which the connection may be to a node that is no longer
/// (or not yet) the primary.
fn means_reconnect(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading)
        )
}

impl SentinelConn {
    async fn connect(t: &SentinelTarget, timeout: Duration) -> RedisResult<SentinelConn> {
        let addrs = t.sentinels.iter().map(|(h, p)| redis::ConnectionAddr::Tcp(h.clone(), *p));
        let mut builder = SentinelClientBuilder::new(addrs, &t.master, SentinelServerType::Master)?.set_client_to_redis_db(t.db);
        if let Some(u) = &t.username {
            builder = builder.set_client_to_redis_username(u);
        }
        if let Some(p) = &t.password {
            builder = builder.set_client_to_redis_password(p);
        }
        let shared = Arc::new(SentinelShared {
            target: t.clone(),
            timeout,
            resolver: tokio::sync::Mutex::new(builder.build()?),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            changes: tokio::sync::watch::channel(0).0,
            failed_at: Mutex::new(None),
        });
        // Fails now if no primary can be found, like the other modes.
        shared.connection().await?;
        tokio::spawn(watch_role(Arc::downgrade(&shared)));
        Ok(SentinelConn { shared })
    }

    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.shared.connection().await?;
            let r = conn.req_packed_command(cmd).await;
            self.shared.check(generation, &r);
            r
        })
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a redis::Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.shared.connection().await?;
            let r = conn.req_packed_commands(pipeline, offset, count).await;
            self.shared.check(generation, &r);
            r
        })
    }
}

impl SentinelShared {
    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().expect("not poisoned").as_ref().map(|(g, c, _)| (*g, c.clone()))
    }

    /// The connection to the primary, resolving it through Sentinel first
    /// if there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut resolver = self.resolver.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        if self
            .failed_at
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| t.elapsed() < RESOLVE_BACKOFF)
        {
            return Err(io_error("no Redis primary (failover under way?)"));
        }
        let r = self.resolve(&mut resolver).await;
        *self.failed_at.lock().expect("not poisoned") = r.is_err().then(std::time::Instant::now);
        r
    }

    async fn resolve(&self, resolver: &mut SentinelClient) -> RedisResult<(u64, MultiplexedConnection)> {
        let client = within(self.timeout, resolver.async_get_client()).await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut conn = within(self.timeout, client.get_multiplexed_async_connection_with_config(&config)).await?;
        if !is_primary(&mut conn).await? {
            // Sentinel has not caught up with a failover (or the node
            // has not yet taken its new role): refuse, ask again next time.
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the node Sentinel names as primary is not a primary (failover under way)",
            )));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().expect("not poisoned") = Some((generation, conn.clone(), client));
        self.changes.send_replace(generation);
        tracing::info!(generation, "connected to the Redis primary named by Sentinel");
        Ok((generation, conn))
    }

    async fn primary_client(&self) -> RedisResult<(u64, redis::Client)> {
        let (generation, _) = self.connection().await?;
        match &*self.current.lock().expect("not poisoned") {
            Some((g, _, client)) if *g == generation => Ok((generation, client.clone())),
            _ => Err(io_error("the primary changed while subscribing")),
        }
    }

    /// Drops connection `generation` if `r` says it may be stale.
    fn check<T>(&self, generation: u64, r: &RedisResult<T>) {
        if let Err(e) = r
            && means_reconnect(e)
        {
            self.forget(generation, e);
        }
    }

    fn forget(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut cur = self.current.lock().expect("not poisoned");
        if cur.as_ref().is_some_and(|(g, _, _)| *g == generation) {
            *cur = None;
            drop(cur);
            self.changes.send_replace(0);
            tracing::warn!(generation, error = %why, "dropping the connection to the Redis primary; will ask Sentinel again");
        }
    }
}

async fn is_primary(conn: &mut MultiplexedConnection) -> RedisResult<bool> {
    let role: Vec<Value> = redis::cmd("ROLE").query_async(conn).await?;
    let first: String = role
        .first()
        .map(|v| redis::from_redis_value(v.clone()))
        .transpose()?
        .unwrap_or_default();
    Ok(first == "master")
}

/// Checks the role of the connection in use twice a second, until the
/// connection's owner is dropped.
async fn watch_role(shared: Weak<SentinelShared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(s) = shared.upgrade() else { return };
        let Some((generation, mut conn)) = s.cached() else { continue };
        match is_primary(&mut conn).await {
            Ok(true) => {}
            Ok(false) => s.forget(generation, &"the node is no longer a primary"),
            Err(e) if means_reconnect(&e) => s.forget(generation, &e),
            Err(_) => {}
        }
    }
}
