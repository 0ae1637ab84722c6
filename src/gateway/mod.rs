//! The data plane: `/ws/{slug}` and its ordered pipeline.
//!
//! Each request passes these stages in order; each sits where it does for a
//! reason:
//! 1. **authenticate**: parse, checksum, index, status. First, so that an
//!    unauthenticated client costs one header read and nothing else (its body
//!    is never read, hence `id: null` in a 401).
//! 2. **workspace**: the token's workspace must be the slug. After
//!    authentication, so an unknown slug and a wrong token look the same.
//! 3. **origin**: a browser `Origin` must be allowed (DNS rebinding).
//! 4. **limit**: counted before the body is read, so a limited client cannot
//!    make us buffer bodies for free; the verdict is held until the body's id
//!    is known, because the 429 echoes it — but only for a small body (at
//!    most [`SMALL_BODY`]) or one already received; a larger one is refused
//!    at once with `id: null`.
//! 5. **body**: bounded read (413), time-limited (408), JSON-RPC shape (400).
//! 6. **forward**: strip the client's credentials, add the upstream's own,
//!    stream the answer back as it arrives.

mod audit;
mod forward;
mod request_id;
mod session_bind;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tracing::{Instrument, field};

use crate::auth::{CachedToken, VerifyError};
use crate::config::Workspace;
use crate::error::{Body, GatewayError, full};
use crate::mcp::aggregate::Aggregator;
use crate::mcp::jsonrpc::{self, BodyError};
use crate::mcp::session::Sealer;
use crate::state::AppState;
use crate::telemetry::AuthFailureReason;
use crate::token::now_unix;
use crate::upstream::Upstream;

pub use request_id::RequestIds;

/// A workspace's route: where its requests go.
struct Route {
    workspace: Arc<Workspace>,
    /// One server: the pass-through upstream.
    upstream: Upstream,
    /// Several servers: the gateway is the MCP server.
    aggregate: Option<Arc<Aggregator>>,
}

/// A request body the gateway can read: hyper's `Incoming`, or the fast
/// path's body, read from the connection only when the pipeline asks for it
/// (`server::fast`). Not `'static`: the fast path's borrows its connection.
pub trait RequestBody: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send {
    /// Whether the whole body has already been received, so that reading it
    /// waits on nothing (a body that cannot tell says no).
    fn arrived(&self) -> bool {
        false
    }
    /// The whole body in one piece, taken without waiting, when it has all
    /// arrived already (the common case of a small call). `None`: read it
    /// frame by frame. Saves the timer, the length limiter and the
    /// collector that reading frames needs (about a tenth of the fast
    /// path's instructions per request).
    fn take_arrived(&mut self) -> Option<Bytes> {
        None
    }
}

impl RequestBody for hyper::body::Incoming {}

/// A 429 reads the body to echo its id only if it is at most this long (or
/// already received): a rate-limited client must not make the gateway wait
/// for, or hold, a large body, nor get the limit's verdict only once it has
/// sent one.
const SMALL_BODY: u64 = 16 * 1024;

pub struct Gateway {
    state: Arc<AppState>,
    routes: HashMap<String, Route>,
    request_ids: RequestIds,
    /// Binds pass-through sessions to their token (see `session_bind`).
    sessions: session_bind::SessionBinder,
    /// The authorization server, when `[oauth] enabled = true`.
    oauth: Option<crate::oauth::Server>,
}

/// What the pipeline learned, for the access log and metrics.
#[derive(Default)]
struct Outcome {
    workspace: Option<usize>,
    /// The token (an `Arc` clone: no allocation per request).
    token: Option<Arc<CachedToken>>,
    /// The cluster limiter was unreachable and this instance decided alone.
    limit_fallback: bool,
    /// The client's address (budgets store reads on index misses).
    client: Option<IpAddr>,
    // --- audit trail (`audit.rs`) ---
    /// A `tools/call` to record, when `[audit] tool_calls` is on.
    audit_call: Option<audit::Call>,
    /// For usage analytics: the server that answers (index in the
    /// workspace), when one does.
    server: Option<usize>,
    /// For usage analytics: the tool of a `tools/call`, else the JSON-RPC
    /// method, as a slice of the body (a refcount, not a copy); empty when
    /// it cannot be read without unescaping (counted as "other").
    tool: Option<Bytes>,
}

