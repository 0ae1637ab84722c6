//! [`MemberStore`] on Redis (cluster mode). Keys (`store::redis_keys`; on a
//! Redis Cluster the workspace is a hash tag, `portcullis:member:{acme}:…`,
//! so that a workspace's three keys share a slot):
//! - `portcullis:member:<ws>:<id>`: a hash of the member's fields;
//! - `portcullis:member_email:<ws>:<email>`: the member's id (uniqueness);
//! - `portcullis:members:<ws>`: the workspace's member ids, scored by
//!   creation time (listing, and the per-workspace bound);
//! - `portcullis:signin:{sha256 hex}`: a sign-in link, with a TTL;
//! - `portcullis:msession:{sha256 hex}`: a member session, with a TTL.
//!
//! Every multi-key change is one Lua script, so it is atomic. A removed
//! member's sessions are not listed: every request re-reads the member,
//! so they end at once anyway, and their keys expire on their own.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::StoreError;
use super::members::{LinkRecord, LinkState, MAX_MEMBERS_PER_WORKSPACE, MemberRecord, MemberSessionRecord, MemberStore, Role, SecretHash};
use super::redis::RedisStore;

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn link_key(h: &SecretHash) -> String {
    format!("portcullis:signin:{}", hex(h))
}
fn session_key(h: &SecretHash) -> String {
    format!("portcullis:msession:{}", hex(h))
}

/// Used links are remembered this long after their end, to say "used" or
/// "expired" rather than "unknown".
const LINK_KEPT_SECS: i64 = 7 * 24 * 3600;

fn member_of(f: &HashMap<String, String>) -> Option<MemberRecord> {
    Some(MemberRecord {
        id: f.get("id")?.clone(),
        workspace: f.get("workspace")?.clone(),
        email: f.get("email")?.clone(),
        name: f.get("name").filter(|n| !n.is_empty()).cloned(),
        role: Role::parse(f.get("role")?)?,
        created_at: f.get("created_at")?.parse().ok()?,
    })
}

const INSERT: &str = r#"
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then return -1 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX') == false then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'workspace', ARGV[2], 'email', ARGV[3], 'name', ARGV[4], 'role', ARGV[5], 'created_at', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
return 1
"#;

const DELETE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"#;

/// Returns {state} or {'valid', ws, member_id, created_at, expires_at}.
const CONSUME: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'workspace', 'member_id', 'created_at', 'expires_at', 'used_at')
if not f[1] then return {'unknown'} end
if f[5] then return {'used'} end
if tonumber(f[4]) <= tonumber(ARGV[1]) then return {'expired'} end
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'used_at', ARGV[1]) end
return {'valid', f[1], f[2], f[3], f[4]}
"#;

const TOUCH: &str = r#"
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0')
if exp == 0 then return 0 end
local now = tonumber(ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'last_seen_at') or '0') < now then
  redis.call('HSET', KEYS[1], 'last_seen_at', now)
end
redis.call('EXPIRE', KEYS[1], math.max(1, math.min(exp - now, tonumber(ARGV[2]))))
return 1
"#;

