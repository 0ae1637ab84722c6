//! The stored token record and its public JSON view.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Data-plane workspace token, control-plane admin token, or a workspace
/// token issued by the OAuth authorization server (`oauth`: same `mwt_`
/// prefix, index, limits and revocation as `workspace`; its record names
/// the client in `name` and the grant in `created_by`, docs/oauth.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Workspace,
    Admin,
    Oauth,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Workspace | TokenKind::Oauth => super::WORKSPACE_PREFIX,
            TokenKind::Admin => super::ADMIN_PREFIX,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Workspace => "workspace",
            TokenKind::Admin => "admin",
            TokenKind::Oauth => "oauth",
        }
    }

    /// Whether a token of this kind is a bearer credential of the data
    /// plane (`/ws/{slug}`).
    pub fn is_data_plane(self) -> bool {
        matches!(self, TokenKind::Workspace | TokenKind::Oauth)
    }

    pub fn from_str_opt(s: &str) -> Option<Self> {
        match s {
            "workspace" => Some(TokenKind::Workspace),
            "admin" => Some(TokenKind::Admin),
            "oauth" => Some(TokenKind::Oauth),
            _ => None,
        }
    }
}

/// Derived status: revoked wins over expired, expired over active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    Active,
    Revoked,
    Expired,
}

/// Everything kept about a token; never the raw value. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// The workspace of a workspace token or of a workspace-scoped admin token;
    /// `None` for a global admin token.
    pub workspace: Option<String>,
    pub kind: TokenKind,
    pub hint: String,
    pub member_id: Option<String>,
    pub email: Option<String>,
    pub created_at: i64,
    /// Admin token id that created it, or `"bootstrap"` for the offline CLI.
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub allowed_servers: Option<Vec<String>>,
    /// Per-token override of the rate limit, requests per minute.
    pub requests_per_minute: Option<u32>,
}

impl TokenRecord {
    pub fn status_at(&self, now: i64) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    /// The JSON shape clients see (RFC 3339 timestamps, derived status).
    pub fn view(&self, now: i64) -> TokenView<'_> {
        TokenView {
            id: &self.id,
            name: &self.name,
            workspace: self.workspace.as_deref(),
            kind: self.kind,
            status: self.status_at(now),
            hint: &self.hint,
            member_id: self.member_id.as_deref(),
            email: self.email.as_deref(),
            created_at: format_rfc3339(self.created_at),
            created_by: &self.created_by,
            expires_at: self.expires_at.map(format_rfc3339),
            revoked_at: self.revoked_at.map(format_rfc3339),
            last_used_at: self.last_used_at.map(format_rfc3339),
            allowed_servers: self.allowed_servers.as_deref(),
            requests_per_minute: self.requests_per_minute,
        }
    }
}

// Public JSON view of a [`TokenRecord`]. Its schema in the OpenAPI document
// (`admin::openapi`, schema `TokenRecord`) is derived from this struct, so
// the two cannot drift; the `///` comments are the document's descriptions,
// and `required` on the options says what the serializer does: every key is
// always there.
/// A token's record. Never holds the raw token. Optional fields are present
/// as `null`, so that scripts can rely on every key being there.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokenRecord)]
pub struct TokenView<'a> {
    /// Public token id (`tkn_` + base62), used to get and revoke the token.
    #[schema(example = "tkn_3f9K2mQ7xL1pZ8aB")]
    pub id: &'a str,
    pub name: &'a str,
    /// The token's workspace; `null` for a global admin token.
    #[schema(required = true)]
    pub workspace: Option<&'a str>,
    pub kind: TokenKind,
    /// Derived: `revoked` if revoked, else `expired` if `expires_at <= now`, else `active`.
    pub status: TokenStatus,
    /// The prefix and first 4 random characters, for recognising a token.
    #[schema(example = "mwt_Ab3d…")]
    pub hint: &'a str,
    #[schema(required = true)]
    pub member_id: Option<&'a str>,
    #[schema(required = true)]
    pub email: Option<&'a str>,
    /// RFC 3339 UTC.
    #[schema(example = "2026-11-22T05:33:18Z")]
    pub created_at: String,
    /// Id of the admin token that created it, or `bootstrap` (offline CLI).
    pub created_by: &'a str,
    /// RFC 3339 UTC; `null` = never expires.
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// RFC 3339 UTC; `null` = not revoked.
    #[schema(required = true)]
    pub revoked_at: Option<String>,
    /// RFC 3339 UTC, at most 60 s behind (written in batches); `null` = never used.
    #[schema(required = true)]
    pub last_used_at: Option<String>,
    /// Servers of the workspace the token may use; `null` = all.
    #[schema(required = true)]
    pub allowed_servers: Option<&'a [String]>,
    /// Per-token rate limit override; `null` = the workspace's limit.
    #[schema(required = true)]
    pub requests_per_minute: Option<u32>,
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-11-22T05:33:18Z`.
pub fn format_rfc3339(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Characters no stored string may hold (the admin API refuses them with
/// 422, `admin::check_text`) and that the CLI escapes when it prints:
/// control characters (C0, DEL, C1) and format characters that change how
/// text is displayed rather than what it says.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        TokenRecord {
            id: "tkn_0123456789abcdef".into(),
            name: "ci".into(),
            workspace: Some("demo".into()),
            kind: TokenKind::Workspace,
            hint: "mwt_Ab3d…".into(),
            member_id: None,
            email: None,
            created_at: 1_700_000_000,
            created_by: "bootstrap".into(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            allowed_servers: None,
            requests_per_minute: None,
        }
    }

    #[test]
    fn status_is_derived_revoked_then_expired_then_active() {
        let mut r = record();
        assert_eq!(r.status_at(10), TokenStatus::Active);
        r.expires_at = Some(100);
        assert_eq!(r.status_at(99), TokenStatus::Active);
        assert_eq!(r.status_at(100), TokenStatus::Expired, "expires_at <= now is expired");
        r.revoked_at = Some(50);
        assert_eq!(r.status_at(100), TokenStatus::Revoked);
    }

    #[test]
    fn view_uses_rfc3339_and_never_has_a_token_field() {
        let v = serde_json::to_value(record().view(0)).unwrap();
        assert_eq!(v["created_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["status"], "active");
        assert!(v.get("token").is_none());
        assert!(v["expires_at"].is_null());
    }
}