impl Outcome {
    /// Notes the tool or method of a checked body, and for an aggregating
    /// workspace the server a `tools/call` goes to (the `<server>__` prefix
    /// of the exposed name, the one `mcp::aggregate` routes by).
    fn note_body(&mut self, route: &Route, body: &Bytes, parsed: &jsonrpc::Body<'_>) {
        let jsonrpc::Body::Message { method: Some(m), name, .. } = parsed else {
            return;
        };
        let tool = match (&**m, m) {
            ("tools/call", _) => *name,
            (_, std::borrow::Cow::Borrowed(b)) => Some(*b),
            _ => None,
        };
        let Some(tool) = tool else {
            self.tool = Some(Bytes::new());
            return;
        };
        // Both borrow from `body` (serde borrows only from its input).
        self.tool = Some(body.slice_ref(tool.as_bytes()));
        if route.aggregate.is_some() && m == "tools/call" {
            self.server = route
                .workspace
                .servers
                .iter()
                .enumerate()
                .filter(|(_, s)| tool.strip_prefix(s.name.as_str()).is_some_and(|r| r.starts_with("__")))
                .max_by_key(|(_, s)| s.name.len())
                .map(|(i, _)| i);
        }
    }
}

impl Gateway {
    pub fn new(state: Arc<AppState>) -> Self {
        // Config validation guarantees keys whenever a workspace aggregates.
        let sealer = Sealer::new(&state.config.server.session_keys).map(Arc::new);
        // A connection pool per data-plane thread, and one for the rest
        // (aggregators' health probes): see `upstream`.
        let pools = state.config.server.data_plane_threads + 1;
        let routes = state
            .config
            .workspaces
            .iter()
            .map(|w| {
                let aggregate = match (&sealer, w.is_aggregate()) {
                    (Some(s), true) => Some(Aggregator::new(
                        Arc::clone(w),
                        Arc::clone(s),
                        state.config.server.sse_keepalive,
                        pools,
                        Arc::clone(&state.metrics),
                    )),
                    _ => None,
                };
                (
                    w.slug.clone(),
                    Route {
                        workspace: Arc::clone(w),
                        upstream: Upstream::new(Arc::clone(&w.servers[0]), pools),
                        aggregate,
                    },
                )
            })
            .collect();
        let sessions = match (&state.config.server.session_keys[..], state.session_bind_key) {
            ([], Some(k)) => session_bind::SessionBinder::new(&[k]),
            (keys, _) => session_bind::SessionBinder::new(keys),
        };
        let oauth = state.config.oauth.enabled.then(|| crate::oauth::Server::new(Arc::clone(&state)));
        Gateway {
            state,
            routes,
            request_ids: RequestIds::new(),
            sessions,
            oauth,
        }
    }

    /// Entry point for every data-plane request from hyper, whose requests
    /// carry the client's address as a `state::PeerAddr` extension.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Result<Response<Body>, Infallible>
    where
        B: RequestBody,
    {
        let client = req.extensions().get::<crate::state::PeerAddr>().map(|p| p.0.ip());
        self.handle_from(req, client).await
    }

