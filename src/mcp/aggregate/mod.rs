//! A workspace with several servers: Portcullis is the MCP server (contract §7).
//!
//! The gateway answers `initialize` itself, initialises every upstream the
//! token may use (forwarding the client's capabilities, so upstreams may ask
//! it for sampling, elicitation and roots), and seals the upstream session ids
//! into its own `Mcp-Session-Id` (see [`super::session`]): no session table,
//! so any instance serves any session and a restart loses none.
//!
//! Names: tools and prompts become `<server>__<name>`; resources keep their
//! URIs unless two servers list the same one, when the later server's becomes
//! `portcullis://<server>/<uri>`. Requests the upstreams send to the client
//! get ids `<server>__<original id as JSON>`, so the client's answer can be
//! routed back without any state. Client request ids and progress tokens are
//! passed unchanged: each request goes to exactly one upstream, so they are
//! already unique on the way back.
//!
//! This file owns the [`Aggregator`] (its state and the per-request `Ctx`),
//! the entry point [`Aggregator::handle`] and the session lookup; each other
//! idea has its own file: `handshake`, `lists` (merged lists and names),
//! `route` (which upstream a message goes to), `exchange` (one request to
//! one upstream), `relay` (event streams and answer rewriting),
//! `stateless` (the sessionless revision) and `health`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::join_all;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};

use super::session::{Sealer, SessionState, UpstreamSession};
use super::sse;
use crate::auth::CachedToken;
use crate::config::{FailureMode, UpstreamServer, Workspace};
use crate::error::{Body, GatewayError, full};
use crate::mcp::Revocable;
use crate::state::AppState;
use crate::telemetry::UpstreamFailure;
use crate::upstream::{Body as UpstreamBody, Upstream, UpstreamError};

mod exchange;
mod handshake;
mod health;
mod lists;
mod relay;
mod route;
mod stateless;

use exchange::*;
use handshake::*;
use health::*;
use lists::*;
use relay::*;
use route::*;
use stateless::*;

pub use lists::expose;

/// Handshake revisions we negotiate, newest first.
pub use crate::build_info::MCP_REVISIONS as SUPPORTED_VERSIONS;
/// The stateless revision: no handshake, no session, `_meta` on every request.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// Largest upstream message read whole (lists, handshake answers, one event).
const MAX_MESSAGE: usize = 16 << 20;
/// Bound of each in-memory map (renewed sessions, mangled names, resource owners).
const MAP_CAP: usize = 10_000;
/// Client parameters larger than this are not kept in the session id.
const MAX_CLIENT_PARAMS: usize = 2048;

/// Why an exchange with one upstream failed.
#[derive(Debug)]
enum CallError {
    Down(String),
    Timeout,
    /// The upstream refused the gateway's configured credentials.
    Refused(u16),
    /// It answered 404 to a request in a session: it forgot the session.
    SessionLost,
    /// It answered, but not with what MCP requires.
    Protocol(String),
}

impl CallError {
    fn into_gateway(self) -> GatewayError {
        match self {
            CallError::Timeout => GatewayError::UpstreamTimeout,
            CallError::Refused(s) => GatewayError::UpstreamUnavailable { upstream_status: Some(s) },
            CallError::Down(_) | CallError::SessionLost | CallError::Protocol(_) => {
                GatewayError::UpstreamUnavailable { upstream_status: None }
            }
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Down(d) => write!(f, "unreachable: {d}"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Refused(s) => write!(f, "refused the gateway's credentials ({s})"),
            CallError::SessionLost => f.write_str("lost its session"),
            CallError::Protocol(d) => write!(f, "bad answer: {d}"),
        }
    }
}

/// One aggregating workspace.
pub struct Aggregator {
    workspace: Arc<Workspace>,
    upstreams: Vec<Upstream>,
    up: Vec<AtomicBool>,
    /// Fires when an upstream goes down or comes back: open client streams
    /// send `list_changed` notifications.
    changed: broadcast::Sender<()>,
    sealer: Arc<Sealer>,
    keepalive: Duration,
    /// Upstream sessions re-established after the sealed one was lost (or
    /// first established lazily), keyed by (gateway session id, server).
    renewed: DashMap<(Box<str>, usize), UpstreamSession>,
    /// Exposed name (after the prefix) → upstream name, for names that had
    /// to be shortened; per server.
    mangled: Vec<DashMap<String, String>>,
    /// Per server, the resource URIs of its latest list (`None`: never
    /// listed here). Each server's own set, never a merged one: which
    /// server a plain URI routes to depends on the reading token's servers
    /// (the first of them, in configuration order, that lists it), so that
    /// nothing one token lists changes where another token's reads go.
    resources: Vec<std::sync::RwLock<Option<ServerUris>>>,
    /// What each upstream announced at its first handshake here (for
    /// `server/discover`, which has no handshake of its own).
    capabilities: Vec<std::sync::OnceLock<Value>>,
    /// Health and tool counts published for the admin API (`set_up`,
    /// `list_one`).
    metrics: Arc<crate::telemetry::Metrics>,
}

/// The resource URIs one server listed last.
struct ServerUris {
    uris: HashSet<Box<str>>,
    /// False when the list was longer than what is kept.
    complete: bool,
}

/// What one request knows about its session.
struct Ctx<'a> {
    state: &'a AppState,
    sealed: &'a str,
    session: &'a SessionState,
    request_id: &'a HeaderValue,
    /// Servers of this session the token may use, in configuration order.
    usable: Vec<usize>,
    /// A request of the stateless revision: routing headers go upstream too.
    stateless: bool,
    /// The request's token: streams answering it end when it stops being valid.
    token: &'a CachedToken,
}

