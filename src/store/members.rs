//! Members of a workspace, their sign-in links and their browser sessions
//! (docs/members.md): the [`MemberStore`] trait and its SQLite
//! implementation (Redis: `members_redis.rs`).
//!
//! Stable interface (the oauth and oidc branches build on it):
//! - [`MemberRecord`]: `id` (`mem_…`), `workspace`, `email` (lowercase),
//!   `name`, [`Role`], `created_at`. Unique per (workspace, email).
//! - `insert_member` (`Conflict` on a duplicate email), `get_member`,
//!   `member_by_email`, `list_members` (bounded), `delete_member`.
//! - Sign-in links are kept by the SHA-256 of their code only:
//!   `create_link`, `peek_link` (GET: never consumes), `consume_link`
//!   (POST: single use, atomic).
//! - Member sessions are kept by the SHA-256 of their id, like dashboard
//!   sessions (`sessions.rs`), and name the member, never a token.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::sqlite::SqliteStore;

/// SHA-256 of a secret (session id, sign-in link code).
pub type SecretHash = [u8; 32];

/// Members listed at most per workspace (`list_members`); adding one more
/// is refused (409) rather than growing without bound.
pub const MAX_MEMBERS_PER_WORKSPACE: usize = 1000;
/// Sessions kept per member; one more sign-in drops the oldest.
pub const MAX_SESSIONS_PER_MEMBER: i64 = 16;
/// Unused sign-in links kept per member; one more drops the oldest.
pub const MAX_LINKS_PER_MEMBER: i64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages every token (and connected app) of the workspace.
    Owner,
    /// Sees, creates and revokes only their own.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: String,
    pub workspace: String,
    /// Normalized: trimmed, lowercase.
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    /// Unix seconds.
    pub created_at: i64,
}

/// A sign-in link, stored under the SHA-256 of its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub workspace: String,
    pub member_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What became of a link presented for use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Valid (and, for `consume_link`, now used).
    Valid(LinkRecord),
    /// Known but used already.
    Used,
    /// Known but past its end.
    Expired,
    /// Never issued (or long forgotten).
    Unknown,
}

/// A member's browser session on the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSessionRecord {
    pub workspace: String,
    pub member_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The absolute end.
    pub expires_at: i64,
}

#[async_trait]
pub trait MemberStore: Send + Sync {
    /// `Conflict` when the workspace already has a member with this email,
    /// or holds [`MAX_MEMBERS_PER_WORKSPACE`] members.
    async fn insert_member(&self, m: &MemberRecord) -> Result<(), StoreError>;
    async fn get_member(&self, workspace: &str, id: &str) -> Result<Option<MemberRecord>, StoreError>;
    async fn member_by_email(&self, workspace: &str, email: &str) -> Result<Option<MemberRecord>, StoreError>;
    /// Oldest first, at most [`MAX_MEMBERS_PER_WORKSPACE`].
    async fn list_members(&self, workspace: &str) -> Result<Vec<MemberRecord>, StoreError>;
    /// Deletes the member, their sessions and their unused links. `None`
    /// when unknown.
    async fn delete_member(&self, workspace: &str, id: &str) -> Result<Option<MemberRecord>, StoreError>;

    async fn create_link(&self, code_hash: &SecretHash, link: &LinkRecord) -> Result<(), StoreError>;
    /// The link's state at `now`, without using it.
    async fn peek_link(&self, code_hash: &SecretHash, now: i64) -> Result<LinkState, StoreError>;
    /// Uses the link: of two concurrent calls, one gets `Valid`.
    async fn consume_link(&self, code_hash: &SecretHash, now: i64) -> Result<LinkState, StoreError>;

