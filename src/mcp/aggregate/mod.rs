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

/// `<server>__<rest>` → (index of server, rest), on the longest server name
/// that is a prefix: with servers `x` and `x_`, `x___t` is `x_`'s `t`, never
/// `x`'s `_t`. (Configuration also refuses names that start or end with `_`,
/// so two names cannot overlap this way; the longest match keeps the split
/// right whatever the names.)
fn split_prefixed<'n, 'a>(names: impl Iterator<Item = &'n str>, exposed: &'a str) -> Option<(usize, &'a str)> {
    names
        .enumerate()
        .filter(|(_, n)| exposed.strip_prefix(n).is_some_and(|r| r.starts_with("__")))
        .max_by_key(|(_, n)| n.len())
        .map(|(i, n)| (i, &exposed[n.len() + 2..]))
}

/// Handshake revisions we negotiate, newest first.
pub use crate::build_info::MCP_REVISIONS as SUPPORTED_VERSIONS;
/// The stateless revision: no handshake, no session, `_meta` on every request.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// Pages followed per upstream list before giving up (a looping cursor).
const MAX_PAGES: usize = 100;
/// Largest upstream message read whole (lists, handshake answers, one event).
const MAX_MESSAGE: usize = 16 << 20;
/// Bound of each in-memory map (renewed sessions, mangled names, resource owners).
const MAP_CAP: usize = 10_000;
/// Client parameters larger than this are not kept in the session id.
const MAX_CLIENT_PARAMS: usize = 2048;
/// Health: an upstream that is up is probed this often, one that is down
/// after a backoff doubling from the first value to the second.
const PROBE_UP: Duration = Duration::from_secs(15);
const PROBE_DOWN: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(8));
/// Messages queued towards one client stream.
const STREAM_QUEUE: usize = 64;

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