impl Aggregator {
    /// `pools`: connection pools per upstream (see [`Upstream::new`]).
    /// `metrics`: where the health seen here is published (the admin API's
    /// Servers view reads it).
    pub fn new(
        workspace: Arc<Workspace>,
        sealer: Arc<Sealer>,
        keepalive: Duration,
        pools: usize,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Arc<Self> {
        let upstreams: Vec<Upstream> = workspace.servers.iter().map(|s| Upstream::new(Arc::clone(s), pools)).collect();
        let n = upstreams.len();
        let agg = Arc::new(Aggregator {
            workspace,
            upstreams,
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            changed: broadcast::channel(16).0,
            sealer,
            keepalive,
            renewed: DashMap::new(),
            mangled: (0..n).map(|_| DashMap::new()).collect(),
            resources: (0..n).map(|_| std::sync::RwLock::new(None)).collect(),
            capabilities: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
            metrics,
        });
        spawn_health(Arc::downgrade(&agg));
        agg
    }

    fn name(&self, i: usize) -> &str {
        &self.workspace.servers[i].name
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.workspace.servers.iter().position(|s| s.name == name)
    }

    fn split_prefixed<'a>(&self, exposed: &'a str) -> Option<(usize, &'a str)> {
        split_prefixed(self.workspace.servers.iter().map(|s| s.name.as_str()), exposed)
    }

    fn allowed(token: &CachedToken, name: &str) -> bool {
        token.allowed_servers.as_ref().is_none_or(|a| a.iter().any(|s| **s == *name))
    }

    /// Handles one data-plane request that passed authentication, limits and
    /// the body checks.
    pub async fn handle(
        &self,
        state: &AppState,
        token: &CachedToken,
        method: Method,
        headers: &HeaderMap,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        if !self.workspace.servers.iter().any(|s| Self::allowed(token, &s.name)) {
            return Err(GatewayError::Forbidden);
        }
        let msg = if method == Method::POST {
            let msg: Value = serde_json::from_slice(&body).map_err(|_| GatewayError::ParseError)?;
            if !msg.is_object() {
                // Batches (2025-03-26 only) are not fanned out: each message
                // may belong to another upstream.
                return Err(GatewayError::InvalidRequest);
            }
            if msg.get("method").and_then(Value::as_str) == Some("initialize") {
                return self.initialize(state, token, msg, request_id).await;
            }
            if !headers.contains_key("mcp-session-id") {
                // The stateless revision, or a client that never sends
                // session ids (they exist): both are served on upstream
                // sessions this instance keeps for the token.
                let revision = is_stateless(headers, &msg);
                return self.stateless(state, token, headers, msg, request_id, revision).await;
            }
            Some(msg)
        } else {
            None
        };
        let (sealed, session) = self.session(headers, token)?;
        let ctx = Ctx {
            state,
            token,
            sealed: &sealed,
            session: &session,
            request_id,
            usable: session
                .upstreams
                .iter()
                .filter(|u| Self::allowed(token, &u.server))
                .filter_map(|u| self.index_of(&u.server))
                .collect(),
            stateless: false,
        };
        match msg {
            Some(msg) => self.message(&ctx, token, msg).await,
            None if method == Method::GET => self.open_stream(&ctx).await,
            None => {
                join_all(ctx.usable.iter().map(|&i| self.end_session(&ctx, i))).await;
                let mut resp = Response::new(full(Bytes::new()));
                *resp.status_mut() = StatusCode::OK;
                Ok(resp)
            }
        }
    }