impl RedisStore {
    async fn link(&self, h: &SecretHash, now: i64, consume: bool) -> Result<LinkState, StoreError> {
        let mut conn = self.conn.clone();
        let r: Vec<String> = redis::Script::new(CONSUME)
            .key(link_key(h))
            .arg(now)
            .arg(if consume { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(match r.first().map(String::as_str) {
            Some("valid") if r.len() == 5 => LinkState::Valid(LinkRecord {
                workspace: r[1].clone(),
                member_id: r[2].clone(),
                created_at: r[3].parse().unwrap_or_default(),
                expires_at: r[4].parse().unwrap_or_default(),
            }),
            Some("used") => LinkState::Used,
            Some("expired") => LinkState::Expired,
            _ => LinkState::Unknown,
        })
    }
}

#[async_trait]
impl MemberStore for RedisStore {
    async fn insert_member(&self, m: &MemberRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let r: i64 = redis::Script::new(INSERT)
            .key(self.keys.member(&m.workspace, &m.id))
            .key(self.keys.member_email(&m.workspace, &m.email))
            .key(self.keys.members(&m.workspace))
            .arg(&m.id)
            .arg(&m.workspace)
            .arg(&m.email)
            .arg(m.name.as_deref().unwrap_or(""))
            .arg(m.role.as_str())
            .arg(m.created_at)
            .arg(MAX_MEMBERS_PER_WORKSPACE)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        match r {
            1 => Ok(()),
            0 => Err(StoreError::Conflict("a member with this email".into())),
            _ => Err(StoreError::Conflict("the workspace has the most members allowed".into())),
        }
    }

    async fn get_member(&self, workspace: &str, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let f: HashMap<String, String> = conn.hgetall(self.keys.member(workspace, id)).await.map_err(redis_err)?;
        Ok(member_of(&f))
    }

    async fn member_by_email(&self, workspace: &str, email: &str) -> Result<Option<MemberRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = conn.get(self.keys.member_email(workspace, email)).await.map_err(redis_err)?;
        match id {
            Some(id) => self.get_member(workspace, &id).await,
            None => Ok(None),
        }
    }

    async fn list_members(&self, workspace: &str) -> Result<Vec<MemberRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(self.keys.members(workspace), 0, MAX_MEMBERS_PER_WORKSPACE as isize - 1)
            .await
            .map_err(redis_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.get_member(workspace, &id).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn delete_member(&self, workspace: &str, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        let Some(m) = self.get_member(workspace, id).await? else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let r: i64 = redis::Script::new(DELETE)
            .key(self.keys.member(workspace, id))
            .key(self.keys.member_email(workspace, &m.email))
            .key(self.keys.members(workspace))
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok((r == 1).then_some(m))
    }

    async fn create_link(&self, h: &SecretHash, l: &LinkRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = link_key(h);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("workspace", l.workspace.clone()),
                    ("member_id", l.member_id.clone()),
                    ("created_at", l.created_at.to_string()),
                    ("expires_at", l.expires_at.to_string()),
                ],
            )
            .expire(&key, (l.expires_at - l.created_at).max(1) + LINK_KEPT_SECS)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn peek_link(&self, h: &SecretHash, now: i64) -> Result<LinkState, StoreError> {
        self.link(h, now, false).await
    }

    async fn consume_link(&self, h: &SecretHash, now: i64) -> Result<LinkState, StoreError> {
        self.link(h, now, true).await
    }

    async fn create_member_session(&self, id: &SecretHash, s: &MemberSessionRecord, idle_secs: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = session_key(id);
        let ttl = (s.expires_at - s.created_at).min(idle_secs).max(1);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("workspace", s.workspace.clone()),
                    ("member_id", s.member_id.clone()),
                    ("created_at", s.created_at.to_string()),
                    ("last_seen_at", s.last_seen_at.to_string()),
                    ("expires_at", s.expires_at.to_string()),
                ],
            )
            .expire(&key, ttl)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn get_member_session(&self, id: &SecretHash) -> Result<Option<MemberSessionRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let f: HashMap<String, String> = conn.hgetall(session_key(id)).await.map_err(redis_err)?;
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok((|| {
            Some(MemberSessionRecord {
                workspace: f.get("workspace")?.clone(),
                member_id: f.get("member_id")?.clone(),
                created_at: num("created_at")?,
                last_seen_at: num("last_seen_at")?,
                expires_at: num("expires_at")?,
            })
        })())
    }

    async fn touch_member_session(&self, id: &SecretHash, now: i64, idle_secs: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::Script::new(TOUCH)
            .key(session_key(id))
            .arg(now)
            .arg(idle_secs)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(redis_err)
    }

    async fn delete_member_session(&self, id: &SecretHash) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(session_key(id)).await.map_err(redis_err)?;
        Ok(())
    }
}
