//! `/me`: the signed-in member's page ("My tokens", "Connected apps",
//! sign-out) and its JSON under `/me/api/` (docs/members.md).
//!
//! Roles: an owner sees and revokes every workspace token of the
//! workspace; a member only their own (tokens whose `member_id` is theirs).
//! A token a member may not see answers 404, like an unknown one. Tokens
//! created here carry the member's id and email, in the member's workspace.
//! JSON errors are the admin API's shape (`{"error":{"code","message"}}`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::pages::{self, html, layout};
use super::{MemberSession, SharedState, session};
use crate::auth::lifecycle::{self, NewTokenRequest};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::ListFilter;
use crate::store::members::Role;
use crate::token::{TokenKind, TokenRecord, now_unix};

/// Tokens looked through per listing (a workspace's, newest first): bounds
/// the work of one request however many tokens the workspace holds.
const SCAN_LIMIT: usize = 5000;
const PAGE: usize = 200;

/// `GET /me`.
pub async fn page(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let Some(me) = session::current_member(&state, &headers).await else {
        let mut r = html(
            StatusCode::UNAUTHORIZED,
            pages::message(
                None,
                "You are not signed in",
                "Open the sign-in link your workspace's owner or administrator sent you, or ask them for a new one.",
            ),
        );
        if session::has_cookie(&headers) {
            r.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(&state, &headers));
        }
        return r;
    };
    let Some(w) = state.config.workspace(&me.workspace) else {
        return html(
            StatusCode::NOT_FOUND,
            pages::message(Some(&me), "No workspace", "Your workspace is not configured."),
        );
    };
    let owner = me.role == Role::Owner;
    html(
        StatusCode::OK,
        layout(
            "My tokens",
            Some(&me),
            &[("page", "me"), ("ws", &me.workspace), ("api", "/me/api/tokens"), ("home", "/me")],
            html! {
                h1 { "Workspace " code { (me.workspace) } }
                nav.tabs aria-label="Sections" {
                    ul {
                        li { a href="#tokens-h" data-testid="tab-tokens" aria-current="page" { "My tokens" } }
                        li { a href="#apps-h" data-testid="tab-apps" { "Connected apps" } }
                    }
                }
                @if owner { p.note { "You are an owner of this workspace: you see and can revoke every token of it." } }
                (crate::ui::tokens::section(w, false))
                section #apps aria-labelledby="apps-h" {
                    h2 #apps-h { "Connected apps" }
                    p #apps-msg data-testid="apps-empty" { "No connected apps." }
                }
            },
        ),
    )
}

/// `POST /me/signout` (a form whose `csrf` field is the session's secret).
pub async fn sign_out(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let csrf = form_csrf(&body);
    match session::resolve(&state, &headers, &Method::POST, csrf).await {
        Ok(me) => match session::sign_out(&state, &me, &headers).await {
            Ok(cookie) => {
                audit_signout(&state, &me).await;
                let mut r = html(
                    StatusCode::OK,
                    pages::message(
                        None,
                        "Signed out",
                        "You have signed out. Your tokens keep working until they expire or are revoked.",
                    ),
                );
                r.headers_mut().insert(header::SET_COOKIE, cookie);
                r
            }
            Err(e) => e.into_response(),
        },
        // Ended already: forget the cookie, and /me says what to do.
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let mut r = Redirect::to("/me").into_response();
            r.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(&state, &headers));
            r
        }
        Err(e) => e.into_response(),
    }
}

