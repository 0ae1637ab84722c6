//! The control plane: token management over JSON (contract §4), health,
//! readiness and metrics. Served on its own listener (default loopback).
//!
//! `fn router()` is separate so that tests can drive it without a socket.
//! `/healthz`, `/readyz` and `/metrics` need no token: they carry no secrets
//! and probes and scrapers cannot easily send one. Everything under `/v1`
//! needs an admin token, except `/v1/tokens/self`, which any token may call,
//! and `/v1/openapi.json`, the API's description (no secrets in it).
//!
//! Every route is documented in the OpenAPI document (`openapi.rs`), and
//! `tests/it/openapi.rs` fails when one is not. To add a route: put
//! `#[utoipa::path(...)]` on its handler, add the handler to `paths(...)` in
//! `openapi.rs`, and its bodies' types (with `ToSchema`) to `types.rs`.

pub mod openapi;
pub mod types;

pub mod dashboard;
pub mod members;
pub mod servers;
pub mod session;

mod usage;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::lifecycle::{self, NewTokenRequest};
use crate::auth::{CachedToken, self_check};
use crate::config::Workspace;
use crate::error::{ApiError, ApiErrorBody};
use crate::state::AppState;
use crate::store::ListFilter;
use crate::token::{self, TokenKind, TokenView, now_unix};
use types::{
    CreateTokenRequest, CreatedToken, Health, McpJson, McpServerEntry, Readiness, ServerInfo, TokenPage, WorkspaceInfo, WorkspaceList,
};

mod audit;

type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let base = if state.config.dashboard.enabled {
        dashboard::routes()
    } else {
        Router::new()
    };
    base.route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/v1/tokens/self", get(token_self))
        .route("/v1/workspaces", get(list_workspaces))
        .route("/v1/workspaces/{ws}/tokens", get(list_tokens).post(create_token))
        .route("/v1/workspaces/{ws}/tokens/{id}", get(get_token).delete(revoke_token))
        .route("/v1/workspaces/{ws}/servers", get(servers::list))
        .merge(audit::routes())
        .route("/v1/workspaces/{ws}/usage", get(usage::usage))
        .route("/v1/workspaces/{ws}/members", get(members::list).post(members::add))
        .route("/v1/workspaces/{ws}/members/invite", axum::routing::post(members::invite))
        .route("/v1/workspaces/{ws}/members/{id}", axum::routing::delete(members::remove))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint; see the API reference in docs/admin-api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        // Token requests are small; refuse anything large before parsing it.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(dashboard::security_headers))
        .with_state(state)
}

/// The admin token presenting the request.
pub struct Admin {
    pub id: Box<str>,
    /// `None` for a global admin token.
    pub workspace: Option<Box<str>>,
}

impl Admin {
    fn may_manage(&self, ws: &str) -> bool {
        self.workspace.as_deref().is_none_or(|w| w == ws)
    }
}

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        state.metrics.admin_request();
        // The dashboard's session cookie, when no bearer token is presented
        // (a bearer token always wins, and needs no CSRF token).
        if state.config.dashboard.enabled && !parts.headers.contains_key(header::AUTHORIZATION) && session::has_cookie(&parts.headers) {
            let client = parts.extensions.get::<crate::state::PeerAddr>().map(|p| p.0.ip());
            let s = session::resolve(state, &parts.headers, &parts.method, client, None).await?;
            return Ok(Admin {
                id: s.admin_id,
                workspace: s.workspace,
            });
        }
        let t = verify_any(state, parts).await?;
        if t.kind != TokenKind::Admin {
            state.verifier.reject(crate::telemetry::AuthFailureReason::WrongKind);
            return Err(ApiError::unauthorized());
        }
        Ok(Admin {
            id: t.id.clone(),
            workspace: t.workspace.clone(),
        })
    }
}

async fn verify_any(state: &AppState, parts: &Parts) -> Result<Arc<CachedToken>, ApiError> {
    let client = parts.extensions.get::<crate::state::PeerAddr>().map(|p| p.0.ip());
    self_check::verify_bearer(state.self_check(), &parts.headers, client).await
}