    /// Opens and checks the client's session id.
    fn session(&self, headers: &HeaderMap, token: &CachedToken) -> Result<(String, SessionState), GatewayError> {
        let value = headers.get("mcp-session-id").ok_or(GatewayError::SessionRequired)?;
        let sealed = value.to_str().map_err(|_| GatewayError::SessionNotFound)?;
        let session = self
            .sealer
            .open(&self.workspace.slug, sealed)
            .ok_or(GatewayError::SessionNotFound)?;
        if *session.token_id != *token.session_owner() {
            // Sessions are bearer-bound: another token's session is refused
            // like a bad credential, and says nothing about whose it is.
            tracing::warn!("session id presented with another token");
            return Err(GatewayError::Unauthorized { header_missing: false });
        }
        Ok((sealed.to_owned(), session))
    }
}

fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(v).expect("serializable")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixed_names_split_on_the_longest_server_name() {
        let names = ["x", "x_", "ab"];
        let split = |e| split_prefixed(names.iter().copied(), e);
        assert_eq!(split("x___t"), Some((1, "t")));
        assert_eq!(split("x__t"), Some((0, "t")));
        assert_eq!(split("x__\"7\""), Some((0, "\"7\"")));
        assert_eq!(split("ab__c__d"), Some((2, "c__d")));
        assert_eq!(split("y__t"), None);
        assert_eq!(split("x_t"), None);
        // In reverse configuration order too.
        let names = ["x_", "x"];
        assert_eq!(split_prefixed(names.iter().copied(), "x___t"), Some((0, "t")));
    }

    use super::*;

    #[test]
    fn names_are_prefixed_and_always_fit_the_pattern() {
        assert_eq!(expose("py", "echo"), "py__echo");
        let long = "a".repeat(80);
        let odd = "get.file/contents v2";
        for name in [long.as_str(), odd, "ünïcode", ""] {
            let e = expose("everything", name);
            assert!(
                e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{e}"
            );
            assert!(e.starts_with("everything__"), "{e}");
        }
        assert_ne!(
            expose("s", &"a".repeat(80)),
            expose("s", &"a".repeat(81)),
            "long names stay distinct"
        );
        // Pinned, so that a change of the scheme (which would rename every
        // exposed tool under clients' feet) is seen; and names that sanitise
        // to the same text stay apart by their digest.
        assert_eq!(expose("s", odd), "s__get_file_contents_v2_a9ke3N");
        assert_ne!(expose("s", "a.b"), expose("s", "a/b"));
        assert!(expose("s", "a.b").starts_with("s__a_b_"));
    }

    #[test]
    fn server_requests_get_routable_ids() {
        let mut m = json!({"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{}});
        prefix_server_request("everything", &mut m);
        assert_eq!(m["id"], "everything__0");
        let mut m = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}});
        prefix_server_request("py", &mut m);
        assert_eq!(m["params"]["requestId"], r#"py__"x""#);
        let mut m = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1}});
        prefix_server_request("py", &mut m);
        assert_eq!(m["params"]["progressToken"], 1, "progress tokens are the client's own");
        let mut m = json!({"jsonrpc":"2.0","id":3,"result":{}});
        prefix_server_request("py", &mut m);
        assert_eq!(m["id"], 3, "answers to the client's requests keep its id");
    }

    #[test]
    fn capabilities_are_merged() {
        let c = merge_capabilities(&[
            json!({"tools":{},"logging":{}}),
            json!({"resources":{"subscribe":true},"prompts":{}}),
        ]);
        assert_eq!(c["tools"]["listChanged"], true);
        assert_eq!(c["resources"]["subscribe"], true);
        assert!(c.get("prompts").is_some() && c.get("logging").is_some() && c.get("completions").is_none());
    }
}