/// The sign-out form's one field (hex), parsed by hand.
fn form_csrf(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("csrf="))
        .filter(|v| v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Audit hook: a member signed out (`signout`; actor: the member id). At
/// merge this records the event with `state.audit.record`.
pub async fn audit_signout(state: &AppState, me: &MemberSession) {
    use crate::store::audit::{AuditEvent, EventType};
    let event = AuditEvent {
        actor: Some(me.member_id.to_string()),
        workspace: Some(me.workspace.to_string()),
        member_id: Some(me.member_id.to_string()),
        method: Some("member".to_owned()),
        ..AuditEvent::new(EventType::Signout, 0)
    };
    state.audit.record(event).await;
}

/// Whether `me` may see and revoke `t`.
fn may_see(me: &MemberSession, t: &TokenRecord) -> bool {
    t.kind == TokenKind::Workspace
        && t.workspace.as_deref() == Some(me.workspace.as_str())
        && (me.role == Role::Owner || t.member_id.as_deref() == Some(me.member_id.as_str()))
}

/// `GET /me/api/tokens`: `{"tokens": [...], "next_cursor": null}`, newest
/// first, the ones this member may see among the workspace's newest
/// [`SCAN_LIMIT`].
pub async fn list_tokens(State(state): State<SharedState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let me = session::resolve(&state, &headers, &Method::GET, None).await?;
    let now = now_unix();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut scanned = 0;
    loop {
        let filter = ListFilter {
            kind: TokenKind::Workspace,
            workspace: Some(&me.workspace),
        };
        let page = state.store.list(filter, PAGE, cursor.as_deref()).await?;
        scanned += page.tokens.len();
        out.extend(page.tokens.into_iter().filter(|t| may_see(&me, t)));
        match page.next_cursor {
            Some(c) if scanned < SCAN_LIMIT => cursor = Some(c),
            _ => break,
        }
    }
    let views: Vec<_> = out.iter().map(|t| t.view(now)).collect();
    Ok(Json(json!({ "tokens": views, "next_cursor": null })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    expires_in: Option<u64>,
}

const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

/// `POST /me/api/tokens` `{"name", "expires_in"?}`: a token of the member's
/// own; answers the raw token once, like the admin API.
pub async fn create_token(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let me = session::resolve(&state, &headers, &Method::POST, None).await?;
    let req: NewToken = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if let Some(c) = req.name.chars().find(|&c| crate::token::is_forbidden_char(c)) {
        return Err(ApiError::unprocessable(format!(
            "`name` must not contain control or format characters (found U+{:04X})",
            c as u32
        )));
    }
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable("`name` must be 1-200 printable characters"));
    }
    if req.expires_in.is_some_and(|s| s > MAX_EXPIRES_IN) {
        return Err(ApiError::unprocessable("`expires_in` is in seconds and at most 10 years; 0: never"));
    }
    let now = now_unix();
    let (raw, record) = lifecycle::create(
        Some(&state.verifier),
        &state.store,
        NewTokenRequest {
            name: name.to_owned(),
            kind: Some(TokenKind::Workspace),
            workspace: Some(me.workspace.clone()),
            expires_in: req.expires_in,
            member_id: Some(me.member_id.clone()),
            email: Some(me.email.clone()),
            allowed_servers: None,
            requests_per_minute: None,
            created_by: me.member_id.clone(),
        },
        now,
    )
    .await?;
    tracing::info!(token_id = %record.id, member_id = %me.member_id, "member created a token");
    let url = format!("{}/ws/{}", state.config.server.public_url, me.workspace);
    let body = json!({
        "token": raw,
        "info": record.view(now),
        "mcp_json": { "mcpServers": { me.workspace.clone(): { "url": url, "headers": { "Authorization": format!("Bearer {raw}") } } } },
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /me/api/tokens/{id}`: 404 for a token this member may not see.
pub async fn revoke_token(State(state): State<SharedState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let me = session::resolve(&state, &headers, &Method::DELETE, None).await?;
    let not_found = || ApiError::not_found("token_not_found", "no such token");
    if !crate::token::is_valid_id(&id) {
        return Err(not_found());
    }
    let t = state.store.get(&id).await?.ok_or_else(not_found)?;
    if !may_see(&me, &t) {
        return Err(not_found());
    }
    revoke(&state, &id).await
}

async fn revoke(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let now = now_unix();
    let r = lifecycle::revoke(Some(&state.verifier), &state.store, id, now)
        .await?
        .ok_or_else(|| ApiError::not_found("token_not_found", "no such token"))?;
    tracing::info!(token_id = %id, "member revoked a token");
    Ok(Json(r.record.view(now)).into_response())
}
