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
