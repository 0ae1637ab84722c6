//! Wiring: builds the shared state (`state`), binds both listeners, runs the background
//! tasks, and shuts everything down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::limit::Limits;
use crate::server::{self, ConnOptions, PerCore};
use crate::state::{AppState, open_store};
use crate::store::{StoreError, TokenStore};
use crate::token::now_unix;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the token store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the data-plane threads: {0}")]
    DataPlane(std::io::Error),
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it? change `{key}` in the config")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        key: &'static str,
        source: std::io::Error,
    },
}
/// A started gateway.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    /// The data plane's accept loops, on their own threads.
    data: PerCore,
    /// The admin listener and the background loops, on the caller's runtime.
    tasks: JoinSet<()>,
    /// The usage flusher: stopped only once the data plane has drained, so
    /// that it counts the last requests too (it flushes as it stops).
    usage: (CancellationToken, tokio::task::JoinHandle<()>),
}

/// Starts the gateway: binds both listeners and spawns the loops.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let store = open_store(&config).await?;
    start_with_store(config, store).await
}

/// Starts the gateway on a store built by the caller (tests inject faults).
pub async fn start_with_store(config: Config, store: Arc<dyn TokenStore>) -> Result<Running, StartError> {
    let (listen, threads) = (config.server.listen, config.server.data_plane_threads);
    let data_listeners = server::bind_many(listen, threads).map_err(|source| StartError::Bind {
        addr: listen,
        what: "data plane",
        key: "server.listen",
        source,
    })?;
    let admin_listener = bind(config.server.admin_listen, "admin API", "server.admin_listen").await?;
    let state = AppState::new(config, store).await?;
    let data_addr = data_listeners[0].local_addr().expect("bound");
    let admin_addr = admin_listener.local_addr().expect("bound");
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let server_cfg = &state.config.server;
    let opts = ConnOptions {
        header_read_timeout: server_cfg.header_read_timeout,
        max_connections: 16_384,
        shutdown_grace: server_cfg.shutdown_grace,
    };

    // One `Gateway` for all data-plane threads: its token index, limiter,
    // aggregators (whose caches and health view must not be split, or a
    // session would be re-initialised upstream once per thread) are shared.
    // What must not be shared is the upstream connection pools; each thread
    // picks its own (`upstream::use_pool_on_this_thread`, slot 0 stays with
    // this runtime, where the aggregators' health probes run).
    let gateway = Arc::new(Gateway::new(Arc::clone(&state)));
    let fast = server::fast::FastPath {
        gateway: Arc::clone(&gateway),
        max_body: server_cfg.max_body_bytes,
        body_read_timeout: server_cfg.body_read_timeout,
    };
    // People-facing pages (`web`: sign-in links, /me, OAuth later) share
    // the data listener: hyper's path sends them there by path prefix; the
    // fast path (`POST /ws/...`) never sees them.
    let web = crate::web::service(Arc::clone(&state));
    let make_data_service = move |thread: usize| {
        crate::upstream::use_pool_on_this_thread(thread + 1);
        let gateway = Arc::clone(&gateway);
        let web = web.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            // Decided before anything is cloned: a gateway request costs one
            // prefix test more, nothing else.
            let web = crate::web::is_people_path(req.uri().path()).then(|| web.clone());
            let gateway = Arc::clone(&gateway);
            async move {
                match web {
                    Some(web) => crate::web::handle(&web, req).await,
                    None => gateway.handle(req).await,
                }
            }
        });
        (service, Some(fast.clone()))
    };
    let data = server::serve_per_core("data", data_listeners, make_data_service, opts.clone(), shutdown.clone())
        .await
        .map_err(StartError::DataPlane)?;

    let admin_service = TowerToHyperService::new(crate::admin::router(Arc::clone(&state)));
    tasks.spawn(server::serve("admin", admin_listener, admin_service, opts, shutdown.clone()));

    spawn_maintenance(&mut tasks, Arc::clone(&state), shutdown.clone());
    let usage_stop = CancellationToken::new();
    let flusher = crate::usage::Flusher::new(
        Arc::clone(&state.usage),
        Arc::clone(&state.config),
        Arc::clone(&state.store),
        Arc::clone(&state.metrics),
    );
    let usage = (usage_stop.clone(), tokio::spawn(flusher.run(usage_stop)));
    // Not one of `tasks`: shutdown must not wait out the grace when nothing
    // is streaming.
    let (cutoff, grace, stop) = (state.streams_cutoff.clone(), server_cfg.shutdown_grace, shutdown.clone());
    tokio::spawn(async move {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
        cutoff.cancel();
    });
    tracing::info!(data = %data_addr, admin = %admin_addr, data_plane_threads = threads, workspaces = state.config.workspaces.len(), "portcullis is listening");
    Ok(Running {
        data_addr,
        admin_addr,
        state,
        shutdown,
        data,
        tasks,
        usage,
    })
}

