//! Dashboard sessions (docs/dashboard.md): the [`SessionStore`] trait and
//! its SQLite and Redis implementations.
//!
//! A session is keyed by the SHA-256 of its random id, so a copy of the
//! store (a backup, a Redis dump) holds nothing a browser could present.
//! It keeps the admin token's id and hash, never the token: every request
//! made with the session re-checks that hash through the token index, so
//! revoking the admin token ends its sessions at once, on every instance.
//! Idle and absolute expiry are decided by the caller from the record (the
//! store only forgets what is long dead: expired rows are deleted at each
//! sign-in on SQLite, and Redis keys carry a TTL).

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::redis::RedisStore;
use super::sqlite::SqliteStore;
use crate::token::TokenHash;

/// SHA-256 of a session id.
pub type SessionHash = [u8; 32];

/// Sessions kept per admin token; signing in once more drops the oldest.
/// Bounds the table however often a script signs in.
pub const MAX_SESSIONS_PER_TOKEN: i64 = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub admin_token_id: String,
    pub admin_token_hash: TokenHash,
    /// Unix seconds.
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The absolute end (created_at + absolute timeout).
    pub expires_at: i64,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session; `idle` bounds how long it is kept unused.
    async fn create_session(&self, id: &SessionHash, record: &SessionRecord, idle: Duration) -> Result<(), StoreError>;
    async fn get_session(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError>;
    /// Records a use at `now` (never moves backwards).
    async fn touch_session(&self, id: &SessionHash, now: i64, idle: Duration) -> Result<(), StoreError>;
    /// Ends a session (sign-out, expiry, revoked admin token). Idempotent.
    async fn delete_session(&self, id: &SessionHash) -> Result<(), StoreError>;
}

/// The SQLite table, created by [`migrate`] from `SqliteStore::open`. A
/// function of its own (not a step of the numbered token migrations) so
/// that the session table can be added or dropped independently of them.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS dashboard_sessions (
    id_hash BLOB PRIMARY KEY,
    admin_token_id TEXT NOT NULL,
    admin_token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    idle_secs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dashboard_sessions_by_token ON dashboard_sessions (admin_token_id, created_at);";

pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(sql_err)
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, id: &SessionHash, r: &SessionRecord, idle: Duration) -> Result<(), StoreError> {
        let (id, r) = (*id, r.clone());
        let idle = idle.as_secs() as i64;
        SqliteStore::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            // Forget what is dead anyway, so the table holds live sessions only.
            tx.execute(
                "DELETE FROM dashboard_sessions WHERE expires_at <= ?1 OR last_seen_at + idle_secs <= ?1",
                [r.created_at],
            )
            .map_err(sql_err)?;
            tx.execute(
                "INSERT INTO dashboard_sessions (id_hash, admin_token_id, admin_token_hash, created_at, last_seen_at, expires_at, idle_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![&id[..], r.admin_token_id, &r.admin_token_hash[..], r.created_at, r.last_seen_at, r.expires_at, idle],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict("session id".into())
                }
                e => sql_err(e),
            })?;
            tx.execute(
                "DELETE FROM dashboard_sessions WHERE admin_token_id = ?1 AND id_hash NOT IN
                   (SELECT id_hash FROM dashboard_sessions WHERE admin_token_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2)",
                params![r.admin_token_id, MAX_SESSIONS_PER_TOKEN],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn get_session(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        let id = *id;
        SqliteStore::with(&self.reader, move |c| {
            c.query_row(
                "SELECT admin_token_id, admin_token_hash, created_at, last_seen_at, expires_at FROM dashboard_sessions WHERE id_hash = ?1",
                [&id[..]],
                |row| {
                    let hash: Vec<u8> = row.get(1)?;
                    Ok((row.get(0)?, hash, row.get(2)?, row.get(3)?, row.get(4)?))
                },
            )
            .optional()
            .map_err(sql_err)
            .map(|o| {
                o.and_then(|(admin_token_id, hash, created_at, last_seen_at, expires_at)| {
                    Some(SessionRecord {
                        admin_token_id,
                        admin_token_hash: <TokenHash>::try_from(hash.as_slice()).ok()?,
                        created_at,
                        last_seen_at,
                        expires_at,
                    })
                })
            })
        })
        .await
    }

    async fn touch_session(&self, id: &SessionHash, now: i64, _idle: Duration) -> Result<(), StoreError> {
        let id = *id;
        SqliteStore::with(&self.writer, move |c| {
            c.execute(
                "UPDATE dashboard_sessions SET last_seen_at = ?2 WHERE id_hash = ?1 AND last_seen_at < ?2",
                params![&id[..], now],
            )
            .map(drop)
            .map_err(sql_err)
        })
        .await
    }

    async fn delete_session(&self, id: &SessionHash) -> Result<(), StoreError> {
        let id = *id;
        SqliteStore::with(&self.writer, move |c| {
            c.execute("DELETE FROM dashboard_sessions WHERE id_hash = ?1", [&id[..]])
                .map(drop)
                .map_err(sql_err)
        })
        .await
    }
}

/// `portcullis:session:{hex}`: a hash of the record's fields, expiring after
/// the idle timeout or at the absolute end, whichever comes first.
fn redis_key(id: &SessionHash) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("portcullis:session:{hex}")
}

fn ttl_secs(now: i64, expires_at: i64, idle: Duration) -> i64 {
    (expires_at - now).min(idle.as_secs() as i64).max(1)
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, id: &SessionHash, r: &SessionRecord, idle: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = redis_key(id);
        let hash: String = r.admin_token_hash.iter().map(|b| format!("{b:02x}")).collect();
        let ttl = ttl_secs(r.created_at, r.expires_at, idle);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("admin_token_id", r.admin_token_id.clone()),
                    ("admin_token_hash", hash),
                    ("created_at", r.created_at.to_string()),
                    ("last_seen_at", r.last_seen_at.to_string()),
                    ("expires_at", r.expires_at.to_string()),
                ],
            )
            .expire(&key, ttl)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn get_session(&self, id: &SessionHash) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: std::collections::HashMap<String, String> = conn.hgetall(redis_key(id)).await.map_err(redis_err)?;
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
        let hash = fields.get("admin_token_hash").and_then(|h| {
            let mut out = [0u8; 32];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        });
        Ok((|| {
            Some(SessionRecord {
                admin_token_id: fields.get("admin_token_id")?.clone(),
                admin_token_hash: hash?,
                created_at: num("created_at")?,
                last_seen_at: num("last_seen_at")?,
                expires_at: num("expires_at")?,
            })
        })())
    }

    async fn touch_session(&self, id: &SessionHash, now: i64, idle: Duration) -> Result<(), StoreError> {
        // Only an existing session is touched (a concurrent sign-out wins),
        // and its TTL moves with the use.
        const TOUCH: &str = r#"
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0')
if exp == 0 then return 0 end
local now = tonumber(ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'last_seen_at') or '0') < now then
  redis.call('HSET', KEYS[1], 'last_seen_at', now)
end
local ttl = math.max(1, math.min(exp - now, tonumber(ARGV[2])))
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"#;
        let mut conn = self.conn.clone();
        redis::Script::new(TOUCH)
            .key(redis_key(id))
            .arg(now)
            .arg(idle.as_secs())
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(redis_err)
    }

    async fn delete_session(&self, id: &SessionHash) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(redis_key(id)).await.map_err(redis_err)?;
        Ok(())
    }
}
