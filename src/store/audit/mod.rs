//! The audit trail's durable half: the event record, the [`AuditStore`]
//! trait (append a batch, read a page, prune) and its opaque cursors. The
//! backends are `sqlite.rs` (one table) and `redis.rs` (a stream per
//! workspace plus one for everything). What is recorded, and when, is
//! decided above, in `crate::audit`.
//!
//! An event carries who did what to which token, where and how it ended,
//! and never a secret: no raw token, no tool arguments or results.

pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The event types of contract §10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    TokenCreated,
    TokenRevoked,
    /// Reserved: there is no roll (re-issue) operation yet.
    TokenRolled,
    AdminTokenCreated,
    Signin,
    Signout,
    /// Reserved: the gateway has no configuration reload yet.
    ConfigReloaded,
    ToolCall,
    RevokedTokenRefused,
    /// A member added to a workspace (admin API, CLI or dashboard).
    MemberAdded,
    /// A member removed (their tokens revoked, sessions ended).
    MemberRemoved,
    /// A one-time sign-in link made for a member.
    InviteCreated,
    /// OAuth: a member consented; the grant is created (`token_id`: none;
    /// `method`: the client's name).
    GrantCreated,
    /// OAuth: a member denied consent.
    ConsentDenied,
    /// OAuth: an access/refresh pair issued (`method`:
    /// `authorization_code` or `refresh_token`).
    OauthTokensIssued,
    /// OAuth: a grant and all its tokens revoked (`method` says why: `admin`,
    /// `member`, `client`, `member_removed`, `code_reused`,
    /// `refresh_reused`, `refresh_stolen`).
    GrantRevoked,
}