impl Running {
    /// Begins graceful shutdown: stop accepting, drain, flush.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until shutdown has completed, then writes pending `last_used_at`.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.data.drained().await;
        self.usage.0.cancel();
        if let Err(e) = (&mut self.usage.1).await {
            tracing::error!(error = %e, "the usage flusher failed");
        }
        match self.state.verifier.flush_last_used().await {
            Ok(n) => tracing::info!(tokens = n, "flushed last_used_at"),
            Err(e) => tracing::error!(error = %e, "could not flush last_used_at on shutdown"),
        }
        // The data plane has drained: nothing more will be queued.
        let n = self.state.audit.flush().await;
        tracing::debug!(events = n, "flushed the audit queue");
        // Only now: the flush may use a store connection whose task lives on
        // a data-plane runtime (see `server::serve_per_core`).
        self.data.join().await;
    }
}

async fn bind(addr: SocketAddr, what: &'static str, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, key, source })
}

/// Background loops: revocation log polling, `last_used_at` flushing, and
/// sweeping idle index and limiter entries. They stop with the listeners.
fn spawn_maintenance(tasks: &mut JoinSet<()>, state: Arc<AppState>, shutdown: CancellationToken) {
    tasks.spawn(crate::auth::sync::run(
        Arc::clone(&state.verifier),
        state.config.server.revocation_poll,
        shutdown.clone(),
    ));
    // The instance registry: revocations check how many instances a push
    // reached, and the cluster limiter's fallback share depends on the count.
    let s = Arc::clone(&state);
    tasks.spawn(every_now(Duration::from_secs(2), shutdown.clone(), move || {
        let s = Arc::clone(&s);
        async move {
            if let Err(e) = s.store.heartbeat().await {
                tracing::debug!(error = %e, "instance heartbeat failed");
            }
            if let Limits::Cluster(c) = &*s.limiter {
                c.heartbeat().await;
            }
        }
    }));
    let s = Arc::clone(&state);
    tasks.spawn(every(state.config.server.last_used_flush, shutdown.clone(), move || {
        let s = Arc::clone(&s);
        async move {
            if let Err(e) = s.verifier.flush_last_used().await {
                tracing::warn!(error = %e, "cannot flush last_used_at; will retry");
            }
        }
    }));
    tasks.spawn(Arc::clone(&state.audit).run_writer(shutdown.clone()));
    let s = Arc::clone(&state);
    tasks.spawn(every(Duration::from_secs(60), shutdown, move || {
        let s = Arc::clone(&s);
        async move {
            let evicted = s.verifier.sweep_idle(now_unix());
            s.limiter.sweep();
            tracing::debug!(evicted, "swept idle index and limiter entries");
        }
    }));
}

/// Runs `f` every `period` until `shutdown`, first after one period.
async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::select! {
        _ = tokio::time::sleep(period) => {},
        _ = shutdown.cancelled() => return,
    }
    every_now(period, shutdown, f).await
}

/// Runs `f` at once and then every `period` until `shutdown`.
async fn every_now<F, Fut>(period: Duration, shutdown: CancellationToken, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => f().await,
            _ = shutdown.cancelled() => return,
        }
    }
}
