//! OAuth grants (docs/oauth.md): the [`GrantStore`] trait and its SQLite and
//! Redis implementations.
//!
//! A grant is one person's consent that one client may use one workspace
//! (some or all of its servers). It remembers the access tokens issued under
//! it, so that revoking it revokes them through the token store's own revoke
//! path (`auth::lifecycle::revoke_grant`), which every instance hears.
//!
//! One-time secrets (authorization codes and refresh tokens) are kept by the
//! SHA-256 of their value, never the value, with the grant they belong to.
//! Consuming one marks it used instead of deleting it, until it expires, so
//! that a second presentation is recognised as reuse (and the caller revokes
//! the grant) rather than looking unknown.

use async_trait::async_trait;
use redis::AsyncCommands;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::redis::RedisStore;
use super::sqlite::SqliteStore;
use crate::token::TokenHash;

/// Access token ids remembered per grant. A grant issues one per refresh,
/// each living `oauth.access_token_ttl`; older ones have expired by the time
/// this many newer ones exist, unless refreshes come faster than the TTL,
/// which the per-client rate limit bounds.
pub const MAX_TOKENS_PER_GRANT: usize = 64;
/// Grants returned by one listing (a person's connected apps).
pub const MAX_LISTED: usize = 500;

/// One person's consent for one client on one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `grt_` + 16 base62.
    pub id: String,
    pub client_id: String,
    pub client_name: String,
    pub member_id: String,
    pub email: Option<String>,
    pub workspace: String,
    /// The servers consented to; `None` = all of the workspace's.
    pub servers: Option<Vec<String>>,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    pub last_used_at: Option<i64>,
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

/// What a one-time secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Code,
    Refresh,
}

impl SecretKind {
    fn as_str(self) -> &'static str {
        match self {
            SecretKind::Code => "code",
            SecretKind::Refresh => "refresh",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "code" => Some(SecretKind::Code),
            "refresh" => Some(SecretKind::Refresh),
            _ => None,
        }
    }
}

/// An authorization code or refresh token, by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub kind: SecretKind,
    pub grant_id: String,
    /// What the code was issued for (JSON: redirect URI, PKCE challenge…);
    /// empty for refresh tokens.
    pub payload: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The result of presenting a one-time secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// First use: it is now spent.
    Fresh(Secret),
    /// Spent before: the grant it belongs to is to be revoked.
    Reused { kind: SecretKind, grant_id: String },
    /// Unknown or expired.
    Unknown,
}

#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn create_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// Grants of a member (`Some`) and/or a workspace (`Some`), newest
    /// first, at most [`MAX_LISTED`], revoked ones included.
    async fn list_grants(&self, member_id: Option<&str>, workspace: Option<&str>) -> Result<Vec<Grant>, StoreError>;
    /// Marks the grant revoked at `at` (kept if already). `None` if unknown.
    async fn revoke_grant(&self, id: &str, at: i64) -> Result<Option<Grant>, StoreError>;
    async fn touch_grant(&self, id: &str, at: i64) -> Result<(), StoreError>;
    /// Remembers an access token issued under the grant (the newest
    /// [`MAX_TOKENS_PER_GRANT`] are kept).
    async fn add_grant_token(&self, id: &str, token_id: &str) -> Result<(), StoreError>;
    async fn grant_tokens(&self, id: &str) -> Result<Vec<String>, StoreError>;
    async fn put_secret(&self, hash: &TokenHash, secret: &Secret) -> Result<(), StoreError>;
    /// Atomically spends the secret (at most one caller ever sees `Fresh`).
    async fn consume_secret(&self, hash: &TokenHash, now: i64) -> Result<Consumed, StoreError>;
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS oauth_grants (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL,
    workspace TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS oauth_grants_by_member ON oauth_grants (member_id, created_at);
CREATE INDEX IF NOT EXISTS oauth_grants_by_workspace ON oauth_grants (workspace, created_at);
CREATE TABLE IF NOT EXISTS oauth_grant_tokens (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    grant_id TEXT NOT NULL,
    token_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS oauth_grant_tokens_by_grant ON oauth_grant_tokens (grant_id, seq);
CREATE TABLE IF NOT EXISTS oauth_secrets (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);";

/// Creates the tables (from `SqliteStore::open`), independent of the
/// numbered token migrations like the session table.
pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(sql_err)
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("grant record: {e}"))
}

