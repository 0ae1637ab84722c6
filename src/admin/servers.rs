//! `GET /v1/workspaces/{ws}/servers`: each upstream of a workspace with
//! its last known health and tool count (the dashboard's Servers tab).
//! Never a header value or a URL's userinfo or query: those may hold the
//! upstream's own credentials.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::types::{ServerList, ServerState};
use super::{Admin, workspace};
use crate::error::{ApiError, ApiErrorBody};
use crate::state::AppState;
use crate::token::format_rfc3339;

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/servers",
    operation_id = "list_servers",
    tag = "workspaces",
    summary = "A workspace's servers and their health",
    description = "Health is what this instance last saw (a request or a probe); no secrets.",
    params(("ws" = String, Path, description = "Workspace slug")),
    responses(
        (status = 200, description = "The servers", body = ServerList),
        (status = 401, description = "No valid admin token (or dashboard session)", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
    )
)]
pub async fn list(State(state): State<Arc<AppState>>, admin: Admin, Path(ws): Path<String>) -> Result<Json<ServerList>, ApiError> {
    let w = workspace(&state, &admin, &ws)?;
    let servers: Vec<_> = w
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let st = state.metrics.server_status(w.index, i);
            ServerState {
                name: s.name.to_string(),
                url: super::redacted_url(&s.url),
                timeout_ms: s.timeout.as_millis() as u64,
                health: st.health,
                since: (st.since > 0).then(|| format_rfc3339(st.since)),
                tools: st.tools,
            }
        })
        .collect();
    Ok(Json(ServerList {
        aggregate: w.is_aggregate(),
        workspace: ws,
        servers,
    }))
}
