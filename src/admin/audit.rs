//! The audit trail over the admin API (contract §10, docs/admin-api.md):
//!
//! - `GET /v1/workspaces/{ws}/audit`: a workspace's events, newest first,
//!   for a global admin token or one scoped to that workspace;
//! - `GET /v1/audit`: every event, workspace-less ones (admin tokens
//!   created without a workspace, say) included; global admin tokens only;
//! - `GET /v1/audit/stats`: the writer's counters (events written, dropped
//!   because the queue was full, failed writes; the queue's fill), for the
//!   dashboard to show next to the trail.
//!
//! Filters: `from`, `to` (RFC 3339, inclusive), `type`, `token_id`,
//! `member_id`; `page_size` 1-200 (default 50; anything else is a 400, as
//! for token listings); `cursor` from the previous page of the same
//! listing (a cursor of another workspace is a 400).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::types::AuditEventPage;
use super::{Admin, SharedState, workspace};
use crate::audit::{AuditQuery, EventType, Stats};
use crate::error::{ApiError, ApiErrorBody};

pub(super) fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/workspaces/{ws}/audit", get(workspace_audit))
        .route("/v1/audit", get(global_audit))
        .route("/v1/audit/stats", get(stats))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    token_id: Option<String>,
    member_id: Option<String>,
    page_size: Option<String>,
    cursor: Option<String>,
}

type Params = Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>;

// The query parameters are listed by hand: the handler parses them as
// strings itself (to answer a contract 400, not axum's plain-text one), so
// the struct's types are not the documented ones.
#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/audit",
    operation_id = "list_workspace_audit",
    tag = "audit",
    summary = "A workspace's audit events",
    description = "Newest first. Every filter is optional; times are inclusive.",
    params(
        ("ws" = String, Path, description = "Workspace slug"),
        ("from" = Option<String>, Query, description = "RFC 3339; events at or after", format = DateTime),
        ("to" = Option<String>, Query, description = "RFC 3339; events at or before", format = DateTime),
        ("type" = Option<EventType>, Query, description = "Only this event type"),
        ("token_id" = Option<String>, Query, description = "Only events of this token"),
        ("member_id" = Option<String>, Query, description = "Only events of this member"),
        ("page_size" = Option<u32>, Query, description = "1-200, default 50", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page of the same listing"),
    ),
    responses(
        (status = 200, description = "A page of events", body = AuditEventPage),
        (status = 400, description = "A bad filter, `page_size` or `cursor`, or an unknown query parameter", body = ApiErrorBody),
        (status = 401, description = "No valid admin token (or dashboard session)", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn workspace_audit(
    State(state): State<SharedState>,
    admin: Admin,
    Path(ws): Path<String>,
    params: Params,
) -> Result<Json<AuditEventPage>, ApiError> {
    workspace(&state, &admin, &ws)?;
    page(&state, query(params, Some(ws))?).await
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    summary = "Every audit event",
    description = "Newest first, across workspaces and including events of no workspace. Global admin tokens only.",
    params(
        ("from" = Option<String>, Query, description = "RFC 3339; events at or after", format = DateTime),
        ("to" = Option<String>, Query, description = "RFC 3339; events at or before", format = DateTime),
        ("type" = Option<EventType>, Query, description = "Only this event type"),
        ("token_id" = Option<String>, Query, description = "Only events of this token"),
        ("member_id" = Option<String>, Query, description = "Only events of this member"),
        ("page_size" = Option<u32>, Query, description = "1-200, default 50", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page of the same listing"),
    ),
    responses(
        (status = 200, description = "A page of events", body = AuditEventPage),
        (status = 400, description = "A bad filter, `page_size` or `cursor`, or an unknown query parameter", body = ApiErrorBody),
        (status = 401, description = "No valid admin token (or dashboard session)", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to a workspace", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn global_audit(State(state): State<SharedState>, admin: Admin, params: Params) -> Result<Json<AuditEventPage>, ApiError> {
    if let Some(ws) = &admin.workspace {
        return Err(ApiError::forbidden(format!(
            "this admin token is scoped to workspace `{ws}`; read its events at /v1/workspaces/{ws}/audit"
        )));
    }
    page(&state, query(params, None)?).await
}

#[utoipa::path(
    get,
    path = "/v1/audit/stats",
    operation_id = "get_audit_stats",
    tag = "audit",
    summary = "The audit writer's counters",
    description = "Events written, dropped (queue full: the trail has gaps) and failed writes since start, on this instance.",
    responses(
        (status = 200, description = "The counters", body = Stats),
        (status = 401, description = "No valid admin token (or dashboard session)", body = ApiErrorBody),
    )
)]
pub(super) async fn stats(State(state): State<SharedState>, _admin: Admin) -> Json<Stats> {
    Json(state.audit.stats())
}

async fn page(state: &SharedState, q: AuditQuery) -> Result<Json<AuditEventPage>, ApiError> {
    let page = state.audit.page(&q).await?;
    Ok(Json(AuditEventPage {
        events: page.events,
        next_cursor: page.next_cursor,
    }))
}

/// The query string as an [`AuditQuery`], or a 400 naming what is wrong.
fn query(params: Params, workspace: Option<String>) -> Result<AuditQuery, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let page_size = match p.page_size.as_deref() {
        None => 50,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::bad_request("page_size must be an integer from 1 to 200"))?,
    };
    let from = p.from.as_deref().map(|s| time_param("from", s)).transpose()?;
    let to = p.to.as_deref().map(|s| time_param("to", s)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("`from` must not be after `to`"));
    }
    let kind = match p.kind.as_deref() {
        None => None,
        Some(s) => Some(EventType::parse(s).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::bad_request(format!("unknown event type; use one of: {}", known.join(", ")))
        })?),
    };
    for (field, v) in [("token_id", &p.token_id), ("member_id", &p.member_id)] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > 200 {
                return Err(ApiError::bad_request(format!("`{field}` must be 1-200 characters")));
            }
            super::check_text(field, v).map_err(|_| ApiError::bad_request(format!("`{field}` must not contain control characters")))?;
        }
    }
    Ok(AuditQuery {
        workspace,
        from,
        to,
        kind,
        token_id: p.token_id,
        member_id: p.member_id,
        page_size,
        cursor: p.cursor.filter(|c| !c.is_empty()),
    })
}

/// An RFC 3339 time as Unix milliseconds.
fn time_param(name: &str, s: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::bad_request(format!("`{name}` must be an RFC 3339 time, e.g. 2026-01-31T09:00:00Z")))
}
