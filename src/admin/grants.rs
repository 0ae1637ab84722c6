//! Connected apps: the OAuth grants of a workspace (docs/oauth.md), listed
//! and revoked by an administrator. Revoking a grant revokes every access
//! token it issued through the token revoke path, so when the call returns
//! no instance accepts any of them, and its refresh tokens are dead.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::types::{GrantInfo, GrantList};
use super::{Admin, workspace};
use crate::auth::lifecycle;
use crate::error::{ApiError, ApiErrorBody};
use crate::state::AppState;
use crate::token::now_unix;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    /// Only this person's grants.
    member_id: Option<String>,
}

fn not_found(ws: &str, id: &str) -> ApiError {
    ApiError::not_found("grant_not_found", format!("workspace `{ws}` has no grant `{id}`"))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/grants",
    operation_id = "list_grants",
    tag = "oauth",
    summary = "List the workspace's OAuth grants (connected apps)",
    params(("ws" = String, Path, description = "Workspace slug"), GrantQuery),
    responses(
        (status = 200, description = "Newest first, revoked ones included", body = GrantList),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(ws): Path<String>,
    Query(q): Query<GrantQuery>,
) -> Result<Json<GrantList>, ApiError> {
    workspace(&state, &admin, &ws)?;
    let Some(grants) = state.store.grants() else {
        return Ok(Json(GrantList { grants: Vec::new() }));
    };
    let list = grants.list_grants(q.member_id.as_deref(), Some(&ws)).await?;
    Ok(Json(GrantList {
        grants: list.into_iter().map(GrantInfo::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/grants/{id}",
    operation_id = "revoke_grant",
    tag = "oauth",
    summary = "Revoke a grant and every token it issued",
    description = "Immediate: when the call returns, no instance accepts the grant's access tokens, \
        and its refresh tokens are refused. Revoking twice is not an error.",
    params(("ws" = String, Path, description = "Workspace slug"), ("id" = String, Path, description = "Grant id (`grt_…`)")),
    responses(
        (status = 200, description = "The grant, with `revoked_at`", body = GrantInfo),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace, or no such grant in it", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<GrantInfo>, ApiError> {
    workspace(&state, &admin, &ws)?;
    let grants = state.store.grants().ok_or_else(|| not_found(&ws, &id))?;
    match grants.get_grant(&id).await? {
        Some(g) if g.workspace == ws => {}
        _ => return Err(not_found(&ws, &id)),
    }
    let g = lifecycle::revoke_grant(Some(&state.verifier), &state.store, &id, Some(&admin.id), "admin", now_unix())
        .await?
        .ok_or_else(|| not_found(&ws, &id))?;
    tracing::info!(grant = %id, workspace = %ws, revoked_by = %admin.id, "oauth grant revoked");
    Ok(Json(GrantInfo::from(g)))
}
