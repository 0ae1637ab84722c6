//! `GET /v1/workspaces/{ws}/usage` (contract §10): the workspace's usage
//! buckets, grouped by token, member, server or tool.
//!
//! Counts reach the store every `usage.flush_interval_ms` (at most two
//! intervals after the request), so the last seconds may be missing.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::types::{UsageBucket, UsageReport};
use super::{Admin, SharedState, workspace};
use crate::error::{ApiError, ApiErrorBody};
use crate::store::usage::{Bucket, Counts, FOLDED, GroupBy, NONE, UsageQuery};
use crate::token::{format_rfc3339, now_unix};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    group_by: Option<String>,
}

/// Default range: the last 24 hours.
const DEFAULT_RANGE: i64 = 24 * 3600;

fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| ApiError::bad_request(format!("`{field}` must be an RFC 3339 time such as 2026-01-02T03:04:05Z")))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/usage",
    operation_id = "get_usage",
    tag = "usage",
    summary = "A workspace's usage over time",
    description = "Requests, errors and 429s per time bucket, grouped by token, member, server or tool. \
        Counts reach the store every `usage.flush_interval_ms`, so the last seconds may be missing. \
        The range is clipped to the retention of the bucket width.",
    params(
        ("ws" = String, Path, description = "Workspace slug"),
        ("from" = Option<String>, Query, description = "RFC 3339 start; default `to` minus 24 hours", format = DateTime),
        ("to" = Option<String>, Query, description = "RFC 3339 end; default now", format = DateTime),
        ("bucket" = Option<String>, Query, description = "`minute`, `hour` (default) or `day`"),
        ("group_by" = Option<String>, Query, description = "`token`, `member` (default), `server` or `tool`"),
    ),
    responses(
        (status = 200, description = "The buckets", body = UsageReport),
        (status = 400, description = "A bad time, `bucket` or `group_by`, `from` not before `to`, or an unknown query parameter", body = ApiErrorBody),
        (status = 401, description = "No valid admin token (or dashboard session)", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn usage(
    State(state): State<SharedState>,
    admin: Admin,
    Path(ws): Path<String>,
    query: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    workspace(&state, &admin, &ws)?;
    let Query(p) = query.map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let now = now_unix();
    let to = p.to.as_deref().map(|v| parse_time("to", v)).transpose()?.unwrap_or(now);
    let from = p
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to - DEFAULT_RANGE);
    if from >= to {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    let bucket = match p.bucket.as_deref() {
        None => Bucket::Hour,
        Some(b) => Bucket::parse(b).ok_or_else(|| ApiError::bad_request("`bucket` must be minute, hour or day"))?,
    };
    let group_by = match p.group_by.as_deref() {
        None => GroupBy::Member,
        Some(g) => GroupBy::parse(g).ok_or_else(|| ApiError::bad_request("`group_by` must be token, member, server or tool"))?,
    };
    // Nothing older than the retention exists; not reading it keeps a
    // query over a wide range cheap.
    let retention = match bucket {
        Bucket::Minute => state.config.usage.minute_retention,
        Bucket::Hour | Bucket::Day => state.config.usage.hour_retention,
    };
    let from = from.max(now - retention - bucket.seconds());
    // Nor anything in the future (a far `to` would make a Redis store read
    // one bucket key per minute up to it).
    let to = to.min(now + bucket.seconds());
    let Some(store) = state.store.usage() else {
        return Ok(Json(UsageReport {
            buckets: Vec::new(),
            folded: 0,
        }));
    };
    let rows = if from < to {
        store
            .query_usage(&UsageQuery {
                workspace: &ws,
                from,
                to,
                bucket,
                group_by,
            })
            .await?
    } else {
        Vec::new()
    };
    // Folded values show as "other" (merged with a real value "other", if
    // any); values that do not apply as null.
    let mut folded = 0;
    let mut merged: BTreeMap<(i64, Option<&str>), Counts> = BTreeMap::new();
    for r in &rows {
        let key = match r.key.as_str() {
            NONE => None,
            FOLDED => {
                folded += r.counts.requests;
                Some("other")
            }
            k => Some(k),
        };
        merged.entry((r.start, key)).or_default().add(r.counts);
    }
    let buckets = merged
        .into_iter()
        .map(|((start, key), c)| UsageBucket {
            start: format_rfc3339(start),
            key: key.map(str::to_string),
            requests: c.requests,
            errors: c.errors,
            rate_limited: c.rate_limited,
        })
        .collect();
    Ok(Json(UsageReport { buckets, folded }))
}
