//! The accept loop shared by both listeners: connection limits, header read
//! timeout, and graceful shutdown; and the data plane's per-core runtimes
//! that run one accept loop each, with the HTTP/1.1 fast path ([`fast`]) in
//! front of hyper.

pub mod fast;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::state::PeerAddr;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use fast::{FastPath, Rewind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A hyper service as the listeners run it (one per connection, on any
/// thread).
pub trait HttpService<B>:
    Service<http::Request<Incoming>, Response = http::Response<B>, Future: Send + 'static, Error: Into<BoxError>>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Future: Send + 'static, Error: Into<BoxError>>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body hyper can send from such a service.
pub trait HttpBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> HttpBody for B where B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// Per-listener connection settings.
#[derive(Clone)]
pub struct ConnOptions {
    /// A client must send complete request headers within this time
    /// (slow-loris defence).
    pub header_read_timeout: Duration,
    /// Open connections beyond this wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long open requests and streams may finish after shutdown begins.
    pub shutdown_grace: Duration,
}

/// A connection's service, adding its [`PeerAddr`] to every request.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S> Service<http::Request<Incoming>> for WithPeer<S>
where
    S: Service<http::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(req)
    }
}

/// Serves `listener` until `shutdown` is cancelled, then drains connections
/// for up to the grace period.
pub async fn serve<S, B>(name: &'static str, listener: TcpListener, service: S, opts: ConnOptions, shutdown: CancellationToken)
where
    S: HttpService<B>,
    B: HttpBody,
{
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    serve_limited(name, listener, service, None, opts, permits, shutdown).await
}

/// [`serve`] with the connection cap passed in, so that several accept loops
/// can share one (`opts.max_connections` is not consulted).
async fn serve_limited<S, B>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    fast: Option<FastPath>,
    opts: ConnOptions,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) where
    S: HttpService<B>,
    B: HttpBody,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // Bounds the header buffer of each connection (431 beyond it).
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // Subscribed now, before any shutdown signal, so that a connection
        // the fast path hands to hyper later still hears of it, and so that
        // the drain below waits for fast-path connections too.
        let watcher = graceful.watcher();
        let (builder, service, fast, stop, header_timeout) = (
            Arc::clone(&builder),
            WithPeer {
                inner: service.clone(),
                peer,
            },
            fast.clone(),
            shutdown.clone(),
            opts.header_read_timeout,
        );
        tokio::spawn(async move {
            let (io, read) = match &fast {
                Some(fast) => match fast::serve(stream, fast, header_timeout, &stop).await {
                    Some(handoff) => handoff,
                    None => return drop((permit, watcher)),
                },
                None => (stream, Bytes::new()),
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(Rewind::new(io, read)), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        _ = &mut drained => return tracing::info!(listener = name, "all connections drained"),
        _ = tokio::time::sleep(opts.shutdown_grace) => {}
    }
    // At the grace deadline the data plane's streams are cut with a last
    // event (`AppState::streams_cutoff`, `mcp::Revocable`); a moment
    // more lets those events be written and their connections end before
    // what is left is dropped.
    tokio::select! {
        _ = &mut drained => tracing::info!(listener = name, "grace period over; remaining streams ended"),
        _ = tokio::time::sleep(LAST_WRITE) => tracing::warn!(listener = name, grace_ms = opts.shutdown_grace.as_millis() as u64, "grace period over; closing remaining connections"),
    }
}

/// How long after the grace deadline connections may take to write the last
/// event of their cut streams (a client that does not read is then dropped).
const LAST_WRITE: Duration = Duration::from_millis(500);

/// Binds `n` listening sockets on `addr` for [`serve_per_core`]; a port of 0
/// is chosen once and shared. Must run inside a tokio runtime (`listen`
/// registers with its reactor; the sockets are handed over as std listeners
/// and re-registered on their own runtime).
///
/// On Linux each socket is its own `SO_REUSEPORT` listener: the kernel
/// spreads incoming connections over them, so each thread waits on its own
/// accept queue and no accept wakes another thread. Elsewhere
/// `SO_REUSEPORT` does not balance (the newest socket would get every
/// connection), so the threads share one socket's queue instead.
pub fn bind_many(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let socket = || -> io::Result<TcpSocket> {
        let s = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restart is not refused because of
        // connections of the previous process still in TIME_WAIT.
        s.set_reuseaddr(true)?;
        Ok(s)
    };
    // tokio's own backlog for `TcpListener::bind`.
    const BACKLOG: u32 = 1024;
    if n <= 1 || !cfg!(target_os = "linux") {
        let s = socket()?;
        s.bind(addr)?;
        let mut all = vec![s.listen(BACKLOG)?.into_std()?];
        for _ in 1..n {
            all.push(all[0].try_clone()?);
        }
        return Ok(all);
    }
    // A socket that does not set SO_REUSEPORT first: it fails as a plain bind
    // would if anything (including another Portcullis, whose sockets would
    // otherwise silently share the port with ours) already listens there, and
    // it picks the port when `addr` asks for any. It is closed before the
    // real sockets bind (they could not join a port held without
    // SO_REUSEPORT); another process could take the port in between, which
    // then fails the bind below rather than going unnoticed.
    let addr = {
        let probe = socket()?;
        probe.bind(addr)?;
        probe.local_addr()?
    };
    (0..n)
        .map(|_| {
            let s = socket()?;
            #[cfg(target_os = "linux")]
            s.set_reuseport(true)?;
            s.bind(addr)?;
            s.listen(BACKLOG)?.into_std()
        })
        .collect()
}

/// Accept loops running on their own OS threads, one current-thread tokio
/// runtime each (see [`serve_per_core`]).
pub struct PerCore {
    drained: Vec<oneshot::Receiver<()>>,
    stop: CancellationToken,
    release: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Serves each of `listeners` on its own OS thread with its own
/// current-thread runtime, until `shutdown` is cancelled; then each drains
/// like [`serve`]. A connection is accepted, served, and whatever its
/// service spawns or awaits (upstream calls through a client created by
/// `make_service`) runs on that one thread: no work-stealing, no cross-thread
/// wake-ups between the client socket and the upstream socket.
///
/// `make_service(i)` runs once on thread `i`, inside that thread's runtime,
/// so that what it creates or sets (tasks, thread-locals) belongs there; it
/// returns hyper's service and, optionally, the fast path in front of it. The connection
/// cap `opts.max_connections` is global: the loops share one semaphore.
/// Returns once every thread has built its runtime and service.
pub async fn serve_per_core<F, S, B>(
    name: &'static str,
    listeners: Vec<std::net::TcpListener>,
    make_service: F,
    opts: ConnOptions,
    shutdown: CancellationToken,
) -> io::Result<PerCore>
where
    F: Fn(usize) -> (S, Option<FastPath>) + Send + Sync + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    let make_service = Arc::new(make_service);
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let mut per_core = PerCore {
        drained: Vec::with_capacity(listeners.len()),
        // Its own token, so that dropping a `PerCore` (e.g. a failed start)
        // stops these loops without cancelling the caller's `shutdown`.
        stop: shutdown.child_token(),
        release: CancellationToken::new(),
        threads: Vec::with_capacity(listeners.len()),
    };
    for (i, listener) in listeners.into_iter().enumerate() {
        let (ready_tx, ready_rx) = oneshot::channel::<io::Result<()>>();
        let (drained_tx, drained_rx) = oneshot::channel();
        let (make_service, opts, permits) = (Arc::clone(&make_service), opts.clone(), Arc::clone(&permits));
        let (stop, release) = (per_core.stop.clone(), per_core.release.clone());
        let thread = std::thread::Builder::new().name(format!("portcullis-{name}-{i}")).spawn(move || {
            // Built here rather than by the caller: a runtime must not be
            // dropped inside another runtime's async context, which a
            // failed thread spawn would otherwise do.
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let (service, fast) = make_service(i);
                let _ = ready_tx.send(Ok(()));
                serve_limited(name, listener, service, fast, opts, permits, stop).await;
                let _ = drained_tx.send(());
                // Tasks that outlive a request were spawned on this
                // runtime — e.g. a Redis connection's driver, when a
                // request triggered its reconnection — and only run while
                // this thread polls. Keep polling until the caller has
                // finished shutting down (its final flush may need them).
                release.cancelled().await;
            });
            // Dropping the runtime here cancels what is left on it
            // (streams past the grace period, health probes).
        })?;
        per_core.threads.push(thread);
        per_core.drained.push(drained_rx);
        // A thread that dropped its sender without a word panicked.
        ready_rx
            .await
            .unwrap_or_else(|_| Err(io::Error::other(format!("{name} thread {i} failed to start"))))?;
    }
    Ok(per_core)
}

impl PerCore {
    /// Resolves when every loop has stopped accepting and drained (after
    /// `shutdown` was cancelled).
    pub async fn drained(&mut self) {
        for rx in self.drained.drain(..) {
            // An error means the thread is gone (it panicked): nothing to wait for.
            let _ = rx.await;
        }
    }

    /// Lets the threads end and joins them, without blocking the caller's
    /// async context (the caller may be a single-threaded test runtime).
    pub async fn join(mut self) {
        self.release.cancel();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a data-plane thread panicked");
                }
            }
        })
        .await;
    }
}

impl Drop for PerCore {
    /// Without [`PerCore::join`] (a caller that gave up on the gateway): stop
    /// accepting and let the threads drain and end on their own.
    fn drop(&mut self) {
        self.stop.cancel();
        self.release.cancel();
    }
}
