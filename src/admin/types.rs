//! The JSON bodies of the admin API (contract §4), as types.
//!
//! The handlers in `mod.rs` serialize (or parse) exactly these structs, and
//! the OpenAPI document (`openapi.rs`) derives its schemas from them, so what
//! the document says and what the API sends cannot drift apart. Doc comments
//! on fields are the descriptions in the document. The token record itself
//! is `token::TokenView` (schema `TokenRecord`); the self-check answer is
//! `auth::self_check::SelfView` (schema `SelfCheck`); the error body is
//! `error::ApiErrorBody` (schema `Error`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::token::TokenView;

/// `POST /v1/workspaces/{ws}/tokens`. Unknown fields are refused (400), so
/// a misspelt optional field is not silently ignored.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1-200 printable characters (no control or format characters).
    #[schema(example = "alice-laptop")]
    pub name: String,
    /// Lifetime in seconds, at most 315360000 (10 years); `0` or absent = never expires.
    #[schema(example = 2592000)]
    pub expires_in: Option<u64>,
    /// The member the token belongs to (1-200 characters); not with `email`.
    pub member_id: Option<String>,
    /// The person the token belongs to; not with `member_id`.
    pub email: Option<String>,
    /// Servers of the workspace the token may use (at least one); absent = all.
    pub allowed_servers: Option<Vec<String>>,
    /// Per-token rate limit (> 0); absent = the workspace's limit.
    pub requests_per_minute: Option<u32>,
}

/// `201` to a create: the raw token, shown this once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken<'a> {
    /// The raw workspace token (`mwt_` + 36 base62). Store it now: only its
    /// SHA-256 is kept.
    #[schema(example = "mwt_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zA1b2C3")]
    pub token: &'a str,
    pub info: TokenView<'a>,
    pub mcp_json: McpJson,
}

/// A ready-to-paste MCP client configuration (`mcp.json`) for the new token.
#[derive(Serialize, ToSchema)]
pub struct McpJson {
    /// One entry, keyed by the workspace slug.
    #[serde(rename = "mcpServers")]
    pub mcp_servers: BTreeMap<String, McpServerEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct McpServerEntry {
    /// `<server.public_url>/ws/<slug>`.
    pub url: String,
    /// `{"Authorization": "Bearer mwt_…"}`.
    pub headers: BTreeMap<String, String>,
}

/// A page of `GET /v1/workspaces/{ws}/tokens`, newest first.
#[derive(Serialize, ToSchema)]
pub struct TokenPage<'a> {
    pub tokens: Vec<TokenView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /v1/workspaces`: the workspaces this admin token may manage.
#[derive(Serialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceInfo {
    #[schema(example = "demo")]
    pub slug: String,
    /// The MCP endpoint clients use: `<server.public_url>/ws/<slug>`.
    pub url: String,
    /// The workspace's default per-token limit.
    pub requests_per_minute: u32,
    pub servers: Vec<ServerInfo>,
}

/// An upstream server, without secrets: no headers, and the URL without
/// userinfo or query string.
#[derive(Serialize, ToSchema)]
pub struct ServerInfo {
    pub name: String,
    pub url: String,
    pub timeout_ms: u64,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /readyz` (200 when ready, 503 otherwise, same body).
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `store == "ok"` and `revocations == "in_sync"`.
    pub ready: bool,
    /// `ok` or `unreachable`.
    #[schema(example = "ok")]
    pub store: &'static str,
    /// `in_sync`, or `resynchronising` while a cluster instance cannot trust its index.
    #[schema(example = "in_sync")]
    pub revocations: &'static str,
}

/// An OAuth grant: one person's consent that one client may use one
/// workspace (a "connected app"). Never holds a token.
#[derive(Serialize, ToSchema)]
pub struct GrantInfo {
    /// Grant id (`grt_…`); the `created_by` of the access tokens it issued.
    #[schema(example = "grt_3f9K2mQ7xL1pZ8aB")]
    pub id: String,
    /// The client's name as it registered it (shown on the consent page).
    pub client_name: String,
    pub client_id: String,
    /// Who consented (`admin:<token id>` for an administrator's session).
    pub member_id: String,
    #[schema(required = true)]
    pub email: Option<String>,
    pub workspace: String,
    /// Servers consented to; `null` = all of the workspace's.
    #[schema(required = true)]
    pub servers: Option<Vec<String>>,
    /// `active` or `revoked`.
    #[schema(example = "active")]
    pub status: &'static str,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC: the last token issue (code exchange or refresh).
    #[schema(required = true)]
    pub last_used_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true)]
    pub revoked_at: Option<String>,
}

impl From<crate::store::grants::Grant> for GrantInfo {
    fn from(g: crate::store::grants::Grant) -> Self {
        use crate::token::format_rfc3339;
        GrantInfo {
            status: if g.revoked_at.is_some() { "revoked" } else { "active" },
            created_at: format_rfc3339(g.created_at),
            last_used_at: g.last_used_at.map(format_rfc3339),
            revoked_at: g.revoked_at.map(format_rfc3339),
            id: g.id,
            client_name: g.client_name,
            client_id: g.client_id,
            member_id: g.member_id,
            email: g.email,
            workspace: g.workspace,
            servers: g.servers,
        }
    }
}

/// `GET /v1/workspaces/{ws}/grants`: newest first, at most 500.
#[derive(Serialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantInfo>,
}

/// `GET /v1/workspaces/{ws}/servers`: each upstream with its last known
/// health (the dashboard's Servers tab).
#[derive(Serialize, ToSchema)]
pub struct ServerList {
    #[schema(example = "demo")]
    pub workspace: String,
    /// Whether the workspace aggregates several servers (tool names prefixed).
    pub aggregate: bool,
    pub servers: Vec<ServerState>,
}

/// An upstream server and its health, without secrets (no headers; the URL
/// without userinfo or query string).
#[derive(Serialize, ToSchema)]
pub struct ServerState {
    pub name: String,
    pub url: String,
    pub timeout_ms: u64,
    /// `up`, `down` or `unknown` (no request or probe yet).
    #[schema(example = "up")]
    pub health: &'static str,
    /// Since when `health` holds (RFC 3339); `null` if nothing was seen.
    #[schema(required = true)]
    pub since: Option<String>,
    /// Tools the server listed at its last `tools/list`; `null` if unknown.
    #[schema(required = true)]
    pub tools: Option<u64>,
}

/// `GET /v1/workspaces/{ws}/usage`: counts per time bucket and key.
#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    /// Oldest first; within a bucket, by key.
    pub buckets: Vec<UsageBucket>,
    /// Requests whose key was folded into `"other"` (too many distinct keys).
    pub folded: u64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageBucket {
    /// Start of the bucket, RFC 3339 UTC.
    #[schema(example = "2026-12-06T14:00:00Z")]
    pub start: String,
    /// The token id, member id, server or tool (per `group_by`); `"other"`
    /// for folded values; `null` where it does not apply (a request
    /// without member, or refused before a server or tool was known).
    #[schema(required = true)]
    pub key: Option<String>,
    pub requests: u64,
    /// Answers with status 400 or above, except 429.
    pub errors: u64,
    /// 429 answers.
    pub rate_limited: u64,
}

/// A page of audit events, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditEventPage {
    pub events: Vec<crate::audit::AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}