fn grant_from_row(body: String, last_used_at: Option<i64>, revoked_at: Option<i64>) -> Result<Grant, StoreError> {
    let mut g: Grant = serde_json::from_str(&body).map_err(json_err)?;
    g.last_used_at = last_used_at;
    g.revoked_at = revoked_at;
    Ok(g)
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn create_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let body = serde_json::to_string(g).map_err(json_err)?;
        let g = g.clone();
        SqliteStore::with(&self.writer, move |c| {
            c.execute(
                "INSERT INTO oauth_grants (id, member_id, workspace, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![g.id, g.member_id, g.workspace, g.created_at, body],
            )
            .map(drop)
            .map_err(sql_err)
        })
        .await
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        let id = id.to_owned();
        SqliteStore::with(&self.reader, move |c| {
            let row = c
                .query_row("SELECT body, last_used_at, revoked_at FROM oauth_grants WHERE id = ?1", [id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(sql_err)?;
            row.map(|(b, l, r)| grant_from_row(b, l, r)).transpose()
        })
        .await
    }

    async fn list_grants(&self, member_id: Option<&str>, workspace: Option<&str>) -> Result<Vec<Grant>, StoreError> {
        let (m, w) = (member_id.map(str::to_owned), workspace.map(str::to_owned));
        SqliteStore::with(&self.reader, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT body, last_used_at, revoked_at FROM oauth_grants
                     WHERE (?1 IS NULL OR member_id = ?1) AND (?2 IS NULL OR workspace = ?2)
                     ORDER BY created_at DESC, rowid DESC LIMIT ?3",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![m, w, MAX_LISTED as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (b, l, r) = row.map_err(sql_err)?;
                out.push(grant_from_row(b, l, r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn revoke_grant(&self, id: &str, at: i64) -> Result<Option<Grant>, StoreError> {
        let id = id.to_owned();
        SqliteStore::with(&self.writer, move |c| {
            c.execute(
                "UPDATE oauth_grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, at],
            )
            .map_err(sql_err)?;
            let row = c
                .query_row(
                    "SELECT body, last_used_at, revoked_at FROM oauth_grants WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(sql_err)?;
            row.map(|(b, l, r)| grant_from_row(b, l, r)).transpose()
        })
        .await
    }

    async fn touch_grant(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        SqliteStore::with(&self.writer, move |c| {
            c.execute(
                "UPDATE oauth_grants SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![id, at],
            )
            .map(drop)
            .map_err(sql_err)
        })
        .await
    }

    async fn add_grant_token(&self, id: &str, token_id: &str) -> Result<(), StoreError> {
        let (id, token_id) = (id.to_owned(), token_id.to_owned());
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            tx.execute(
                "INSERT INTO oauth_grant_tokens (grant_id, token_id) VALUES (?1, ?2)",
                params![id, token_id],
            )
            .map_err(sql_err)?;
            tx.execute(
                "DELETE FROM oauth_grant_tokens WHERE grant_id = ?1 AND seq NOT IN
                   (SELECT seq FROM oauth_grant_tokens WHERE grant_id = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![id, MAX_TOKENS_PER_GRANT as i64],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn grant_tokens(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_owned();
        SqliteStore::with(&self.reader, move |c| {
            let mut stmt = c
                .prepare_cached("SELECT token_id FROM oauth_grant_tokens WHERE grant_id = ?1 ORDER BY seq DESC")
                .map_err(sql_err)?;
            let rows = stmt.query_map([id], |r| r.get::<_, String>(0)).map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
        .await
    }

    async fn put_secret(&self, hash: &TokenHash, s: &Secret) -> Result<(), StoreError> {
        let (hash, s) = (*hash, s.clone());
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            // Only live secrets are kept: the table stays bounded by what
            // is valid now.
            tx.execute("DELETE FROM oauth_secrets WHERE expires_at <= strftime('%s','now')", [])
                .map_err(sql_err)?;
            tx.execute(
                "INSERT INTO oauth_secrets (hash, kind, grant_id, payload, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&hash[..], s.kind.as_str(), s.grant_id, s.payload, s.expires_at],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn consume_secret(&self, hash: &TokenHash, now: i64) -> Result<Consumed, StoreError> {
        let hash = *hash;
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            let row = tx
                .query_row(
                    "SELECT kind, grant_id, payload, expires_at, used_at FROM oauth_secrets WHERE hash = ?1",
                    [&hash[..]],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(sql_err)?;
            let Some((kind, grant_id, payload, expires_at, used_at)) = row else {
                return Ok(Consumed::Unknown);
            };
            let Some(kind) = SecretKind::parse(&kind) else {
                return Ok(Consumed::Unknown);
            };
            if expires_at <= now {
                return Ok(Consumed::Unknown);
            }
            if used_at.is_some() {
                return Ok(Consumed::Reused { kind, grant_id });
            }
            tx.execute("UPDATE oauth_secrets SET used_at = ?2 WHERE hash = ?1", params![&hash[..], now])
                .map_err(sql_err)?;
            tx.commit().map_err(sql_err)?;
            Ok(Consumed::Fresh(Secret {
                kind,
                grant_id,
                payload,
                expires_at,
            }))
        })
        .await
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Spends a secret: `{}` unknown, `{'reused', kind, grant}` or
/// `{'fresh', kind, grant, payload, expires_at}`. A script, so that two
/// instances presented the same code at once cannot both see it fresh.
const CONSUME: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'kind', 'grant_id', 'payload', 'expires_at', 'used')
if not f[1] then return {} end
if tonumber(f[4]) <= tonumber(ARGV[1]) then return {} end
if f[5] == '1' then return {'reused', f[1], f[2]} end
redis.call('HSET', KEYS[1], 'used', '1')
return {'fresh', f[1], f[2], f[3], f[4]}
"#;

impl RedisStore {
    async fn grants_by_ids(&self, ids: Vec<String>) -> Result<Vec<Grant>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let f: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.keys.grant(&id))
                .arg("body")
                .arg("last_used_at")
                .arg("revoked_at")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if let Some(Some(body)) = f.first() {
                let num = |i: usize| f.get(i).cloned().flatten().and_then(|v| v.parse().ok());
                out.push(grant_from_row(body.clone(), num(1), num(2))?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl GrantStore for RedisStore {
    async fn create_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let body = serde_json::to_string(g).map_err(json_err)?;
        redis::pipe()
            .atomic()
            .hset(self.keys.grant(&g.id), "body", body)
            .zadd(self.keys.grants_of_member(&g.member_id), &g.id, g.created_at)
            .zadd(self.keys.grants_of_workspace(&g.workspace), &g.id, g.created_at)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self.grants_by_ids(vec![id.to_owned()]).await?.pop())
    }

    async fn list_grants(&self, member_id: Option<&str>, workspace: Option<&str>) -> Result<Vec<Grant>, StoreError> {
        let mut conn = self.conn.clone();
        let key = match (member_id, workspace) {
            (Some(m), _) => self.keys.grants_of_member(m),
            (None, Some(w)) => self.keys.grants_of_workspace(w),
            (None, None) => return Ok(Vec::new()),
        };
        let ids: Vec<String> = conn.zrevrange(key, 0, MAX_LISTED as isize - 1).await.map_err(redis_err)?;
        let mut grants = self.grants_by_ids(ids).await?;
        if let (Some(_), Some(w)) = (member_id, workspace) {
            grants.retain(|g| g.workspace == w);
        }
        Ok(grants)
    }

    async fn revoke_grant(&self, id: &str, at: i64) -> Result<Option<Grant>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.grant(id);
        let exists: bool = conn.hexists(&key, "body").await.map_err(redis_err)?;
        if !exists {
            return Ok(None);
        }
        let _: bool = conn.hset_nx(&key, "revoked_at", at).await.map_err(redis_err)?;
        self.get_grant(id).await
    }

    async fn touch_grant(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hset(self.keys.grant(id), "last_used_at", at).await.map_err(redis_err)?;
        Ok(())
    }

    async fn add_grant_token(&self, id: &str, token_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.grant_tokens(id);
        redis::pipe()
            .atomic()
            .lpush(&key, token_id)
            .ltrim(&key, 0, MAX_TOKENS_PER_GRANT as isize - 1)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn grant_tokens(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.lrange(self.keys.grant_tokens(id), 0, -1).await.map_err(redis_err)
    }

    async fn put_secret(&self, hash: &TokenHash, s: &Secret) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("portcullis:oauth-secret:{}", hex(hash));
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("kind", s.kind.as_str().to_owned()),
                    ("grant_id", s.grant_id.clone()),
                    ("payload", s.payload.clone()),
                    ("expires_at", s.expires_at.to_string()),
                ],
            )
            // Kept (marked used) until it expires, for reuse detection.
            .cmd("EXPIREAT")
            .arg(&key)
            .arg(s.expires_at)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn consume_secret(&self, hash: &TokenHash, now: i64) -> Result<Consumed, StoreError> {
        let mut conn = self.conn.clone();
        let r: Vec<String> = redis::Script::new(CONSUME)
            .key(format!("portcullis:oauth-secret:{}", hex(hash)))
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let kind = r.get(1).and_then(|k| SecretKind::parse(k));
        Ok(match (r.first().map(String::as_str), kind) {
            (Some("reused"), Some(kind)) => Consumed::Reused {
                kind,
                grant_id: r[2].clone(),
            },
            (Some("fresh"), Some(kind)) if r.len() == 5 => Consumed::Fresh(Secret {
                kind,
                grant_id: r[2].clone(),
                payload: r[3].clone(),
                expires_at: r[4].parse().unwrap_or(0),
            }),
            _ => Consumed::Unknown,
        })
    }
}