    async fn create_member_session(&self, id: &SecretHash, s: &MemberSessionRecord, idle_secs: i64) -> Result<(), StoreError>;
    async fn get_member_session(&self, id: &SecretHash) -> Result<Option<MemberSessionRecord>, StoreError>;
    async fn touch_member_session(&self, id: &SecretHash, now: i64, idle_secs: i64) -> Result<(), StoreError>;
    async fn delete_member_session(&self, id: &SecretHash) -> Result<(), StoreError>;
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS members (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (workspace, email)
);
CREATE TABLE IF NOT EXISTS signin_links (
    code_hash BLOB PRIMARY KEY,
    workspace TEXT NOT NULL,
    member_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX IF NOT EXISTS signin_links_by_member ON signin_links (member_id, created_at);
CREATE TABLE IF NOT EXISTS member_sessions (
    id_hash BLOB PRIMARY KEY,
    workspace TEXT NOT NULL,
    member_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    idle_secs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS member_sessions_by_member ON member_sessions (member_id, created_at);";

/// Creates the tables (from `SqliteStore::open`), independent of the
/// numbered token migrations, like `sessions::migrate`.
pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(sql_err)
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Used links are kept this long (to answer "used" rather than "unknown"),
/// then forgotten.
const USED_LINK_KEPT_SECS: i64 = 7 * 24 * 3600;

fn member_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MemberRecord> {
    let role: String = row.get(4)?;
    Ok(MemberRecord {
        id: row.get(0)?,
        workspace: row.get(1)?,
        email: row.get(2)?,
        name: row.get(3)?,
        role: Role::parse(&role).unwrap_or(Role::Member),
        created_at: row.get(5)?,
    })
}

const MEMBER_COLS: &str = "id, workspace, email, name, role, created_at";

/// A link row: workspace, member id, created, expires, used.
type LinkRow = (String, String, i64, i64, Option<i64>);

fn link_state(row: Option<LinkRow>, now: i64) -> LinkState {
    match row {
        None => LinkState::Unknown,
        Some((_, _, _, _, Some(_))) => LinkState::Used,
        Some((_, _, _, exp, None)) if exp <= now => LinkState::Expired,
        Some((workspace, member_id, created_at, expires_at, None)) => LinkState::Valid(LinkRecord {
            workspace,
            member_id,
            created_at,
            expires_at,
        }),
    }
}

fn read_link(c: &rusqlite::Connection, h: &SecretHash) -> Result<Option<LinkRow>, StoreError> {
    c.query_row(
        "SELECT workspace, member_id, created_at, expires_at, used_at FROM signin_links WHERE code_hash = ?1",
        [&h[..]],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
    .optional()
    .map_err(sql_err)
}

#[async_trait]
impl MemberStore for SqliteStore {
    async fn insert_member(&self, m: &MemberRecord) -> Result<(), StoreError> {
        let m = m.clone();
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            let n: i64 = tx
                .query_row("SELECT COUNT(*) FROM members WHERE workspace = ?1", [&m.workspace], |r| r.get(0))
                .map_err(sql_err)?;
            if n as usize >= MAX_MEMBERS_PER_WORKSPACE {
                return Err(StoreError::Conflict("the workspace has the most members allowed".into()));
            }
            tx.execute(
                "INSERT INTO members (id, workspace, email, name, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![m.id, m.workspace, m.email, m.name, m.role.as_str(), m.created_at],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict("a member with this email".into())
                }
                e => sql_err(e),
            })?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn get_member(&self, workspace: &str, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        let (ws, id) = (workspace.to_owned(), id.to_owned());
        SqliteStore::with(&self.reader, move |c| {
            c.query_row(
                &format!("SELECT {MEMBER_COLS} FROM members WHERE workspace = ?1 AND id = ?2"),
                [&ws, &id],
                member_row,
            )
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn member_by_email(&self, workspace: &str, email: &str) -> Result<Option<MemberRecord>, StoreError> {
        let (ws, email) = (workspace.to_owned(), email.to_owned());
        SqliteStore::with(&self.reader, move |c| {
            c.query_row(
                &format!("SELECT {MEMBER_COLS} FROM members WHERE workspace = ?1 AND email = ?2"),
                [&ws, &email],
                member_row,
            )
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn list_members(&self, workspace: &str) -> Result<Vec<MemberRecord>, StoreError> {
        let ws = workspace.to_owned();
        SqliteStore::with(&self.reader, move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {MEMBER_COLS} FROM members WHERE workspace = ?1 ORDER BY created_at, rowid LIMIT ?2"
                ))
                .map_err(sql_err)?;
            let rows = st
                .query_map(params![ws, MAX_MEMBERS_PER_WORKSPACE as i64], member_row)
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
        .await
    }

    async fn delete_member(&self, workspace: &str, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        let (ws, id) = (workspace.to_owned(), id.to_owned());
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            let m = tx
                .query_row(
                    &format!("SELECT {MEMBER_COLS} FROM members WHERE workspace = ?1 AND id = ?2"),
                    [&ws, &id],
                    member_row,
                )
                .optional()
                .map_err(sql_err)?;
            if m.is_some() {
                tx.execute("DELETE FROM members WHERE id = ?1", [&id]).map_err(sql_err)?;
                tx.execute("DELETE FROM member_sessions WHERE member_id = ?1", [&id])
                    .map_err(sql_err)?;
                tx.execute("DELETE FROM signin_links WHERE member_id = ?1", [&id])
                    .map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(m)
        })
        .await
    }

    async fn create_link(&self, h: &SecretHash, l: &LinkRecord) -> Result<(), StoreError> {
        let (h, l) = (*h, l.clone());
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            tx.execute(
                "DELETE FROM signin_links WHERE expires_at <= ?1 OR used_at <= ?2",
                params![l.created_at - USED_LINK_KEPT_SECS, l.created_at - USED_LINK_KEPT_SECS],
            )
            .map_err(sql_err)?;
            tx.execute(
                "INSERT INTO signin_links (code_hash, workspace, member_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&h[..], l.workspace, l.member_id, l.created_at, l.expires_at],
            )
            .map_err(sql_err)?;
            tx.execute(
                "DELETE FROM signin_links WHERE member_id = ?1 AND used_at IS NULL AND code_hash NOT IN
                   (SELECT code_hash FROM signin_links WHERE member_id = ?1 AND used_at IS NULL ORDER BY created_at DESC, rowid DESC LIMIT ?2)",
                params![l.member_id, MAX_LINKS_PER_MEMBER],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn peek_link(&self, h: &SecretHash, now: i64) -> Result<LinkState, StoreError> {
        let h = *h;
        SqliteStore::with(&self.reader, move |c| Ok(link_state(read_link(c, &h)?, now))).await
    }

    async fn consume_link(&self, h: &SecretHash, now: i64) -> Result<LinkState, StoreError> {
        let h = *h;
        SqliteStore::with(&self.writer, move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let state = link_state(read_link(&tx, &h)?, now);
            if matches!(state, LinkState::Valid(_)) {
                tx.execute("UPDATE signin_links SET used_at = ?2 WHERE code_hash = ?1", params![&h[..], now])
                    .map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(state)
        })
        .await
    }

    async fn create_member_session(&self, id: &SecretHash, s: &MemberSessionRecord, idle_secs: i64) -> Result<(), StoreError> {
        let (id, s) = (*id, s.clone());
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            tx.execute(
                "DELETE FROM member_sessions WHERE expires_at <= ?1 OR last_seen_at + idle_secs <= ?1",
                [s.created_at],
            )
            .map_err(sql_err)?;
            tx.execute(
                "INSERT INTO member_sessions (id_hash, workspace, member_id, created_at, last_seen_at, expires_at, idle_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &id[..],
                    s.workspace,
                    s.member_id,
                    s.created_at,
                    s.last_seen_at,
                    s.expires_at,
                    idle_secs
                ],
            )
            .map_err(sql_err)?;
            tx.execute(
                "DELETE FROM member_sessions WHERE member_id = ?1 AND id_hash NOT IN
                   (SELECT id_hash FROM member_sessions WHERE member_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2)",
                params![s.member_id, MAX_SESSIONS_PER_MEMBER],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn get_member_session(&self, id: &SecretHash) -> Result<Option<MemberSessionRecord>, StoreError> {
        let id = *id;
        SqliteStore::with(&self.reader, move |c| {
            c.query_row(
                "SELECT workspace, member_id, created_at, last_seen_at, expires_at FROM member_sessions WHERE id_hash = ?1",
                [&id[..]],
                |r| {
                    Ok(MemberSessionRecord {
                        workspace: r.get(0)?,
                        member_id: r.get(1)?,
                        created_at: r.get(2)?,
                        last_seen_at: r.get(3)?,
                        expires_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn touch_member_session(&self, id: &SecretHash, now: i64, _idle_secs: i64) -> Result<(), StoreError> {
        let id = *id;
        SqliteStore::with(&self.writer, move |c| {
            c.execute(
                "UPDATE member_sessions SET last_seen_at = ?2 WHERE id_hash = ?1 AND last_seen_at < ?2",
                params![&id[..], now],
            )
            .map(drop)
            .map_err(sql_err)
        })
        .await
    }

    async fn delete_member_session(&self, id: &SecretHash) -> Result<(), StoreError> {
        let id = *id;
        SqliteStore::with(&self.writer, move |c| {
            c.execute("DELETE FROM member_sessions WHERE id_hash = ?1", [&id[..]])
                .map(drop)
                .map_err(sql_err)
        })
        .await
    }
}