/// `GET /v1/tokens/self` here accepts both kinds of token (contract §4).
#[utoipa::path(
    get,
    path = "/v1/tokens/self",
    tag = "tokens",
    summary = "Check the presenting token",
    description = "Any valid token, workspace (`mwt_`) or admin (`mwa_`), gets its own summary. \
        Also served on the data listener, for workspace tokens only (counted against the token's rate limit).",
    security(("admin_token" = []), ("workspace_token" = [])),
    responses(
        (status = 200, description = "The token is valid", body = crate::auth::self_check::SelfView),
        (status = 401, description = "Missing, malformed, unknown, revoked or expired token", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
async fn token_self(State(state): State<SharedState>, req: axum::extract::Request) -> Response {
    state.metrics.admin_request();
    let client = req.extensions().get::<crate::state::PeerAddr>().map(|p| p.0.ip());
    self_check::respond(state.self_check(), req.headers(), client, self_check::Listener::Admin)
        .await
        .map(axum::body::Body::new)
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "The process is serving", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    description = "Ready when the store is reachable and, in cluster mode, the revocation feed is in sync.",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: take this instance out of the load balancer", body = Readiness),
    )
)]
async fn readyz(State(state): State<SharedState>) -> Response {
    let store_ok = match state.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: store unreachable");
            false
        }
    };
    // In cluster mode the index is trusted only while the invalidation
    // subscription is live and caught up; an instance that is not should
    // get no traffic from the load balancer.
    let revocations_ok = state.verifier.is_trusted();
    let body = Json(Readiness {
        ready: store_ok && revocations_ok,
        store: if store_ok { "ok" } else { "unreachable" },
        revocations: if revocations_ok { "in_sync" } else { "resynchronising" },
    });
    if store_ok && revocations_ok {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    security(()),
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<SharedState>) -> Response {
    let body = state.metrics.render(state.verifier.len(), state.limiter.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The workspace named in the path, if within the admin's scope and
/// configured. The scope is checked first: a scoped admin gets 403 for any
/// other slug, configured or not, so it cannot enumerate workspaces.
pub(crate) fn workspace<'a>(state: &'a AppState, admin: &Admin, ws: &str) -> Result<&'a Arc<Workspace>, ApiError> {
    if !admin.may_manage(ws) {
        return Err(ApiError::forbidden(format!(
            "this admin token is scoped to workspace `{}`",
            admin.workspace.as_deref().unwrap_or_default()
        )));
    }
    state
        .config
        .workspace(ws)
        .ok_or_else(|| ApiError::not_found("workspace_not_found", format!("no workspace `{ws}` is configured")))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces",
    tag = "workspaces",
    summary = "List the configured workspaces",
    description = "Those this admin token may manage (one for a workspace-scoped token), with their servers; no secrets.",
    responses(
        (status = 200, description = "The workspaces", body = WorkspaceList),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
    )
)]
async fn list_workspaces(State(state): State<SharedState>, admin: Admin) -> Json<WorkspaceList> {
    let workspaces = state
        .config
        .workspaces
        .iter()
        .filter(|w| admin.may_manage(&w.slug))
        .map(|w| WorkspaceInfo {
            slug: w.slug.to_string(),
            url: format!("{}/ws/{}", state.config.server.public_url, w.slug),
            requests_per_minute: state.config.requests_per_minute(Some(w), None),
            servers: w
                .servers
                .iter()
                .map(|s| ServerInfo {
                    name: s.name.to_string(),
                    // Without userinfo or query string, which may hold secrets.
                    url: redacted_url(&s.url),
                    timeout_ms: s.timeout.as_millis() as u64,
                })
                .collect(),
        })
        .collect();
    Json(WorkspaceList { workspaces })
}

/// An upstream's URL without userinfo or query string, which may hold secrets.
fn redacted_url(u: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        u.scheme_str().unwrap_or("http"),
        u.host().unwrap_or_default(),
        port_and_path(u)
    )
}

fn port_and_path(u: &http::Uri) -> String {
    let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{port}{}", u.path())
}