impl EventType {
    pub const ALL: [EventType; 16] = [
        EventType::TokenCreated,
        EventType::TokenRevoked,
        EventType::TokenRolled,
        EventType::AdminTokenCreated,
        EventType::Signin,
        EventType::Signout,
        EventType::ConfigReloaded,
        EventType::ToolCall,
        EventType::RevokedTokenRefused,
        EventType::MemberAdded,
        EventType::MemberRemoved,
        EventType::InviteCreated,
        EventType::GrantCreated,
        EventType::ConsentDenied,
        EventType::OauthTokensIssued,
        EventType::GrantRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TokenCreated => "token_created",
            EventType::TokenRevoked => "token_revoked",
            EventType::TokenRolled => "token_rolled",
            EventType::AdminTokenCreated => "admin_token_created",
            EventType::Signin => "signin",
            EventType::Signout => "signout",
            EventType::ConfigReloaded => "config_reloaded",
            EventType::ToolCall => "tool_call",
            EventType::RevokedTokenRefused => "revoked_token_refused",
            EventType::MemberAdded => "member_added",
            EventType::MemberRemoved => "member_removed",
            EventType::InviteCreated => "invite_created",
            EventType::GrantCreated => "grant_created",
            EventType::ConsentDenied => "consent_denied",
            EventType::OauthTokensIssued => "oauth_tokens_issued",
            EventType::GrantRevoked => "grant_revoked",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Position in [`EventType::ALL`] (metric arrays).
    pub fn index(self) -> usize {
        EventType::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }
}

/// One audit event. The JSON form (`Serialize`) is the contract's shape
/// (§10), used by the admin API and the sink alike; `at` is RFC 3339 UTC
/// with milliseconds, `duration_ms` has microsecond precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Assigned by the store when appended (`evt_…`); empty before.
    pub id: String,
    #[serde(with = "rfc3339_ms")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-06T14:03:07.123Z")]
    pub at: i64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Who did it: an admin token id, `bootstrap` (offline CLI), a member
    /// later; `None` for data-plane events (the token is the actor).
    #[schema(required = true)]
    pub actor: Option<String>,
    #[schema(required = true)]
    pub workspace: Option<String>,
    #[schema(required = true)]
    pub token_id: Option<String>,
    #[schema(required = true)]
    pub token_name: Option<String>,
    #[schema(required = true)]
    pub member_id: Option<String>,
    #[schema(required = true)]
    pub server: Option<String>,
    #[schema(required = true)]
    pub tool: Option<String>,
    #[schema(required = true)]
    pub method: Option<String>,
    #[schema(required = true)]
    pub status: Option<u16>,
    #[schema(required = true)]
    pub duration_ms: Option<f64>,
    #[schema(required = true)]
    pub request_id: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` at `at` (Unix ms) with every other field empty.
    pub fn new(kind: EventType, at: i64) -> Self {
        AuditEvent {
            id: String::new(),
            at,
            kind,
            actor: None,
            workspace: None,
            token_id: None,
            token_name: None,
            member_id: None,
            server: None,
            tool: None,
            method: None,
            status: None,
            duration_ms: None,
            request_id: None,
        }
    }
}

mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ms(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        let t = time::OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)?;
        Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds,
/// `2026-12-06T14:03:07.123Z`.
pub fn format_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (s, millis) = (crate::token::format_rfc3339(t.unix_timestamp()), ms.rem_euclid(1000));
    format!("{}.{millis:03}Z", s.trim_end_matches('Z'))
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a page of events is filtered on. Every filter is exact; `from` and
/// `to` (Unix ms) are inclusive.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// `Some(ws)`: that workspace's events; `None`: every event (global).
    pub workspace: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub kind: Option<EventType>,
    pub token_id: Option<String>,
    pub member_id: Option<String>,
    pub page_size: usize,
    /// From a previous page of the same scope (workspace or global).
    pub cursor: Option<String>,
}

impl AuditQuery {
    pub(crate) fn matches(&self, e: &AuditEvent) -> bool {
        self.from.is_none_or(|f| e.at >= f)
            && self.to.is_none_or(|t| e.at <= t)
            && self.kind.is_none_or(|k| e.kind == k)
            && self.token_id.as_deref().is_none_or(|t| e.token_id.as_deref() == Some(t))
            && self.member_id.as_deref().is_none_or(|m| e.member_id.as_deref() == Some(m))
            && self.workspace.as_deref().is_none_or(|w| e.workspace.as_deref() == Some(w))
    }

    /// The scope a cursor is bound to.
    fn scope(&self) -> &str {
        self.workspace.as_deref().unwrap_or("*")
    }

    /// The store position encoded in `cursor`, if it was issued for this
    /// scope; [`StoreError::InvalidCursor`] otherwise (another workspace's
    /// cursor included).
    pub(crate) fn position(&self) -> Result<Option<String>, StoreError> {
        let Some(c) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| StoreError::InvalidCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
        match text.split_once('|') {
            Some(("a1", rest)) => match rest.rsplit_once('|') {
                Some((scope, pos)) if scope == self.scope() && !pos.is_empty() => Ok(Some(pos.to_owned())),
                _ => Err(StoreError::InvalidCursor),
            },
            _ => Err(StoreError::InvalidCursor),
        }
    }

    /// A cursor for `position` in this query's scope.
    pub(crate) fn cursor_at(&self, position: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("a1|{}|{position}", self.scope()))
    }
}

/// One page, newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// `None` on the last page. A page may hold fewer than `page_size`
    /// events and still have a next one (the Redis backend stops scanning
    /// after a bounded number of non-matching events).
    pub next_cursor: Option<String>,
}

/// What retention deletes.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Delete events older than this (Unix ms).
    pub before: Option<i64>,
    /// Keep at most this many (0: no limit).
    pub max_events: u64,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events and returns them with their ids (assigned here,
    /// unique across instances). `max_events` (0: none) may be applied here
    /// already, as Redis does; [`AuditStore::prune`] applies it in any case.
    async fn append(&self, events: Vec<AuditEvent>, max_events: u64) -> Result<Vec<AuditEvent>, StoreError>;
    /// One page, newest first.
    async fn page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;
    /// Deletes what `retention` says may go; returns how many (approximate
    /// with Redis, which trims whole stream nodes).
    async fn prune(&self, retention: Retention, workspaces: &[String]) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_their_scope() {
        let a = AuditQuery {
            workspace: Some("a".into()),
            ..AuditQuery::default()
        };
        let c = a.cursor_at("42");
        let mut again = a.clone();
        again.cursor = Some(c.clone());
        assert_eq!(again.position().unwrap().as_deref(), Some("42"));
        let b = AuditQuery {
            workspace: Some("b".into()),
            cursor: Some(c.clone()),
            ..AuditQuery::default()
        };
        assert!(matches!(b.position(), Err(StoreError::InvalidCursor)));
        let global = AuditQuery {
            cursor: Some(c),
            ..AuditQuery::default()
        };
        assert!(matches!(global.position(), Err(StoreError::InvalidCursor)));
        for junk in ["x", "!!!", &URL_SAFE_NO_PAD.encode("a1|a|")] {
            let q = AuditQuery {
                workspace: Some("a".into()),
                cursor: Some(junk.into()),
                ..AuditQuery::default()
            };
            assert!(matches!(q.position(), Err(StoreError::InvalidCursor)), "{junk}");
        }
    }

    #[test]
    fn times_have_milliseconds_and_round_trip() {
        assert_eq!(format_ms(1_765_029_787_123), "2025-12-06T14:03:07.123Z");
        let mut e = AuditEvent::new(EventType::ToolCall, 1_765_029_787_005);
        e.duration_ms = Some(0.25);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["at"], "2025-12-06T14:03:07.005Z");
        assert_eq!(j["type"], "tool_call");
        let back: AuditEvent = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }
}