/// The four lists the gateway merges.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }
    fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
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
    pub fn new(workspace: Arc<Workspace>, sealer: Arc<Sealer>, keepalive: Duration, pools: usize) -> Arc<Self> {
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

    fn set_up(&self, i: usize, up: bool) {
        if self.up[i].swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(workspace = %self.workspace.slug, server = %self.name(i), "upstream is back");
            } else {
                tracing::warn!(workspace = %self.workspace.slug, server = %self.name(i), "upstream is down; leaving it out until it answers again");
            }
            let _ = self.changed.send(());
        }
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
        if *session.token_id != *token.id {
            // Sessions are bearer-bound: another token's session is refused
            // like a bad credential, and says nothing about whose it is.
            tracing::warn!("session id presented with another token");
            return Err(GatewayError::Unauthorized { header_missing: false });
        }
        Ok((sealed.to_owned(), session))
    }

    /// A request without a session: of the stateless revision (2026-07-28)
    /// when `revision`, else from a client that does not keep sessions.
    /// `server/discover` is answered here (stateless revision only);
    /// everything else goes through the same routing as a session's requests,
    /// over upstream sessions this instance opens on the token's behalf
    /// (keyed by token, renewed when an upstream forgets one): the upstreams
    /// may speak only the handshake revisions.
    async fn stateless(
        &self,
        state: &AppState,
        token: &CachedToken,
        headers: &HeaderMap,
        msg: Value,
        request_id: &HeaderValue,
        revision: bool,
    ) -> Result<Response<Body>, GatewayError> {
        if revision {
            check_routing_headers(headers, &msg)?;
        }
        let meta = msg.pointer("/params/_meta");
        let field = |k: &str| meta.and_then(|m| m.get(k)).cloned();
        let client = json!({
            "capabilities": field("io.modelcontextprotocol/clientCapabilities").unwrap_or_else(|| json!({})),
            "clientInfo": field("io.modelcontextprotocol/clientInfo").unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
        });
        let session = SessionState {
            token_id: token.id.to_string(),
            version: SUPPORTED_VERSIONS[0].to_owned(),
            client: Some(client),
            upstreams: Vec::new(),
        };
        let key = format!("stateless/{}", token.id);
        let ctx = Ctx {
            state,
            token,
            sealed: &key,
            session: &session,
            request_id,
            usable: (0..self.upstreams.len()).filter(|&i| Self::allowed(token, self.name(i))).collect(),
            stateless: revision,
        };
        if revision && msg.get("method").and_then(Value::as_str) == Some("server/discover") {
            let id = msg.get("id").cloned().ok_or(GatewayError::InvalidRequest)?;
            let mut versions = vec![STATELESS_VERSION];
            versions.extend(SUPPORTED_VERSIONS);
            let result = json!({
                "supportedVersions": versions,
                "capabilities": merge_capabilities(&self.capabilities(&ctx).await),
                "serverInfo": {"name": "portcullis", "title": format!("Portcullis workspace {}", self.workspace.slug), "version": env!("CARGO_PKG_VERSION")},
            });
            let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
            AnswerRewrite::for_request(&ctx, "server/discover").apply(&mut answer);
            return Ok(json_response(StatusCode::OK, &answer));
        }
        if msg.get("method").is_none() {
            // No server-to-client requests exist in this revision to answer.
            return Err(GatewayError::InvalidRequest);
        }
        self.message(&ctx, token, msg).await
    }

    /// The capabilities the usable upstreams announced, from their last
    /// handshake on this instance (one is made when none was).
    async fn capabilities(&self, ctx: &Ctx<'_>) -> Vec<Value> {
        let mut out = Vec::new();
        for &i in &ctx.usable {
            if self.capabilities[i].get().is_none() {
                let _ = self.upstream_session(ctx, i).await;
            }
            if let Some(c) = self.capabilities[i].get() {
                out.push(c.clone());
            }
        }
        out
    }

    // ------------------------------------------------------------------ handshake

    async fn initialize(
        &self,
        state: &AppState,
        token: &CachedToken,
        msg: Value,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let id = msg.get("id").cloned().ok_or(GatewayError::InvalidRequest)?;
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        let requested = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
        let version = SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .unwrap_or(&SUPPORTED_VERSIONS[0]);
        let mut client = json!({
            "capabilities": params.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "clientInfo": params.get("clientInfo").cloned().unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
        });
        if serde_json::to_vec(&client).map_or(0, |v| v.len()) > MAX_CLIENT_PARAMS {
            client = json!({"capabilities": {}, "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")}});
        }
        let usable: Vec<usize> = (0..self.upstreams.len()).filter(|&i| Self::allowed(token, self.name(i))).collect();
        let results = join_all(usable.iter().map(|&i| self.init_upstream(state, i, &client, version, request_id))).await;
        let mut upstreams = Vec::new();
        let mut caps: Vec<Value> = Vec::new();
        let mut instructions = Vec::new();
        for (&i, r) in usable.iter().zip(results) {
            match r {
                Ok((u, result)) => {
                    caps.push(result.get("capabilities").cloned().unwrap_or(Value::Null));
                    if let Some(text) = result.get("instructions").and_then(Value::as_str) {
                        instructions.push(format!("[{}] {text}", self.name(i)));
                    }
                    upstreams.push(u);
                }
                Err(e) => {
                    tracing::warn!(server = %self.name(i), error = %e, "upstream initialisation failed");
                    if self.workspace.failure_mode == FailureMode::FailClosed {
                        return Err(e.into_gateway());
                    }
                    upstreams.push(UpstreamSession {
                        server: self.name(i).to_owned(),
                        session: None,
                        version: None,
                        ready: false,
                    });
                }
            }
        }
        let session = SessionState {
            token_id: token.id.to_string(),
            version: (*version).to_owned(),
            client: Some(client),
            upstreams,
        };
        let sealed = self.sealer.seal(&self.workspace.slug, &session);
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": merge_capabilities(&caps),
            "serverInfo": {"name": "portcullis", "title": format!("Portcullis workspace {}", self.workspace.slug), "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = Value::String(instructions.join("\n\n"));
        }
        let mut resp = json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
        resp.headers_mut().insert(
            "mcp-session-id",
            HeaderValue::from_str(&sealed).expect("base64url is a valid header value"),
        );
        Ok(resp)
    }

    /// Initialises one upstream: `initialize`, then `notifications/initialized`.
    async fn init_upstream(
        &self,
        state: &AppState,
        i: usize,
        client: &Value,
        version: &str,
        request_id: &HeaderValue,
    ) -> Result<(UpstreamSession, Value), CallError> {
        let mut params = client.clone();
        params["protocolVersion"] = Value::String(version.to_owned());
        let msg = json!({"jsonrpc": "2.0", "id": internal_id(), "method": "initialize", "params": params});
        let (headers, answer) = self.exchange(state, i, None, None, &msg, request_id).await?;
        let result = answer
            .get("result")
            .cloned()
            .ok_or_else(|| CallError::Protocol(format!("initialize failed: {}", answer.get("error").unwrap_or(&Value::Null))))?;
        let session = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let _ = self.capabilities[i].set(result.get("capabilities").cloned().unwrap_or_else(|| json!({})));
        let chosen = result.get("protocolVersion").and_then(Value::as_str).unwrap_or(version).to_owned();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.exchange(state, i, session.as_deref(), Some(&chosen), &note, request_id)
            .await?;
        Ok((
            UpstreamSession {
                server: self.name(i).to_owned(),
                session,
                version: Some(chosen),
                ready: true,
            },
            result,
        ))
    }

    /// This session's state for upstream `i`, initialising it first when it
    /// never was (it was down at `initialize`).
    async fn upstream_session(&self, ctx: &Ctx<'_>, i: usize) -> Result<UpstreamSession, CallError> {
        if let Some(u) = self.renewed.get(&(Box::from(ctx.sealed), i)) {
            return Ok(u.clone());
        }
        let sealed = ctx.session.upstreams.iter().find(|u| u.server == self.name(i));
        match sealed {
            Some(u) if u.ready => Ok(u.clone()),
            _ => self.renew(ctx, i).await,
        }
    }

    async fn renew(&self, ctx: &Ctx<'_>, i: usize) -> Result<UpstreamSession, CallError> {
        if !self.up[i].load(Ordering::Relaxed) {
            return Err(CallError::Down("marked down".into()));
        }
        let client = ctx
            .session
            .client
            .clone()
            .unwrap_or_else(|| json!({"capabilities": {}, "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")}}));
        let (u, _) = self
            .init_upstream(ctx.state, i, &client, &ctx.session.version, ctx.request_id)
            .await?;
        tracing::info!(server = %self.name(i), "upstream session (re-)established");
        if self.renewed.len() >= MAP_CAP {
            self.renewed.clear();
        }
        self.renewed.insert((Box::from(ctx.sealed), i), u.clone());
        Ok(u)
    }

    async fn end_session(&self, ctx: &Ctx<'_>, i: usize) {
        let Ok(u) = self.upstream_session(ctx, i).await else { return };
        if u.session.is_some() {
            let _ = self
                .send(
                    ctx.state,
                    i,
                    Method::DELETE,
                    u.session.as_deref(),
                    u.version.as_deref(),
                    Bytes::new(),
                    ctx.request_id,
                )
                .await;
        }
        self.renewed.remove(&(Box::from(ctx.sealed), i));
    }

    // ------------------------------------------------------------------ transport

    /// A routed POST in a session; with `routing`, the stateless revision's
    /// `Mcp-Method` / `Mcp-Name` headers are set from the rewritten message.
    async fn send_routed(
        &self,
        state: &AppState,
        i: usize,
        u: &UpstreamSession,
        body: Bytes,
        request_id: &HeaderValue,
        routing: Option<&Value>,
    ) -> Result<Response<UpstreamBody>, CallError> {
        let mut extra = Vec::new();
        if let Some(msg) = routing {
            if let Some(m) = msg
                .get("method")
                .and_then(Value::as_str)
                .and_then(|m| HeaderValue::from_str(m).ok())
            {
                extra.push(("mcp-method", m));
            }
            if let Some(n) = routed_name(msg).and_then(|n| HeaderValue::from_str(n).ok()) {
                extra.push(("mcp-name", n));
            }
        }
        self.send_with(
            state,
            i,
            Method::POST,
            u.session.as_deref(),
            u.version.as_deref(),
            body,
            request_id,
            &extra,
        )
        .await
    }

    /// One HTTP request to upstream `i`.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        state: &AppState,
        i: usize,
        method: Method,
        session: Option<&str>,
        version: Option<&str>,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<UpstreamBody>, CallError> {
        self.send_with(state, i, method, session, version, body, request_id, &[]).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_with(
        &self,
        state: &AppState,
        i: usize,
        method: Method,
        session: Option<&str>,
        version: Option<&str>,
        body: Bytes,
        request_id: &HeaderValue,
        extra: &[(&'static str, HeaderValue)],
    ) -> Result<Response<UpstreamBody>, CallError> {
        let req = upstream_request(&self.workspace.servers[i], method, session, version, body, request_id, extra);
        let started = Instant::now();
        match self.upstreams[i].send(req).await {
            Ok(resp) => {
                state.metrics.upstream_latency(self.workspace.index, i, started.elapsed());
                self.set_up(i, true);
                if matches!(resp.status().as_u16(), 401 | 407) {
                    state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Unavailable);
                    tracing::error!(server = %self.name(i), status = resp.status().as_u16(), "upstream refused the gateway's credentials; check the server's configured headers");
                    return Err(CallError::Refused(resp.status().as_u16()));
                }
                if resp.status() == StatusCode::NOT_FOUND && session.is_some() {
                    return Err(CallError::SessionLost);
                }
                Ok(resp)
            }
            Err(UpstreamError::Timeout) => {
                state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Timeout);
                Err(CallError::Timeout)
            }
            Err(UpstreamError::Unavailable(d)) => {
                state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Unavailable);
                self.set_up(i, false);
                Err(CallError::Down(d))
            }
        }
    }

    /// Sends one message and reads the one answer to it (JSON or the matching
    /// message of an event stream). A notification's answer is `Null`.
    async fn exchange(
        &self,
        state: &AppState,
        i: usize,
        session: Option<&str>,
        version: Option<&str>,
        msg: &Value,
        request_id: &HeaderValue,
    ) -> Result<(HeaderMap, Value), CallError> {
        let body = Bytes::from(serde_json::to_vec(msg).expect("serializable"));
        let resp = self.send(state, i, Method::POST, session, version, body, request_id).await?;
        let timeout = self.workspace.servers[i].timeout;
        let want = msg.get("id");
        match tokio::time::timeout(timeout, read_answer(resp, want)).await {
            Err(_) => {
                state.metrics.upstream_failure(self.workspace.index, UpstreamFailure::Timeout);
                Err(CallError::Timeout)
            }
            Ok(r) => r,
        }
    }

    /// [`Self::exchange`] inside the session, re-initialising the upstream
    /// once if it forgot the session.
    async fn call(&self, ctx: &Ctx<'_>, i: usize, msg: &Value) -> Result<Value, CallError> {
        let u = self.upstream_session(ctx, i).await?;
        match self
            .exchange(ctx.state, i, u.session.as_deref(), u.version.as_deref(), msg, ctx.request_id)
            .await
        {
            Err(CallError::SessionLost) => {
                let u = self.renew(ctx, i).await?;
                let (_, v) = self
                    .exchange(ctx.state, i, u.session.as_deref(), u.version.as_deref(), msg, ctx.request_id)
                    .await?;
                Ok(v)
            }
            r => r.map(|(_, v)| v),
        }
    }

    // ------------------------------------------------------------------ messages

    async fn message(&self, ctx: &Ctx<'_>, token: &CachedToken, msg: Value) -> Result<Response<Body>, GatewayError> {
        let id = msg.get("id").cloned();
        let Some(method) = msg.get("method").and_then(Value::as_str).map(str::to_owned) else {
            // A response: the client answering a request an upstream sent.
            return self.client_response(ctx, msg).await;
        };
        let Some(id) = id else {
            self.client_notification(ctx, &method, &msg).await;
            return Ok(accepted());
        };
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        let method = method.as_str();
        let result = match method {
            "ping" => json!({}),
            "tools/list" => self.list(ctx, ListKind::Tools, &params).await?,
            "prompts/list" => self.list(ctx, ListKind::Prompts, &params).await?,
            "resources/list" => self.list(ctx, ListKind::Resources, &params).await?,
            "resources/templates/list" => self.list(ctx, ListKind::Templates, &params).await?,
            "logging/setLevel" => {
                let results = join_all(ctx.usable.iter().map(|&i| self.call(ctx, i, &msg))).await;
                for (&i, r) in ctx.usable.iter().zip(results) {
                    if let Err(e) = r {
                        tracing::warn!(server = %self.name(i), error = %e, "logging/setLevel failed");
                    }
                }
                json!({})
            }
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                let name = params.get("name").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                let (i, original) = self.route_name(ctx, token, kind, name).await?;
                let mut msg = msg;
                msg["params"]["name"] = Value::String(original);
                return self.forward(ctx, i, msg, AnswerRewrite::for_request(ctx, method)).await;
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params.get("uri").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                let (i, original) = self.resource_owner(ctx, token, uri).await?;
                let mut rewrite = AnswerRewrite::for_request(ctx, method);
                if original != uri {
                    rewrite.uri = Some((original.clone(), uri.to_owned()));
                }
                let mut msg = msg;
                msg["params"]["uri"] = Value::String(original);
                return self.forward(ctx, i, msg, rewrite).await;
            }
            "completion/complete" => {
                let r = params.get("ref").ok_or(GatewayError::InvalidParams)?;
                let mut msg = msg.clone();
                let i = match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = r.get("name").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                        let (i, original) = self.route_name(ctx, token, ListKind::Prompts, name).await?;
                        msg["params"]["ref"]["name"] = Value::String(original);
                        i
                    }
                    Some("ref/resource") => {
                        let uri = r.get("uri").and_then(Value::as_str).ok_or(GatewayError::InvalidParams)?;
                        self.template_owner(ctx, uri).await?
                    }
                    _ => return Err(GatewayError::InvalidParams),
                };
                return self.forward(ctx, i, msg, AnswerRewrite::for_request(ctx, method)).await;
            }
            _ => return Err(GatewayError::MethodNotFound),
        };
        let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
        AnswerRewrite::for_request(ctx, method).apply(&mut answer);
        Ok(json_response(StatusCode::OK, &answer))
    }

    /// Notifications from the client go to every upstream of the session
    /// (`notifications/initialized` was already sent at `initialize`).
    /// Cancellation needs no routing: the cancelled id was sent to exactly
    /// one upstream, and the others ignore ids they do not know.
    async fn client_notification(&self, ctx: &Ctx<'_>, method: &str, msg: &Value) {
        if method == "notifications/initialized" {
            return;
        }
        join_all(ctx.usable.iter().map(|&i| async move {
            if let Err(e) = self.call(ctx, i, msg).await {
                tracing::debug!(server = %self.name(i), error = %e, method, "notification not delivered");
            }
        }))
        .await;
    }

    /// The client's answer to a server-to-client request: back to the
    /// upstream named in its id, with the upstream's own id.
    async fn client_response(&self, ctx: &Ctx<'_>, mut msg: Value) -> Result<Response<Body>, GatewayError> {
        let (i, original) = msg
            .get("id")
            .and_then(|id| self.unprefix_id(id))
            .filter(|(i, _)| ctx.usable.contains(i))
            .ok_or(GatewayError::InvalidParams)?;
        msg["id"] = original;
        self.call(ctx, i, &msg).await.map_err(CallError::into_gateway)?;
        Ok(accepted())
    }

    fn unprefix_id(&self, id: &Value) -> Option<(usize, Value)> {
        let (i, rest) = self.split_prefixed(id.as_str()?)?;
        Some((i, serde_json::from_str(rest).ok()?))
    }

    // ------------------------------------------------------------------ lists

    async fn list(&self, ctx: &Ctx<'_>, kind: ListKind, params: &Value) -> Result<Value, GatewayError> {
        Ok(self.list_owned(ctx, kind, params).await?.0)
    }

    /// The merged list, and for resources the server each plain URI of it
    /// belongs to (the first usable server, in configuration order, that
    /// lists it).
    async fn list_owned(&self, ctx: &Ctx<'_>, kind: ListKind, params: &Value) -> Result<(Value, HashMap<String, usize>), GatewayError> {
        if params.get("cursor").is_some_and(|c| !c.is_null()) {
            // Every page of every upstream is merged into one answer, so no
            // cursor is ever issued: one sent back is not ours.
            return Err(GatewayError::InvalidParams);
        }
        let results = join_all(ctx.usable.iter().map(|&i| self.list_one(ctx, i, kind))).await;
        let mut items = Vec::new();
        let mut seen_uris = HashSet::new();
        let mut owners = HashMap::new();
        for (&i, r) in ctx.usable.iter().zip(results) {
            let list = match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(server = %self.name(i), error = %e, method = kind.method(), "upstream left out of the list");
                    if self.workspace.failure_mode == FailureMode::FailClosed {
                        return Err(e.into_gateway());
                    }
                    continue;
                }
            };
            if kind == ListKind::Resources {
                self.remember_resources(i, &list);
            }
            for mut item in list {
                match kind {
                    ListKind::Tools | ListKind::Prompts => {
                        let Some(name) = item.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        let exposed = expose(self.name(i), name);
                        if exposed.len() != self.name(i).len() + 2 + name.len() {
                            self.remember_mangled(i, &exposed, name);
                        }
                        item["name"] = Value::String(exposed);
                    }
                    ListKind::Resources => {
                        let Some(uri) = item.get("uri").and_then(Value::as_str).map(str::to_owned) else {
                            continue;
                        };
                        if seen_uris.insert(uri.clone()) {
                            owners.insert(uri, i);
                        } else {
                            item["uri"] = Value::String(format!("portcullis://{}/{uri}", self.name(i)));
                        }
                    }
                    ListKind::Templates => {}
                }
                items.push(item);
            }
        }
        Ok((json!({ kind.key(): items }), owners))
    }

    /// Replaces server `i`'s remembered resource URIs with those of the
    /// list it just returned (at most `MAP_CAP`; beyond that the set is
    /// marked incomplete and a lookup that misses lists again).
    fn remember_resources(&self, i: usize, list: &[Value]) {
        let mut uris = HashSet::new();
        let mut complete = true;
        for uri in list.iter().filter_map(|item| item.get("uri").and_then(Value::as_str)) {
            if uris.len() >= MAP_CAP {
                complete = false;
                break;
            }
            uris.insert(Box::<str>::from(uri));
        }
        // Held for an assignment only; no await inside.
        *self.resources[i].write().unwrap_or_else(|p| p.into_inner()) = Some(ServerUris { uris, complete });
    }

    /// The owner of a plain `uri` for this session, from what was listed
    /// before, when that is conclusive: the first usable server (in
    /// configuration order) that lists it, provided every usable server
    /// before it has a complete list here that does not.
    fn known_owner(&self, ctx: &Ctx<'_>, uri: &str) -> Option<usize> {
        for &i in &ctx.usable {
            let guard = self.resources[i].read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(s) if s.uris.contains(uri) => return Some(i),
                Some(s) if s.complete => continue,
                _ => return None,
            }
        }
        None
    }

    /// Every page of one upstream's list. A server without that kind of list
    /// (-32601) contributes nothing; one marked down is skipped without
    /// waiting for a connect timeout (the health probe brings it back).
    async fn list_one(&self, ctx: &Ctx<'_>, i: usize, kind: ListKind) -> Result<Vec<Value>, CallError> {
        if !self.up[i].load(Ordering::Relaxed) {
            return Err(CallError::Down("marked down".into()));
        }
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let msg = json!({"jsonrpc": "2.0", "id": internal_id(), "method": kind.method(), "params": params});
            let answer = self.call(ctx, i, &msg).await?;
            let Some(result) = answer.get("result") else {
                let code = answer.pointer("/error/code").and_then(Value::as_i64);
                if code == Some(-32601) {
                    // The upstream does not serve this kind at all.
                    return Ok(items);
                }
                return Err(CallError::Protocol(format!(
                    "{} failed: {}",
                    kind.method(),
                    answer.get("error").unwrap_or(&Value::Null)
                )));
            };
            if let Some(arr) = result.get(kind.key()).and_then(Value::as_array) {
                items.extend(arr.iter().cloned());
            }
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(items),
            }
        }
        Err(CallError::Protocol(format!("{} paginated past {MAX_PAGES} pages", kind.method())))
    }

    fn remember_mangled(&self, i: usize, exposed: &str, original: &str) {
        let map = &self.mangled[i];
        if map.len() >= MAP_CAP {
            map.clear();
        }
        let rest = &exposed[self.name(i).len() + 2..];
        map.insert(rest.to_owned(), original.to_owned());
    }

    /// `<server>__<name>` → (server, upstream name). A shortened name unknown
    /// to this instance (listed on another) is learnt by listing that server.
    async fn route_name(&self, ctx: &Ctx<'_>, token: &CachedToken, kind: ListKind, exposed: &str) -> Result<(usize, String), GatewayError> {
        let unknown = || GatewayError::UnknownName {
            kind: if kind == ListKind::Tools { "tool" } else { "prompt" },
            name: exposed.to_owned(),
        };
        let (i, rest) = self.split_prefixed(exposed).ok_or_else(unknown)?;
        let server = self.name(i);
        if !Self::allowed(token, server) {
            return Err(GatewayError::Forbidden);
        }
        if !ctx.usable.contains(&i) {
            return Err(unknown());
        }
        let lookup = |s: &Self| -> Option<String> {
            if let Some(o) = s.mangled[i].get(rest) {
                return Some(o.clone());
            }
            (expose(server, rest) == exposed).then(|| rest.to_owned())
        };
        if let Some(o) = lookup(self) {
            return Ok((i, o));
        }
        self.list_one(ctx, i, kind)
            .await
            .map_err(CallError::into_gateway)?
            .iter()
            .for_each(|item| {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    let e = expose(server, name);
                    if e.len() != server.len() + 2 + name.len() {
                        self.remember_mangled(i, &e, name);
                    }
                }
            });
        lookup(self).map(|o| (i, o)).ok_or_else(unknown)
    }

    /// Which server a resource URI belongs to, and the URI it knows it by.
    async fn resource_owner(&self, ctx: &Ctx<'_>, token: &CachedToken, uri: &str) -> Result<(usize, String), GatewayError> {
        if let Some((server, original)) = uri.strip_prefix("portcullis://").and_then(|r| r.split_once('/')) {
            let i = self.index_of(server).ok_or(GatewayError::InvalidParams)?;
            if !Self::allowed(token, server) {
                return Err(GatewayError::Forbidden);
            }
            return Ok((i, original.to_owned()));
        }
        if let Some(i) = self.known_owner(ctx, uri) {
            return Ok((i, uri.to_owned()));
        }
        // Not known (yet): list this session's servers afresh and take the
        // owner from that very list.
        let (_, owners) = self.list_owned(ctx, ListKind::Resources, &json!({})).await?;
        if let Some(&i) = owners.get(uri) {
            return Ok((i, uri.to_owned()));
        }
        // Not listed: a URI built from a template.
        Ok((self.template_owner(ctx, uri).await?, uri.to_owned()))
    }

    /// The server whose resource template matches `uri` best (longest
    /// literal prefix). None matching: -32602 (a guess would send the URI
    /// to a server that never offered it).
    async fn template_owner(&self, ctx: &Ctx<'_>, uri: &str) -> Result<usize, GatewayError> {
        let results = join_all(ctx.usable.iter().map(|&i| self.list_one(ctx, i, ListKind::Templates))).await;
        let mut best: Option<(usize, usize)> = None;
        for (&i, r) in ctx.usable.iter().zip(results) {
            for t in r.unwrap_or_default() {
                let Some(template) = t.get("uriTemplate").and_then(Value::as_str) else {
                    continue;
                };
                let literal = template.split('{').next().unwrap_or_default();
                let exact = template == uri;
                if (exact || uri.starts_with(literal)) && best.is_none_or(|(_, len)| literal.len() > len || exact) {
                    best = Some((i, if exact { usize::MAX } else { literal.len() }));
                }
            }
        }
        best.map(|(i, _)| i).ok_or(GatewayError::InvalidParams)
    }

    // ------------------------------------------------------------------ streaming

    /// Sends a routed request and relays the answer as it arrives: JSON as
    /// is, an event stream message by message with server-to-client request
    /// ids prefixed.
    async fn forward(&self, ctx: &Ctx<'_>, i: usize, msg: Value, rewrite: AnswerRewrite) -> Result<Response<Body>, GatewayError> {
        let body = Bytes::from(serde_json::to_vec(&msg).expect("serializable"));
        let routing = ctx.stateless.then_some(&msg);
        let mut u = self.upstream_session(ctx, i).await.map_err(CallError::into_gateway)?;
        let resp = match self.send_routed(ctx.state, i, &u, body.clone(), ctx.request_id, routing).await {
            Err(CallError::SessionLost) => {
                u = self.renew(ctx, i).await.map_err(CallError::into_gateway)?;
                self.send_routed(ctx.state, i, &u, body, ctx.request_id, routing).await
            }
            r => r,
        }
        .map_err(|e| {
            tracing::warn!(server = %self.name(i), error = %e, "routed request failed");
            e.into_gateway()
        })?;
        let (parts, incoming) = resp.into_parts();
        if !is_event_stream(&parts.headers) {
            let body = if rewrite.is_noop() {
                incoming.boxed()
            } else {
                // One JSON answer to rewrite: read it whole (bounded).
                let bytes = Limited::new(incoming, MAX_MESSAGE)
                    .collect()
                    .await
                    .map_err(|_| GatewayError::UpstreamUnavailable { upstream_status: None })?
                    .to_bytes();
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut v) => {
                        rewrite.apply(&mut v);
                        full(serde_json::to_vec(&v).expect("serializable"))
                    }
                    Err(_) => full(bytes),
                }
            };
            let mut out = Response::new(body);
            *out.status_mut() = parts.status;
            if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
                out.headers_mut().insert(CONTENT_TYPE, ct.clone());
            }
            return Ok(out);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let resume = msg.get("id").map(|id| Resume {
            upstream: self.upstreams[i].clone(),
            session: u.session.clone(),
            version: u.version.clone(),
            request_id: ctx.request_id.clone(),
            answer_id: id.clone(),
        });
        // The last event, should the stream be cut, answers the request.
        let id = msg.get("id").and_then(|id| serde_json::value::to_raw_value(id).ok());
        tokio::spawn(relay(incoming, self.name(i).to_owned(), rewrite, resume, tx));
        Ok(self.event_stream(ctx, rx, id))
    }

    /// The client's GET stream: every upstream's GET stream merged, plus
    /// `list_changed` notifications when an upstream goes down or comes back.
    async fn open_stream(&self, ctx: &Ctx<'_>) -> Result<Response<Body>, GatewayError> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        for &i in &ctx.usable {
            let Ok(u) = self.upstream_session(ctx, i).await else { continue };
            let resp = self
                .send(
                    ctx.state,
                    i,
                    Method::GET,
                    u.session.as_deref(),
                    u.version.as_deref(),
                    Bytes::new(),
                    ctx.request_id,
                )
                .await;
            match resp {
                Ok(r) if r.status().is_success() && is_event_stream(r.headers()) => {
                    tokio::spawn(relay(
                        r.into_body(),
                        self.name(i).to_owned(),
                        AnswerRewrite::default(),
                        None,
                        tx.clone(),
                    ));
                }
                // 405: this upstream offers no stream; anything else: it has
                // nothing to say on one now. Neither ends the client's stream.
                Ok(_) => {}
                Err(e) => tracing::debug!(server = %self.name(i), error = %e, "no upstream event stream"),
            }
        }
        let mut changes = self.changed.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    r = changes.recv() => {
                        if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                            return;
                        }
                        for m in ["notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"] {
                            let msg = serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": m})).expect("serializable");
                            if tx.send(sse::encode(&msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(self.event_stream(ctx, rx, None))
    }

    /// The client's side of relayed streams. It ends when the token stops
    /// being valid (see `mcp::Revocable`; the relays then see their
    /// channel closed and stop), with a last error event answering `id`.
    fn event_stream(&self, ctx: &Ctx<'_>, rx: mpsc::Receiver<Bytes>, id: Option<Box<RawValue>>) -> Response<Body> {
        let body = ChannelBody(rx);
        let body: Body = if self.keepalive.is_zero() {
            Revocable::new(body, ctx.token, &ctx.state.streams_cutoff, id)
                .map_err(|never| match never {})
                .boxed()
        } else {
            let body = crate::mcp::KeepAlive::new(body, self.keepalive);
            Revocable::new(body, ctx.token, &ctx.state.streams_cutoff, id)
                .map_err(|never| match never {})
                .boxed()
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// Reads the answer to a message: JSON, or an event stream up to the response
/// with the wanted id. Non-2xx answers that carry a JSON-RPC error are
/// returned as that error.
async fn read_answer(resp: Response<UpstreamBody>, want: Option<&Value>) -> Result<(HeaderMap, Value), CallError> {
    let (parts, body) = resp.into_parts();
    if parts.status == StatusCode::ACCEPTED || want.is_none() {
        return if parts.status.is_success() {
            Ok((parts.headers, Value::Null))
        } else {
            Err(CallError::Protocol(format!("status {}", parts.status)))
        };
    }
    if is_event_stream(&parts.headers) && parts.status.is_success() {
        let mut body = body;
        let mut parser = sse::Parser::new(MAX_MESSAGE);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CallError::Down(e.to_string()))?;
            let Some(data) = frame.data_ref() else { continue };
            for event in parser.feed(data).map_err(|_| CallError::Protocol("event too large".into()))? {
                let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                if v.get("method").is_none() && v.get("id") == want {
                    return Ok((parts.headers, v));
                }
            }
        }
        return Err(CallError::Protocol("event stream ended without an answer".into()));
    }
    let bytes = Limited::new(body, MAX_MESSAGE)
        .collect()
        .await
        .map_err(|e| CallError::Down(e.to_string()))?
        .to_bytes();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.get("result").is_some() || v.get("error").is_some() => Ok((parts.headers, v)),
        _ => Err(CallError::Protocol(format!("status {} without a JSON-RPC answer", parts.status))),
    }
}

/// An HTTP request to an upstream in a session: MCP headers, the server's
/// configured headers (its credentials), the request id.
fn upstream_request(
    server: &UpstreamServer,
    method: Method,
    session: Option<&str>,
    version: Option<&str>,
    body: Bytes,
    request_id: &HeaderValue,
    extra: &[(&'static str, HeaderValue)],
) -> Request<Bytes> {
    let mut req = Request::new(body);
    let get = method == Method::GET;
    *req.method_mut() = method;
    *req.uri_mut() = server.url.clone();
    let h = req.headers_mut();
    h.insert(
        ACCEPT,
        HeaderValue::from_static(if get {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        }),
    );
    if !get {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", s);
    }
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert("mcp-protocol-version", v);
    }
    for (name, v) in &server.headers {
        h.insert(name.clone(), v.clone());
    }
    h.insert("x-request-id", request_id.clone());
    for (name, v) in extra {
        h.insert(*name, v.clone());
    }
    req
}

/// How to pick up a routed request's stream again when the upstream closes
/// it before answering (SEP-1699 polling: the server ends the stream and the
/// client resumes with `GET` + `Last-Event-ID`). The gateway does it itself,
/// so the client sees one uninterrupted stream.
struct Resume {
    upstream: Upstream,
    session: Option<String>,
    version: Option<String>,
    request_id: HeaderValue,
    /// The id of the request whose answer ends the stream.
    answer_id: Value,
}

/// Upper bounds on resuming one stream: attempts, and the wait between them
/// (the upstream's `retry:` within this cap, else 1 s).
const MAX_RESUMES: u32 = 100;
const MAX_RESUME_WAIT: Duration = Duration::from_secs(10);

/// A fresh id for a request the gateway itself sends upstream. Unique per
/// process, so that concurrent internal requests in one upstream session can
/// never be confused (a fixed id made one of two concurrent lists hang).
fn internal_id() -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Value::String(format!("portcullis-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// What the gateway changes in an upstream's answer on its way to the client.
#[derive(Clone, Default)]
struct AnswerRewrite {
    /// The request was of the stateless revision: results carry `resultType`
    /// (and cache hints, for cacheable methods) even from older upstreams.
    stateless: bool,
    cacheable: bool,
    /// (URI the upstream knows, URI the client asked for): a resource whose
    /// URI was rewritten on collision is read back under the client's URI.
    uri: Option<(String, String)>,
}

impl AnswerRewrite {
    fn for_request(ctx: &Ctx<'_>, method: &str) -> Self {
        AnswerRewrite {
            stateless: ctx.stateless,
            cacheable: matches!(
                method,
                "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "resources/read" | "server/discover"
            ),
            uri: None,
        }
    }

    fn is_noop(&self) -> bool {
        !self.stateless && self.uri.is_none()
    }

    /// Applies to answers (messages with a `result`), nothing else.
    fn apply(&self, msg: &mut Value) {
        if msg.get("method").is_some() {
            return;
        }
        let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some((upstream_uri, client_uri)) = &self.uri
            && let Some(contents) = result.get_mut("contents").and_then(Value::as_array_mut)
        {
            for c in contents {
                if c.get("uri").and_then(Value::as_str) == Some(upstream_uri) {
                    c["uri"] = Value::String(client_uri.clone());
                }
            }
        }
        if self.stateless {
            result.entry("resultType").or_insert_with(|| json!("complete"));
            if self.cacheable {
                // Lists depend on the token's scope and on upstream health:
                // never fresh, never shared.
                result.entry("ttlMs").or_insert_with(|| json!(0));
                result.entry("cacheScope").or_insert_with(|| json!("private"));
            }
        }
    }
}

/// Copies an upstream event stream to a client, message by message, with the
/// ids of server-to-client requests prefixed and answers rewritten. Ends
/// when the client goes, or when the upstream stream ends — unless `resume`
/// is set and the answer has not come yet: then the stream is picked up
/// again from the last event id.
async fn relay(mut body: UpstreamBody, server: String, rewrite: AnswerRewrite, resume: Option<Resume>, tx: mpsc::Sender<Bytes>) {
    let mut parser = sse::Parser::new(MAX_MESSAGE);
    let mut last_id: Option<String> = None;
    let mut resumes = 0;
    loop {
        let frame = tokio::select! {
            _ = tx.closed() => return,
            f = body.frame() => f,
        };
        let Some(Ok(frame)) = frame else {
            // The upstream ended (or broke) the stream.
            let Some(r) = &resume else { return };
            let Some(event_id) = &last_id else { return };
            resumes += 1;
            if resumes > MAX_RESUMES {
                tracing::warn!(server, "upstream stream closed too often before answering; giving up");
                return;
            }
            let wait = parser
                .retry_ms
                .map_or(Duration::from_secs(1), Duration::from_millis)
                .min(MAX_RESUME_WAIT);
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let Ok(last) = HeaderValue::from_str(event_id) else { return };
            let req = upstream_request(
                &r.upstream.server,
                Method::GET,
                r.session.as_deref(),
                r.version.as_deref(),
                Bytes::new(),
                &r.request_id,
                &[("last-event-id", last)],
            );
            match r.upstream.send(req).await {
                Ok(resp) if resp.status().is_success() && is_event_stream(resp.headers()) => {
                    body = resp.into_body();
                    parser = sse::Parser::new(MAX_MESSAGE);
                    continue;
                }
                Ok(resp) => tracing::warn!(server, status = resp.status().as_u16(), "upstream refused to resume its stream"),
                Err(e) => tracing::warn!(server, error = %e, "could not resume the upstream stream"),
            }
            return;
        };
        let Some(data) = frame.data_ref() else { continue };
        let Ok(events) = parser.feed(data) else {
            tracing::warn!(server, "upstream event larger than the bound; stream cut");
            return;
        };
        for event in events {
            if event.id.is_some() {
                last_id = event.id;
            }
            let Ok(mut msg) = serde_json::from_str::<Value>(&event.data) else {
                continue; // e.g. a priming event with empty data
            };
            let answered = resume
                .as_ref()
                .is_some_and(|r| msg.get("method").is_none() && msg.get("id") == Some(&r.answer_id));
            prefix_server_request(&server, &mut msg);
            rewrite.apply(&mut msg);
            let bytes = serde_json::to_vec(&msg).expect("serializable");
            if tx.send(sse::encode(&bytes)).await.is_err() {
                return;
            }
            if answered {
                // The stream's purpose is served; do not wait for the upstream
                // to close it.
                return;
            }
        }
    }
}

/// Server-to-client requests (and the upstream's cancellations of them) get
/// ids the client can answer and the gateway can route: `<server>__<id>`.
fn prefix_server_request(server: &str, msg: &mut Value) {
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return;
    };
    if method == "notifications/cancelled" {
        if let Some(id) = msg.pointer_mut("/params/requestId") {
            *id = Value::String(format!("{server}__{id}"));
        }
        return;
    }
    if let Some(id) = msg.get_mut("id") {
        *id = Value::String(format!("{server}__{id}"));
    }
}

/// Does this sessionless request speak the stateless revision? Its header,
/// or the version its `_meta` names.
fn is_stateless(headers: &HeaderMap, msg: &Value) -> bool {
    headers.get("mcp-protocol-version").is_some_and(|v| v == STATELESS_VERSION)
        || msg
            .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
            .and_then(Value::as_str)
            == Some(STATELESS_VERSION)
}

/// The name a routed request is addressed to: a tool or prompt name, or a URI.
fn routed_name(msg: &Value) -> Option<&str> {
    match msg.get("method").and_then(Value::as_str)? {
        "tools/call" | "prompts/get" => msg.pointer("/params/name")?.as_str(),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => msg.pointer("/params/uri")?.as_str(),
        _ => None,
    }
}

/// The stateless revision mirrors the method and the name in headers, for
/// routing without parsing; they must agree with the body (-32020 otherwise).
fn check_routing_headers(headers: &HeaderMap, msg: &Value) -> Result<(), GatewayError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(method) = msg.get("method").and_then(Value::as_str)
        && header("mcp-method") != Some(method)
    {
        return Err(GatewayError::HeaderMismatch);
    }
    if let Some(name) = routed_name(msg)
        && header("mcp-name") != Some(name)
    {
        return Err(GatewayError::HeaderMismatch);
    }
    Ok(())
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

/// The union of the upstreams' capabilities. `listChanged` is always
/// announced: the gateway itself sends it when an upstream comes or goes.
fn merge_capabilities(caps: &[Value]) -> Value {
    let has = |k: &str| caps.iter().any(|c| c.get(k).is_some());
    let mut out = json!({"tools": {"listChanged": true}});
    if has("prompts") {
        out["prompts"] = json!({"listChanged": true});
    }
    if has("resources") {
        let subscribe = caps.iter().any(|c| c.pointer("/resources/subscribe") == Some(&Value::Bool(true)));
        out["resources"] = json!({"listChanged": true, "subscribe": subscribe});
    }
    if has("logging") {
        out["logging"] = json!({});
    }
    if has("completions") {
        out["completions"] = json!({});
    }
    out
}

/// The name a client sees: `<server>__<name>` when that matches
/// `^[A-Za-z0-9_-]{1,64}$`; otherwise the name with other characters replaced
/// by `_`, cut to fit, and `_` plus 6 base62 characters of its SHA-256, so
/// that different long names stay different.
pub fn expose(server: &str, name: &str) -> String {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let direct = format!("{server}__{name}");
    if direct.len() <= 64 && !name.is_empty() && name.bytes().all(valid) {
        return direct;
    }
    let mut out = format!("{server}__");
    for b in name.bytes() {
        if out.len() >= 64 - 7 {
            break;
        }
        out.push(if valid(b) { b as char } else { '_' });
    }
    out.push('_');
    let digest = Sha256::digest(name.as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..6 {
        out.push(ALPHABET[(n % 62) as usize] as char);
        n /= 62;
    }
    out
}

/// Probes upstreams: every [`PROBE_UP`] while up, with a doubling backoff
/// while down. Any HTTP answer to a sessionless `ping` counts as up.
fn spawn_health(agg: Weak<Aggregator>) {
    tokio::spawn(async move {
        let n = match agg.upgrade() {
            Some(a) => a.upstreams.len(),
            None => return,
        };
        let mut next = vec![Instant::now() + PROBE_UP; n];
        let mut backoff = vec![PROBE_DOWN.0; n];
        let ping = Bytes::from_static(br#"{"jsonrpc":"2.0","id":"portcullis-health","method":"ping"}"#);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Some(a) = agg.upgrade() else { return };
            let now = Instant::now();
            for i in 0..n {
                let up = a.up[i].load(Ordering::Relaxed);
                if !up && next[i] > now + backoff[i] {
                    // Just went down: first retry after the shortest backoff.
                    next[i] = now + backoff[i];
                }
                if now < next[i] {
                    continue;
                }
                let server = &a.workspace.servers[i];
                let mut req = Request::new(ping.clone());
                *req.method_mut() = Method::POST;
                *req.uri_mut() = server.url.clone();
                req.headers_mut()
                    .insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
                req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                for (name, v) in &server.headers {
                    req.headers_mut().insert(name.clone(), v.clone());
                }
                let alive = a.upstreams[i].send(req).await.is_ok();
                a.set_up(i, alive);
                if alive {
                    backoff[i] = PROBE_DOWN.0;
                    next[i] = Instant::now() + PROBE_UP;
                } else {
                    next[i] = Instant::now() + backoff[i];
                    backoff[i] = (backoff[i] * 2).min(PROBE_DOWN.1);
                }
            }
        }
    });
}

/// A response body fed by a channel; the sender sees `closed()` when the
/// client goes away, which ends the relays feeding it.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
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