/// Refuses control characters (C0, DEL, C1) and the format characters that
/// change how text is displayed rather than what it says: zero-width
/// characters, bidirectional overrides, embeddings and isolates, line and
/// paragraph separators, invisible operators and the byte-order mark. They
/// have no place in a name, an id or an address, and in a terminal or a log
/// they can forge output. 422 naming the field.
pub fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    match value.chars().find(|&c| crate::token::is_forbidden_char(c)) {
        None => Ok(()),
        Some(c) => Err(ApiError::unprocessable(format!(
            "`{field}` must not contain control or format characters (found U+{:04X})",
            c as u32
        ))),
    }
}

/// Longest accepted expiry: 10 years. Longer is almost surely a unit mistake.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/tokens",
    tag = "tokens",
    summary = "Create a workspace token",
    description = "Answers the raw token once; only its SHA-256 is stored.",
    params(("ws" = String, Path, description = "Workspace slug")),
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "Created: the raw token (shown once), its record and a ready-to-paste mcp.json", body = CreatedToken),
        (status = 400, description = "Body is not JSON, or has an unknown field", body = ApiErrorBody),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 422, description = "A field is invalid (`invalid_field`; the message names it)", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
async fn create_token(State(state): State<SharedState>, admin: Admin, Path(ws): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let w = workspace(&state, &admin, &ws)?;
    let mut req: CreateTokenRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    // Every string is checked for control and format characters before
    // anything else looks at it (or echoes it in an error message).
    check_text("name", &req.name)?;
    if let Some(m) = &req.member_id {
        check_text("member_id", m)?;
    }
    if let Some(e) = &req.email {
        check_text("email", e)?;
    }
    for s in req.allowed_servers.iter().flatten() {
        check_text("allowed_servers", s)?;
    }
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable("`name` must be 1-200 printable characters"));
    }
    if req.expires_in.is_some_and(|s| s > MAX_EXPIRES_IN) {
        return Err(ApiError::unprocessable(format!(
            "`expires_in` is in seconds and at most {MAX_EXPIRES_IN} (10 years); use 0 for a token that never expires"
        )));
    }
    if req.member_id.is_some() && req.email.is_some() {
        return Err(ApiError::unprocessable("give `member_id` or `email`, not both"));
    }
    if let Some(m) = &req.member_id
        && (m.is_empty() || m.len() > 200)
    {
        return Err(ApiError::unprocessable("`member_id` must be 1-200 characters"));
    }
    if let Some(e) = &req.email {
        let valid = e.len() <= 254
            && e.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
            && !e.contains(char::is_whitespace);
        if !valid {
            return Err(ApiError::unprocessable(format!("`email` `{e}` is not an email address")));
        }
    }
    if let Some(list) = &mut req.allowed_servers {
        if list.len() > w.servers.len() {
            return Err(ApiError::unprocessable(format!(
                "`allowed_servers` names at most the workspace's {} server(s)",
                w.servers.len()
            )));
        }
        // De-duplicated, first occurrence kept: the list is stored and
        // copied into the index with the token.
        let mut seen = std::collections::HashSet::new();
        list.retain(|s| seen.insert(s.clone()));
        if list.is_empty() {
            return Err(ApiError::unprocessable(
                "`allowed_servers` must name at least one server; omit it to allow all",
            ));
        }
        for s in list {
            if !w.servers.iter().any(|srv| &srv.name == s) {
                let known: Vec<&str> = w.servers.iter().map(|s| s.name.as_str()).collect();
                return Err(ApiError::unprocessable(format!(
                    "`allowed_servers`: workspace `{ws}` has no server `{s}` (it has: {})",
                    known.join(", ")
                )));
            }
        }
    }
    if req.requests_per_minute == Some(0) {
        return Err(ApiError::unprocessable("`requests_per_minute` must be greater than 0"));
    }
    let new = NewTokenRequest {
        name: name.to_string(),
        kind: Some(TokenKind::Workspace),
        workspace: Some(ws.clone()),
        expires_in: req.expires_in,
        member_id: req.member_id,
        email: req.email,
        allowed_servers: req.allowed_servers,
        requests_per_minute: req.requests_per_minute,
        created_by: admin.id.to_string(),
    };
    let now = now_unix();
    let (raw, record) = lifecycle::create(Some(&state.verifier), &state.store, new, now).await?;
    tracing::info!(token_id = %record.id, workspace = %ws, created_by = %admin.id, "token created");
    let url = format!("{}/ws/{}", state.config.server.public_url, ws);
    let entry = McpServerEntry {
        url,
        headers: [("Authorization".to_string(), format!("Bearer {raw}"))].into(),
    };
    let body = CreatedToken {
        token: &raw,
        info: record.view(now),
        mcp_json: McpJson {
            mcp_servers: [(ws, entry)].into(),
        },
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    page_size: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/tokens",
    tag = "tokens",
    summary = "List a workspace's tokens",
    description = "Newest first, revoked and expired ones included; never a raw token.",
    params(
        ("ws" = String, Path, description = "Workspace slug"),
        ("page_size" = Option<u32>, Query, description = "1-200, default 50", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tokens", body = TokenPage),
        (status = 400, description = "Bad `page_size` or `cursor`, or an unknown query parameter", body = ApiErrorBody),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
async fn list_tokens(
    State(state): State<SharedState>,
    admin: Admin,
    Path(ws): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    workspace(&state, &admin, &ws)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let page_size = match q.page_size.as_deref() {
        None => 50,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::bad_request("page_size must be an integer from 1 to 200"))?,
    };
    let page = state
        .store
        .list(
            ListFilter {
                kind: TokenKind::Workspace,
                workspace: Some(&ws),
            },
            page_size,
            q.cursor.as_deref().filter(|c| !c.is_empty()),
        )
        .await?;
    let now = now_unix();
    let tokens: Vec<TokenView<'_>> = page.tokens.iter().map(|t| t.view(now)).collect();
    Ok(Json(TokenPage {
        tokens,
        next_cursor: page.next_cursor,
    })
    .into_response())
}

/// A workspace token of `ws` by id, or 404 (also for other workspaces' ids).
async fn find_token(state: &AppState, ws: &str, id: &str) -> Result<crate::token::TokenRecord, ApiError> {
    let not_found = || ApiError::not_found("token_not_found", format!("workspace `{ws}` has no token `{id}`"));
    if !token::is_valid_id(id) {
        return Err(not_found());
    }
    match state.store.get(id).await? {
        Some(r) if r.kind == TokenKind::Workspace && r.workspace.as_deref() == Some(ws) => Ok(r),
        _ => Err(not_found()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/tokens/{id}",
    tag = "tokens",
    summary = "Get a token's record",
    params(("ws" = String, Path, description = "Workspace slug"), ("id" = String, Path, description = "Token id (`tkn_…`)")),
    responses(
        (status = 200, description = "The record", body = TokenView),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace, or no such token in it", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
async fn get_token(State(state): State<SharedState>, admin: Admin, Path((ws, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    workspace(&state, &admin, &ws)?;
    let r = find_token(&state, &ws, &id).await?;
    Ok(Json(r.view(now_unix())).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/tokens/{id}",
    tag = "tokens",
    summary = "Revoke a token",
    description = "Immediate and permanent: when the call returns, no instance accepts the token. \
        Revoking twice is not an error (the record keeps its first `revoked_at`).",
    params(("ws" = String, Path, description = "Workspace slug"), ("id" = String, Path, description = "Token id (`tkn_…`)")),
    responses(
        (status = 200, description = "The record, with `revoked_at`", body = TokenView),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace, or no such token in it", body = ApiErrorBody),
        (status = 409, description = "A token cannot revoke itself (`cannot_revoke_self`)", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable, or an instance did not acknowledge in time", body = ApiErrorBody),
    )
)]
async fn revoke_token(
    State(state): State<SharedState>,
    admin: Admin,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    workspace(&state, &admin, &ws)?;
    if *admin.id == *id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_revoke_self",
            "a token cannot revoke itself; use another admin token",
        ));
    }
    find_token(&state, &ws, &id).await?;
    let now = now_unix();
    let revoked = lifecycle::revoke_by(Some(&state.verifier), &state.store, &id, Some(&admin.id), now)
        .await?
        .ok_or_else(|| ApiError::not_found("token_not_found", format!("workspace `{ws}` has no token `{id}`")))?;
    if revoked.newly_revoked {
        tracing::info!(token_id = %id, workspace = %ws, revoked_by = %admin.id, "token revoked");
    }
    Ok(Json(revoked.record.view(now)).into_response())
}
