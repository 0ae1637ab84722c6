//! The state both planes share: the configuration, the token store, the
//! verifier, the limiter and the metrics, built once at start.
//!
//! It sits below the data plane (`gateway`, `mcp`), the admin API (`admin`)
//! and `auth::self_check`, so they can all hold it without importing the
//! wiring in `app`, which only binds listeners, spawns loops and shuts down.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::auth::{IndexOptions, Verifier};
use crate::config::{Config, LimitScope, StoreConfig};
use crate::limit::cluster::ClusterLimiter;
use crate::limit::{Limiter, Limits};
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{StoreError, TokenStore};
use crate::telemetry::Metrics;
use crate::usage::Usage;

/// The address a request's connection comes from, put in the request's
/// extensions on hyper's path by `server::WithPeer` (the fast path hands it to
/// `Gateway::handle_from` directly): the token index budgets store reads
/// per client address.
/// It lives here, below `server` and both planes, because `server` hands
/// requests to `gateway` (the fast path) and both planes read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Everything request handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn TokenStore>,
    pub verifier: Arc<Verifier>,
    pub limiter: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// The audit trail (`crate::audit`): `audit.record(event).await` for a
    /// control-plane event, written before it returns.
    pub audit: Arc<Audit>,
    /// Usage analytics counters, flushed by `usage::Flusher` (`app`).
    pub usage: Arc<Usage>,
    /// The store's shared secret for binding pass-through sessions when
    /// `server.session_keys` is not set (`gateway::session_bind`).
    pub session_bind_key: Option<[u8; 32]>,
    /// Cancelled at the shutdown grace deadline: responses still streaming
    /// then end with a last error event (`mcp::Revocable`) instead of
    /// being cut off mid-stream when their connection is dropped.
    pub streams_cutoff: CancellationToken,
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> Result<Arc<dyn TokenStore>, StoreError> {
    open_store_at(&config.store, &config.source).await
}

/// Opens a store; a failure names the file or server, the configuration key
/// and the config file, and says what to do, because "unable to open
/// database file" alone sends operators hunting.
pub async fn open_store_at(store: &StoreConfig, source: &std::path::Path) -> Result<Arc<dyn TokenStore>, StoreError> {
    match store {
        StoreConfig::Sqlite { path } => match SqliteStore::open(path) {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) => Err(StoreError::Unavailable(sqlite_open_message(path, source, &e.to_string()))),
        },
        StoreConfig::Redis {
            url,
            timeout,
            wait_replicas,
            ..
        } => match RedisStore::connect(url, *timeout).await {
            Ok(s) => Ok(Arc::new(s.with_wait_replicas(*wait_replicas))),
            Err(e) => Err(StoreError::Unavailable(format!(
                "cannot use the Redis store at {} (`store.url` in {}): {e}. Check that Redis runs and is reachable from here, and that store.url points at the primary (or, for redis+sentinel:// and redis+cluster:// URLs, at Sentinels or Cluster nodes that know one)",
                redis_endpoint(url),
                source.display()
            ))),
        },
    }
}

fn sqlite_open_message(path: &std::path::Path, source: &std::path::Path, cause: &str) -> String {
    let cause = cause.strip_prefix("store unavailable: ").unwrap_or(cause);
    let hint = if cause.contains("not a database") {
        "the file is not a Portcullis SQLite store (or is damaged): point store.path at the right file, or move this one away to start a new store"
    } else if cause.contains("newer") {
        "the store was written by a newer Portcullis: upgrade this binary"
    } else {
        "check that the directory exists or can be created, and that this user may read and write it (relative paths are relative to the config file's directory)"
    };
    format!(
        "cannot open the SQLite store {} (`store.path` in {}): {cause}. What to do: {hint}",
        path.display(),
        source.display()
    )
}

/// `host:port/db` of a Redis URL, without any userinfo (a password).
pub fn redis_endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{rest}")
}

impl AppState {
    /// The parts `auth::self_check` reads.
    pub fn self_check(&self) -> crate::auth::self_check::Deps<'_> {
        crate::auth::self_check::Deps {
            config: &self.config,
            store: &*self.store,
            verifier: &self.verifier,
            limiter: &self.limiter,
            metrics: &self.metrics,
        }
    }

    pub async fn new(config: Config, store: Arc<dyn TokenStore>) -> Result<Arc<AppState>, StoreError> {
        let metrics = Arc::new(Metrics::new(&config));
        let mut options = IndexOptions {
            revocation_poll: config.server.revocation_poll,
            miss_reads_per_second: config.server.store_miss_reads_per_second,
            ..IndexOptions::default()
        };
        if let StoreConfig::Redis { revocation_grace, .. } = &config.store {
            options.shared_store = true;
            options.revocation_grace = *revocation_grace;
        }
        let verifier = Arc::new(Verifier::new(Arc::clone(&store), Arc::clone(&metrics), options));
        let audit = Audit::new(&config, Arc::clone(&store), Arc::clone(&metrics))?;
        verifier.set_audit(Arc::clone(&audit));
        verifier.sync_revocation_seq().await?;
        let known = verifier.load_filter().await?;
        tracing::debug!(tokens = known, "filter of existing token hashes loaded");
        let limiter = match (&config.store, config.limits.scope) {
            (StoreConfig::Redis { url, timeout, .. }, LimitScope::Cluster) => {
                // Its own connection, so limiter traffic never queues behind
                // token reads (and the other way round).
                Limits::Cluster(Box::new(ClusterLimiter::new(RedisStore::connect(url, *timeout).await?)))
            }
            _ => Limits::Instance(Limiter::new()),
        };
        // Not fatal: without it, pass-through sessions are bound under a key
        // of this process only (they survive neither restarts nor a hop to
        // another instance).
        let session_bind_key = store.shared_key().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the store's session-binding key; using one of this process only");
            None
        });
        let usage = Arc::new(Usage::new(&config));
        Ok(Arc::new(AppState {
            usage,
            config: Arc::new(config),
            session_bind_key,
            store,
            verifier,
            limiter: Arc::new(limiter),
            metrics,
            audit,
            streams_cutoff: CancellationToken::new(),
        }))
    }
}
