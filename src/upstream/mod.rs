//! Pooled HTTP/1.1 clients for upstream servers, with connect and response
//! timeouts. Knows nothing of tokens or MCP: it sends a request and returns
//! the response head with a streaming body.

use std::sync::Arc;
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

/// One upstream server and its connection pool (cloning shares the pool).
#[derive(Clone)]
pub struct Upstream {
    pub server: Arc<UpstreamServer>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    pub fn new(server: Arc<UpstreamServer>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(server.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // Idle keep-alive connections are reused across requests; closed
            // after 90 s idle, before typical upstream idle timeouts.
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .build(connector);
        Upstream { server, client }
    }

    /// Sends `req`; the timeout covers connecting and the response head, not
    /// the body, which may be a long-lived event stream.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.server.timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(UpstreamError::Unavailable(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
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
