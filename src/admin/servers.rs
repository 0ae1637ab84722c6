//! `GET /v1/workspaces/{ws}/servers`: each upstream of a workspace with
//! its last known health and tool count (the dashboard's Servers tab).
//! Never a header value or a URL's userinfo or query: those may hold the
//! upstream's own credentials.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;

use super::{Admin, workspace};
use crate::error::ApiError;
use crate::state::AppState;
use crate::token::format_rfc3339;

pub async fn list(State(state): State<Arc<AppState>>, admin: Admin, Path(ws): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let w = workspace(&state, &admin, &ws)?;
    let servers: Vec<_> = w
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let st = state.metrics.server_status(w.index, i);
            json!({
                "name": s.name,
                "url": super::redacted_url(&s.url),
                "timeout_ms": s.timeout.as_millis() as u64,
                "health": st.health,
                "since": (st.since > 0).then(|| format_rfc3339(st.since)),
                "tools": st.tools,
            })
        })
        .collect();
    Ok(Json(json!({ "workspace": ws, "aggregate": w.is_aggregate(), "servers": servers })))
}