    /// Entry point with the client's address given (the fast path knows it
    /// per connection, and an extension would cost an allocation per
    /// request). Generic over the request body: hyper's `Incoming`, or the
    /// fast path's body already read (`server::fast`).
    pub async fn handle_from<B>(self: Arc<Self>, req: Request<B>, client: Option<IpAddr>) -> Result<Response<Body>, Infallible>
    where
        B: RequestBody,
    {
        let start = Instant::now();
        let request_id = self.request_ids.take_or_generate(req.headers());
        let span = tracing::info_span!(
            "request",
            request_id = %request_id.to_str().unwrap_or_default(),
            method = %req.method(),
            path = field::Empty,
            workspace = field::Empty,
            token_id = field::Empty,
            auth_failure = field::Empty,
            status = field::Empty,
            latency_ms = field::Empty,
        );
        let this = Arc::clone(&self);
        let rid = request_id.clone();
        async move {
            let mut outcome = Outcome {
                client,
                ..Outcome::default()
            };
            let mut resp = this.route(req, &rid, &mut outcome).await;
            if outcome.limit_fallback {
                // Tells the client (and operators reading traces) that the
                // shared limit could not be consulted for this request.
                resp.headers_mut()
                    .insert("portcullis-ratelimit-scope", HeaderValue::from_static("instance-fallback"));
            }
            resp.headers_mut().insert(request_id::X_REQUEST_ID.clone(), rid);
            let status = resp.status().as_u16();
            if outcome.workspace.is_some() || status != 404 {
                this.state.metrics.request(outcome.workspace, status);
            }
            if let (Some(workspace), Some(t)) = (outcome.workspace, &outcome.token) {
                this.state.usage.record(crate::usage::Request {
                    workspace,
                    token_id: &t.id,
                    token_key: t.limiter_key,
                    member_id: t.member.as_deref(),
                    server: outcome.server,
                    tool: outcome.tool.as_deref(),
                    status,
                });
            }
            let span = tracing::Span::current();
            if let Some(i) = outcome.workspace {
                span.record("workspace", this.state.config.workspaces[i].slug.as_str());
            }
            if let Some(t) = &outcome.token {
                span.record("token_id", &*t.id);
            }
            span.record("status", status);
            span.record("latency_ms", start.elapsed().as_secs_f64() * 1000.0);
            if let (Some(call), Some(ws), Some(t), Some(rid)) = (
                outcome.audit_call.take(),
                outcome.workspace,
                &outcome.token,
                resp.headers().get(&request_id::X_REQUEST_ID),
            ) {
                audit::emit(&this.state.audit, call, ws, t, status, start, rid);
            }
            if resp.status().is_server_error() {
                tracing::warn!("request failed");
            } else {
                tracing::info!("request");
            }
            Ok(resp)
        }
        .instrument(span)
        .await
    }

