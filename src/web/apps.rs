//! Connected apps on `/me`: the signed-in member's OAuth grants
//! (docs/oauth.md), listed in the page and revoked with a plain form (no
//! script needed), or through `/me/api/apps` as JSON. Revoking a grant
//! revokes every access token it issued, on every instance, before the
//! answer (`auth::lifecycle::revoke_grant`). A grant that is not the
//! member's answers 404, like an unknown one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::json;

use super::{MemberSession, SharedState, session};
use crate::auth::lifecycle;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::grants::Grant;
use crate::token::{format_rfc3339, now_unix};

/// The member's grants, newest first (revoked ones included).
pub async fn of(state: &AppState, me: &MemberSession) -> Result<Vec<Grant>, ApiError> {
    let Some(grants) = state.store.grants() else {
        return Ok(Vec::new());
    };
    Ok(grants.list_grants(Some(&me.member_id), Some(&me.workspace)).await?)
}

/// The "Connected apps" section of `/me`.
pub fn section(me: &MemberSession, grants: &[Grant]) -> Markup {
    let active: Vec<&Grant> = grants.iter().filter(|g| g.revoked_at.is_none()).collect();
    html! {
        section #apps aria-labelledby="apps-h" {
            h2 #apps-h { "Connected apps" }
            @if active.is_empty() {
                p #apps-msg data-testid="apps-empty" { "No connected apps." }
            } @else {
                table data-testid="apps-table" {
                    thead { tr { th { "App" } th { "Servers" } th { "Connected" } th { "Last used" } th {} } }
                    tbody {
                        @for g in &active {
                            tr data-testid={ "app-row-" (g.id) } {
                                td data-testid={ "app-name-" (g.id) } { (g.client_name) }
                                td { (g.servers.as_ref().map_or_else(|| "all".to_string(), |s| s.join(", "))) }
                                td { (format_rfc3339(g.created_at)) }
                                td { (g.last_used_at.map_or_else(|| "never".to_string(), format_rfc3339)) }
                                td {
                                    form method="post" action={ "/me/apps/" (g.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(me.csrf);
                                        button type="submit" data-testid={ "app-revoke-" (g.id) } { "Disconnect" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn view(g: &Grant) -> serde_json::Value {
    json!({
        "id": g.id, "client_name": g.client_name, "client_id": g.client_id,
        "workspace": g.workspace, "servers": g.servers,
        "status": if g.revoked_at.is_some() { "revoked" } else { "active" },
        "created_at": format_rfc3339(g.created_at),
        "last_used_at": g.last_used_at.map(format_rfc3339),
        "revoked_at": g.revoked_at.map(format_rfc3339),
    })
}

async fn revoke_mine(state: &AppState, me: &MemberSession, id: &str) -> Result<Grant, ApiError> {
    let not_found = || ApiError::not_found("grant_not_found", "you have no connected app with this id");
    let grants = state.store.grants().ok_or_else(not_found)?;
    match grants.get_grant(id).await? {
        Some(g) if g.member_id == me.member_id && g.workspace == me.workspace => {}
        _ => return Err(not_found()),
    }
    let g = lifecycle::revoke_grant(Some(&state.verifier), &state.store, id, Some(&me.member_id), "member", now_unix())
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(grant = %id, member = %me.member_id, "oauth grant revoked by its member");
    Ok(g)
}

/// `GET /me/api/apps` → `{"apps": [grant…]}`.
pub async fn list(State(state): State<SharedState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let me = session::resolve(&state, &headers, &Method::GET, None).await?;
    let apps: Vec<_> = of(&state, &me).await?.iter().map(view).collect();
    Ok(Json(json!({ "apps": apps })))
}

/// `DELETE /me/api/apps/{id}` (with `X-CSRF-Token`) → the grant, revoked.
pub async fn revoke(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let me = session::resolve(&state, &headers, &Method::DELETE, None).await?;
    Ok(Json(view(&revoke_mine(&state, &me, &id).await?)))
}

/// `POST /me/apps/{id}/revoke`: the page's Disconnect form (`csrf` field).
pub async fn revoke_form(State(state): State<SharedState>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let csrf = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.split('&').find_map(|kv| kv.strip_prefix("csrf=")))
        .filter(|v| v.bytes().all(|b| b.is_ascii_hexdigit()));
    let me = match session::resolve(&state, &headers, &Method::POST, csrf).await {
        Ok(me) => me,
        Err(e) => return e.into_response(),
    };
    match revoke_mine(&state, &me, &id).await {
        Ok(_) => Redirect::to("/me#apps-h").into_response(),
        Err(e) if e.status == StatusCode::NOT_FOUND => Redirect::to("/me#apps-h").into_response(),
        Err(e) => e.into_response(),
    }
}
