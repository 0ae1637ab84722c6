//! Pooled HTTP/1.1 clients for upstream servers, with connect and response
//! timeouts. Knows nothing of tokens or MCP: it sends a request and returns
//! the response head with a streaming body.
//!
//! Each upstream has one pool per data-plane thread (and one for everything
//! else): hyper-util drives a pooled connection from a task on the runtime
//! that opened it, so a pool shared by the data plane's single-threaded
//! runtimes would hand a request on one thread a connection polled by
//! another, and every response would cross threads.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamServer;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer in time")]
    Timeout,
}

thread_local! {
    /// Which of an [`Upstream`]'s pools requests on this thread use: 0
    /// unless [`use_pool_on_this_thread`] said otherwise.
    static POOL: Cell<usize> = const { Cell::new(0) };
}

/// Makes upstream requests made on the calling thread use pool `slot` (of
/// the `pools` given to [`Upstream::new`]; out of range means 0). Each data-
/// plane thread calls this once with its own slot; the shared runtime's
/// threads keep 0 and share that pool, as a work-stealing runtime may.
pub fn use_pool_on_this_thread(slot: usize) {
    POOL.with(|p| p.set(slot));
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One upstream server and its connection pools (cloning shares them).
#[derive(Clone)]
pub struct Upstream {
    pub server: Arc<UpstreamServer>,
    /// Created on first use, by the thread that uses it.
    clients: Arc<[OnceLock<HttpClient>]>,
}

impl Upstream {
    /// `pools`: how many pool slots (at least 1) — one per data-plane thread
    /// plus one for the rest.
    pub fn new(server: Arc<UpstreamServer>, pools: usize) -> Self {
        Upstream {
            server,
            clients: (0..pools.max(1)).map(|_| OnceLock::new()).collect(),
        }
    }

    fn client(&self) -> &HttpClient {
        let slot = POOL.with(Cell::get);
        let slot = if slot < self.clients.len() { slot } else { 0 };
        self.clients[slot].get_or_init(|| build_client(&self.server))
    }

    /// Sends `req`; the timeout covers connecting and the response head, not
    /// the body, which may be a long-lived event stream.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.server.timeout, self.client().request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::Unavailable(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

fn build_client(server: &UpstreamServer) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(server.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Idle keep-alive connections are reused across requests; closed
        // after 90 s idle, before typical upstream idle timeouts.
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .build(connector)
}

/// The error and its sources on one line, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