    async fn route<B>(&self, req: Request<B>, request_id: &HeaderValue, outcome: &mut Outcome) -> Response<Body>
    where
        B: RequestBody,
    {
        let path = req.uri().path();
        if let Some(slug) = path.strip_prefix("/ws/") {
            let slug = slug.strip_suffix('/').unwrap_or(slug).to_owned();
            // The slug as tried (bounded, escaped: it is client input), so a
            // 401 line says which workspace; a known one is recorded again below.
            let tried = &slug[..slug.char_indices().nth(64).map_or(slug.len(), |(i, _)| i)];
            tracing::Span::current()
                .record("path", "/ws/{slug}")
                .record("workspace", field::debug(tried));
            return match self.workspace_request(req, &slug, request_id, outcome).await {
                Ok(resp) => resp,
                Err((GatewayError::Unauthorized { header_missing }, id)) if self.oauth.is_some() => {
                    self.unauthorized_with_metadata(&slug, header_missing, id.as_deref())
                }
                Err((e, id)) => e.into_response(id.as_deref()),
            };
        }
        tracing::Span::current().record("path", path);
        if path == "/v1/tokens/self" && req.method() == Method::GET {
            // Boxed for the same reason as the aggregator's call below.
            return Box::pin(crate::auth::self_check::respond(
                self.state.self_check(),
                req.headers(),
                outcome.client,
                crate::auth::self_check::Listener::Data,
            ))
            .await;
        }
        if let Some(oauth) = &self.oauth
            && crate::oauth::owns(path)
        {
            return self.oauth_request(oauth, req, outcome.client).await;
        }
        // MCP clients (mcp-remote) probe OAuth metadata at connect time. These
        // are static tokens, so answer a quick, unauthenticated 404 that sends
        // no client into a login flow, and do not count it against any limit.
        if path.starts_with("/.well-known/oauth-protected-resource") || path.starts_with("/.well-known/oauth-authorization-server") {
            let mut resp = Response::new(full(r#"{"error":"not_found"}"#));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
        GatewayError::NotFound.into_response(None)
    }

    async fn workspace_request<B>(
        &self,
        req: Request<B>,
        slug: &str,
        request_id: &HeaderValue,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, (GatewayError, Option<Box<serde_json::value::RawValue>>)>
    where
        B: RequestBody,
    {
        let fail = |e: GatewayError| (e, None);
        // 1. authenticate
        let token = self.authenticate(req.headers(), outcome.client).await.map_err(fail)?;
        outcome.token = Some(Arc::clone(&token));
        // 2. workspace: an unknown slug is indistinguishable from a wrong token.
        let route = match self.routes.get(slug) {
            Some(r) if token.workspace.as_deref() == Some(slug) => r,
            _ => {
                self.state.verifier.reject(AuthFailureReason::WrongWorkspace);
                return Err(fail(GatewayError::Unauthorized { header_missing: false }));
            }
        };
        outcome.workspace = Some(route.workspace.index);
        if route.aggregate.is_none() {
            outcome.server = Some(0);
        }
        // 3. origin, and the token's server scope: a token limited to servers
        // this workspace no longer routes to may use nothing here.
        if let Some(origin) = req.headers().get(ORIGIN) {
            let allowed = origin.to_str().is_ok_and(|o| self.state.config.server.allowed_origins.contains(o));
            if !allowed {
                return Err(fail(GatewayError::Forbidden));
            }
        }
        if let Some(allowed) = &token.allowed_servers
            && route.aggregate.is_none()
            && !allowed.iter().any(|s| **s == *route.upstream.server.name)
        {
            return Err(fail(GatewayError::Forbidden));
        }
        let method = req.method().clone();
        if !matches!(method, Method::POST | Method::GET | Method::DELETE) {
            return Err(fail(GatewayError::MethodNotAllowed));
        }
        // 4. limit (verdict applied after the body is read)
        let per_minute = self
            .state
            .config
            .requests_per_minute(Some(&route.workspace), token.requests_per_minute);
        let (fallback, verdict) = self.state.limiter.check(token.limiter_key, per_minute).await;
        if fallback {
            self.state.metrics.limit_fallback();
            outcome.limit_fallback = true;
        }
        let limited = verdict.err();
        // 5. body
        let (mut parts, body) = req.into_parts();
        if let Some(l) = &limited
            && !body.arrived()
            && body.size_hint().upper().is_none_or(|n| n > SMALL_BODY)
        {
            // Large and still to come: refused from the head, `id: null`.
            self.state.metrics.rate_limited(route.workspace.index);
            return Err(fail(GatewayError::RateLimited {
                limit: l.limit,
                retry_after_secs: l.retry_after_secs,
            }));
        }
        let body = if method == Method::POST {
            self.read_body(&parts.headers, body).await.map_err(fail)?
        } else {
            Bytes::new()
        };
        if let Some(l) = limited {
            self.state.metrics.rate_limited(route.workspace.index);
            let id = match jsonrpc::inspect(&body) {
                Ok(parsed) => {
                    outcome.note_body(route, &body, &parsed);
                    match parsed {
                        jsonrpc::Body::Message { id, .. } => id.map(|r| r.to_owned()),
                        jsonrpc::Body::Batch => None,
                    }
                }
                Err(_) => jsonrpc::request_id(&body).map(|r| r.to_owned()),
            };
            return Err((
                GatewayError::RateLimited {
                    limit: l.limit,
                    retry_after_secs: l.retry_after_secs,
                },
                id,
            ));
        }
        if method == Method::POST {
            match jsonrpc::inspect(&body) {
                Ok(parsed) => {
                    outcome.note_body(route, &body, &parsed);
                    if let jsonrpc::Body::Message { method: Some(m), name, .. } = &parsed
                        && m == "tools/call"
                        && self.state.audit.tool_calls()
                    {
                        outcome.audit_call = Some(audit::call(&route.workspace, *name));
                    }
                }
                Err(BodyError::Parse) => return Err(fail(GatewayError::ParseError)),
                Err(BodyError::InvalidRequest) => {
                    return Err((GatewayError::InvalidRequest, jsonrpc::request_id(&body).map(|r| r.to_owned())));
                }
            }
        }
        // 6. forward, or answer as the workspace's MCP server
        if let Some(agg) = &route.aggregate {
            // Boxed: the aggregator's future is several times the size of
            // the pass-through's, and every request's future would carry
            // (and copy) it otherwise.
            let resp = Box::pin(agg.handle(&self.state, &token, method, &parts.headers, body.clone(), request_id)).await;
            return resp.map_err(|e| (e, jsonrpc::request_id(&body).map(|r| r.to_owned())));
        }
        // The client's session id opens to the upstream's own only for the
        // token that opened the session; any other is 404 here.
        let ws = &*route.workspace.slug;
        let sent = self
            .sessions
            .inbound(ws, token.session_owner(), &mut parts.headers)
            .map_err(|e| (e, jsonrpc::request_id(&body).map(|r| r.to_owned())))?;
        let resp = forward::forward(
            &self.state,
            &route.workspace,
            &route.upstream,
            &token,
            method,
            &parts.headers,
            // A refcount bump, not a copy: the body is kept to find the id
            // for an error answer, and parsed again only then.
            body.clone(),
            request_id,
        )
        .await;
        let mut resp = resp.map_err(|e| (e, jsonrpc::request_id(&body).map(|r| r.to_owned())))?;
        let upstream_sent = parts.headers.get(&session_bind::MCP_SESSION_ID);
        self.sessions
            .outbound(ws, token.session_owner(), sent.as_ref().zip(upstream_sent), resp.headers_mut());
        Ok(resp)
    }

    /// A 401 of `/ws/{slug}` with `resource_metadata`, so that an OAuth
    /// client finds the authorization server. Every well-formed slug gets
    /// the same shape, known or not: the 401 still enumerates nothing.
    fn unauthorized_with_metadata(&self, slug: &str, header_missing: bool, id: Option<&serde_json::value::RawValue>) -> Response<Body> {
        let mut resp = GatewayError::Unauthorized { header_missing }.into_response(id);
        let well_formed = !slug.is_empty() && slug.len() <= 64 && slug.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if well_formed {
            let base = self.state.config.server.public_url.trim_end_matches('/');
            let url = format!("{base}/.well-known/oauth-protected-resource/ws/{slug}");
            if let Some(v) = crate::error::www_authenticate_with_metadata(header_missing, &url) {
                resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }

    /// Hands a request under `/oauth/` or `/.well-known/oauth-` to the
    /// authorization server, its body read first (bounded: these are
    /// small forms and JSON documents).
    async fn oauth_request<B>(&self, oauth: &crate::oauth::Server, req: Request<B>, client: Option<IpAddr>) -> Response<Body>
    where
        B: RequestBody,
    {
        let (parts, body) = req.into_parts();
        let limited = Limited::new(body, crate::oauth::MAX_BODY);
        let body = match tokio::time::timeout(self.state.config.server.body_read_timeout, limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return crate::oauth::too_large(parts.uri.path());
            }
            _ => return GatewayError::BodyTimeout.into_response(None),
        };
        oauth
            .handle(crate::oauth::Req {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                headers: &parts.headers,
                body,
                client,
            })
            .await
    }

    /// Extracts and verifies the bearer token; only workspace tokens pass.
    async fn authenticate(&self, headers: &HeaderMap, client: Option<IpAddr>) -> Result<Arc<CachedToken>, GatewayError> {
        let verifier = &self.state.verifier;
        let Some(value) = headers.get(AUTHORIZATION) else {
            verifier.reject(AuthFailureReason::Missing);
            return Err(GatewayError::Unauthorized { header_missing: true });
        };
        let Some(raw) = crate::auth::bearer(value) else {
            verifier.reject(AuthFailureReason::Malformed);
            return Err(GatewayError::Unauthorized { header_missing: false });
        };
        match verifier.verify_from(raw, now_unix(), client).await {
            Ok(t) if t.kind.is_data_plane() => Ok(t),
            Ok(_) => {
                verifier.reject(AuthFailureReason::WrongKind);
                Err(GatewayError::Unauthorized { header_missing: false })
            }
            Err(VerifyError::Rejected(_)) => Err(GatewayError::Unauthorized { header_missing: false }),
            Err(VerifyError::StoreUnavailable) => Err(GatewayError::ServiceUnavailable { retry_after_secs: 1 }),
        }
    }

    /// Reads a request body, bounded in size and time.
    async fn read_body<B>(&self, headers: &HeaderMap, mut body: B) -> Result<Bytes, GatewayError>
    where
        B: RequestBody,
    {
        let max = self.state.config.server.max_body_bytes;
        // Refuse on the declared length without reading anything.
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| crate::upstream::content_length(v.as_bytes()));
        if declared.is_some_and(|n| n > max) {
            return Err(GatewayError::TooLarge);
        }
        if let Some(whole) = body.take_arrived() {
            return match u64::try_from(whole.len()) {
                Ok(n) if n <= max => Ok(whole),
                _ => Err(GatewayError::TooLarge),
            };
        }
        let limited = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
        match tokio::time::timeout(self.state.config.server.body_read_timeout, limited.collect()).await {
            Err(_) => Err(GatewayError::BodyTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::TooLarge),
            // The client broke off mid-body; nobody will read the answer.
            Ok(Err(_)) => Err(GatewayError::InvalidRequest),
        }
    }
}
