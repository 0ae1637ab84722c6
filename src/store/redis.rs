//! Shared Redis store for cluster mode, on one primary, a Sentinel group or
//! a Redis Cluster (`store::redis_url`, `store::redis_conn`).
//!
//! Layout (names in `store::redis_keys`; on a Redis Cluster every key of the
//! token store carries the hash tag `{t}`, e.g. `portcullis:{t}:token:…`):
//! - `token:{id}`: hash of the record's fields, plus `hash` (hex) and `seq`;
//! - `hash:{hex}`: the id of the token with that SHA-256;
//! - `tokens:seq`: counter giving every token a creation sequence number;
//! - `list:{kind}:{workspace}` and `list:{kind}:*`: sorted sets of ids scored
//!   by creation sequence, for newest-first pagination without `KEYS`/`SCAN`;
//! - `revocations`: a capped stream, one entry `{seq}-1 h=<hex>` per
//!   revocation; `revocations:seq` holds the latest `seq`;
//! - `revocations:acks`: hash of revocation `seq` -> acknowledgements still
//!   awaited (the push's receivers, counted down by each instance once it has
//!   applied the revocation); each revocation drops the entry `ACKS_KEPT`
//!   revocations older, so the hash stays bounded whatever instances die;
//! - channel `portcullis:invalidate`: `"r:{seq}:{hex}"` published with each
//!   revocation, and `"d:{seq}"` once the last acknowledgement is in. Every
//!   instance receives both: 2 messages per instance per revocation. (Each
//!   instance used to publish its own acknowledgement to all: N² messages
//!   per revocation, which benches/fleet.rs measured at 100 instances.)
//! - `portcullis:instances`: sorted set of live instance ids by last heartbeat.
//!
//! Every multi-key update is one Lua script, so it is atomic, and the
//! revocation, its log entry and its publication happen together. Every
//! script names all the keys it touches in `KEYS` (none builds a key name
//! at run time), and those keys share one hash slot, which is what a Redis
//! Cluster requires: the token store is a single slot, so its revocation
//! log stays one totally ordered log. Reads go to the primary only (never
//! a replica: a lagging replica could resurrect a revoked token).
//!
//! Durability: an acknowledged revocation survives a Redis restart only with
//! AOF on (`appendonly yes`; `appendfsync always` for no loss at all,
//! `everysec` may lose the last second), and survives the loss of the
//! primary (failover) only if `store.wait_replicas` replicas had it before
//! the revoke returned (`WAIT`, run with the revoke script on the same
//! connection). See docs/redis.md.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{Stream, StreamExt};
use redis::{AsyncCommands, Script, Value};

pub use super::redis_conn::RedisConn;
use super::redis_keys::Layout;
use super::redis_url::RedisTarget;
use super::{ListFilter, Page, Pushed, Revocation, Revoked, StoreError, TokenStore};
use crate::token::{TokenHash, TokenKind, TokenRecord};

const PREFIX: &str = "portcullis:";
/// Revocation log length kept (approximately); an instance disconnected for
/// longer than it takes to revoke this many tokens flushes its whole index.
const LOG_MAXLEN: u64 = 100_000;
/// Revocations whose acknowledgement counter is kept. A revoke call waits
/// at most `propagation_wait` (well under a second) for its counter; by the
/// time this many later revocations have been made it has long stopped.
const ACKS_KEPT: u64 = 1024;

const INSERT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1])
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], seq, ARGV[1]) end
return seq
"#;

const REVOKE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local newly = 0
local receivers = -1
local revseq = 0
if not redis.call('HGET', KEYS[1], 'revoked_at') then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
  local seq = redis.call('INCR', KEYS[2])
  local h = redis.call('HGET', KEYS[1], 'hash')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], seq .. '-1', 'h', h)
  receivers = redis.call('PUBLISH', ARGV[2], 'r:' .. seq .. ':' .. h)
  if receivers > 0 then redis.call('HSET', KEYS[4], seq, receivers) end
  redis.call('HDEL', KEYS[4], seq - tonumber(ARGV[4]))
  revseq = seq
  newly = 1
end
return {newly, redis.call('HGETALL', KEYS[1]), receivers, revseq}
"#;

/// One instance has applied revocation `ARGV[1]`: count it down, and tell
/// the channel when it was the last. A counter already gone (the revocation
/// is older than `ACKS_KEPT`, or the revoke call's wait is long over) is
/// left alone rather than created again.
const ACKNOWLEDGE: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[2], 'd:' .. ARGV[1])
end
return left
"#;

const REVOCATIONS_SINCE: &str = r#"
local after = tonumber(ARGV[1])
local latest = tonumber(redis.call('GET', KEYS[2]) or '0')
if latest <= after then return {} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then return {-1} end
local first_seq = tonumber(string.match(first[1][1], '^(%d+)'))
if first_seq > after + 1 then return {-1} end
local entries = redis.call('XRANGE', KEYS[1], '(' .. after .. '-1', '+', 'COUNT', tonumber(ARGV[2]))
local out = {}
for _, e in ipairs(entries) do
  out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
  out[#out + 1] = e[2][2]
end
return out
"#;

const LAST_USED: &str = r#"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local cur = tonumber(redis.call('HGET', KEYS[i], 'last_used_at') or '0')
    if tonumber(ARGV[i]) > cur then redis.call('HSET', KEYS[i], 'last_used_at', ARGV[i]) end
  end
end
return 1
"#;

struct Scripts {
    insert: Script,
    acknowledge: Script,
    revocations_since: Script,
    last_used: Script,
}

pub struct RedisStore {
    /// A single primary's client, for its pub/sub connection (the other
    /// modes subscribe through [`RedisConn::subscribe`]).
    client: Option<redis::Client>,
    pub(super) conn: RedisConn,
    /// Key names: plain on one primary, hash-tagged on a Cluster.
    pub(super) keys: Layout,
    timeout: Duration,
    /// Replicas that must have a revocation before revoke returns (`WAIT`).
    wait_replicas: u32,
    scripts: Scripts,
    /// This process's id in the instance registry.
    instance_id: String,
    /// Instances that heartbeated within the registry TTL (at least 1).
    live_instances: Arc<AtomicU32>,
}

/// One id per process, shared by every connection it opens, so that the
/// registry counts processes, not connections.
fn process_instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("OS random source");
        id.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// Sorted set of instance ids scored by their last heartbeat (Unix ms).
pub const INSTANCES_KEY: &str = "portcullis:instances";
/// An instance silent this long no longer counts as alive.
pub const INSTANCE_TTL_MS: u64 = 10_000;

/// Pushed revocations; the stream ends when the subscription drops.
pub type RevocationStream = Pin<Box<dyn Stream<Item = Pushed> + Send>>;

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Converts a script reply; a shape we did not expect is a store failure.
fn parse<T: redis::FromRedisValue>(v: Value) -> Result<T, StoreError> {
    redis::from_redis_value(v).map_err(|e| StoreError::Unavailable(format!("unexpected redis reply: {e}")))
}

fn key(k: &str) -> String {
    format!("{PREFIX}{k}")
}

/// What a `WAIT` that fell short means for the caller.
fn not_replicated(acked: i64, wanted: u32) -> StoreError {
    StoreError::Unavailable(format!(
        "the revocation reached {acked} of the {wanted} replicas store.wait_replicas asks for in time; it is applied on the primary, and retrying is safe"
    ))
}

fn hex(h: &TokenHash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<TokenHash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The channel revocations are published on.
pub fn channel() -> String {
    key("invalidate")
}

impl RedisStore {
    /// Connects to `url`; every command times out after `timeout`, so a hung
    /// Redis turns into a prompt failure (and a fail-closed answer) rather
    /// than a hung request.
    pub async fn connect(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let target = super::redis_url::parse(url).map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        let client = match &target {
            RedisTarget::Single(url) => {
                Some(redis::Client::open(url.as_str()).map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?)
            }
            _ => None,
        };
        let conn = RedisConn::connect(&target, timeout).await.map_err(unavailable)?;
        let keys = match target {
            RedisTarget::Cluster(_) => Layout::Tagged,
            _ => Layout::Plain,
        };
        Ok(RedisStore {
            client,
            conn,
            keys,
            timeout,
            wait_replicas: 0,
            scripts: Scripts {
                insert: Script::new(INSERT),
                acknowledge: Script::new(ACKNOWLEDGE),
                revocations_since: Script::new(REVOCATIONS_SINCE),
                last_used: Script::new(LAST_USED),
            },
            instance_id: process_instance_id().to_string(),
            live_instances: Arc::new(AtomicU32::new(1)),
        })
    }

    /// Makes every revoke wait until `n` replicas have it (`store.wait_replicas`).
    pub fn with_wait_replicas(mut self, n: u32) -> Self {
        self.wait_replicas = n;
        self
    }

    /// A multiplexed connection for other Redis users (the cluster limiter).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The live-instance count, shared with the cluster limiter.
    pub fn live_instances(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.live_instances)
    }

    /// Subscribes to pushed revocations on a dedicated connection.
    pub async fn subscribe(&self) -> Result<RevocationStream, StoreError> {
        let messages = match &self.client {
            Some(client) => {
                let mut pubsub = client.get_async_pubsub().await.map_err(unavailable)?;
                pubsub.subscribe(channel()).await.map_err(unavailable)?;
                Box::pin(pubsub.into_on_message())
            }
            None => self
                .conn
                .subscribe(&channel(), &self.keys.revocations(), self.timeout)
                .await
                .map_err(unavailable)?,
        };
        let stream = messages.filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            let mut parts = payload.splitn(3, ':');
            let (kind, seq) = (parts.next()?, parts.next()?.parse().ok()?);
            // `a:{seq}:{instance}`, one instance's acknowledgement in the
            // former design, is ignored: taken for "all applied" it would end
            // a wait early while older instances are still rolling out.
            match (kind, parts.next()) {
                ("r", Some(h)) => Some(Pushed::Revoked(Revocation { seq, hash: unhex(h)? })),
                ("d", None) => Some(Pushed::Applied { seq }),
                _ => None,
            }
        });
        Ok(Box::pin(stream))
    }
}

fn record_from_fields(fields: &HashMap<String, String>) -> Option<TokenRecord> {
    let s = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
    let n = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
    Some(TokenRecord {
        id: s("id")?,
        name: s("name").unwrap_or_default(),
        workspace: s("workspace"),
        kind: TokenKind::from_str_opt(&s("kind")?)?,
        hint: s("hint").unwrap_or_default(),
        member_id: s("member_id"),
        email: s("email"),
        created_at: n("created_at")?,
        created_by: s("created_by").unwrap_or_default(),
        expires_at: n("expires_at"),
        revoked_at: n("revoked_at"),
        last_used_at: n("last_used_at"),
        allowed_servers: s("allowed_servers").and_then(|v| serde_json::from_str(&v).ok()),
        requests_per_minute: n("requests_per_minute").map(|v| v as u32),
    })
}

/// A flat `[k, v, k, v…]` Redis reply as a map.
fn fields(v: Value) -> HashMap<String, String> {
    let items: Vec<String> = redis::from_redis_value(v).unwrap_or_default();
    items.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
}

#[async_trait]
impl TokenStore for RedisStore {
    fn grants(&self) -> Option<&dyn super::grants::GrantStore> {
        Some(self)
    }

    fn sessions(&self) -> Option<&dyn super::sessions::SessionStore> {
        Some(self)
    }

    fn members(&self) -> Option<&dyn super::members::MemberStore> {
        Some(self)
    }

    async fn insert(&self, r: &TokenRecord, hash: &TokenHash) -> Result<(), StoreError> {
        let h = hex(hash);
        let mut inv = self.scripts.insert.prepare_invoke();
        let k = self.keys;
        inv.key(k.token(&r.id)).key(k.hash(&h)).key(k.tokens_seq());
        inv.key(k.list(r.kind, None));
        if let Some(ws) = &r.workspace {
            inv.key(k.list(r.kind, Some(ws)));
        }
        inv.arg(&r.id);
        let mut field = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                inv.arg(k).arg(v);
            }
        };
        field("id", Some(r.id.clone()));
        field("name", Some(r.name.clone()));
        field("workspace", r.workspace.clone());
        field("kind", Some(r.kind.as_str().into()));
        field("hint", Some(r.hint.clone()));
        field("member_id", r.member_id.clone());
        field("email", r.email.clone());
        field("created_at", Some(r.created_at.to_string()));
        field("created_by", Some(r.created_by.clone()));
        field("expires_at", r.expires_at.map(|v| v.to_string()));
        field("revoked_at", r.revoked_at.map(|v| v.to_string()));
        field("last_used_at", r.last_used_at.map(|v| v.to_string()));
        field(
            "allowed_servers",
            r.allowed_servers.as_ref().map(|v| serde_json::to_string(v).expect("json")),
        );
        field("requests_per_minute", r.requests_per_minute.map(|v| v.to_string()));
        field("hash", Some(h));
        let seq: i64 = inv.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        if seq == 0 {
            return Err(StoreError::Conflict("a token with this id or hash already exists".into()));
        }
        Ok(())
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        // Two reads rather than a script that would build the record's key
        // from the id it reads (which a Cluster forbids). Records are never
        // deleted, so an id found in the index always has its record; the
        // check of its hash guards against a damaged index all the same.
        let h = hex(hash);
        let mut conn = self.conn.clone();
        let id: Option<String> = conn.get(self.keys.hash(&h)).await.map_err(unavailable)?;
        let Some(id) = id else { return Ok(None) };
        let f: HashMap<String, String> = conn.hgetall(self.keys.token(&id)).await.map_err(unavailable)?;
        if f.get("hash") != Some(&h) {
            return Ok(None);
        }
        Ok(record_from_fields(&f))
    }

    async fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let f: HashMap<String, String> = self.conn.clone().hgetall(self.keys.token(id)).await.map_err(unavailable)?;
        Ok(record_from_fields(&f))
    }

    async fn list(&self, filter: ListFilter<'_>, page_size: usize, cursor: Option<&str>) -> Result<Page, StoreError> {
        // The cursor is the id of the last row of the previous page (random:
        // it tells nothing about how many tokens there are), which must be a
        // token of the same listing; paging runs on its creation `seq`.
        let max = match cursor {
            None => "+inf".to_string(),
            Some(c) => {
                if !crate::token::is_valid_id(c) {
                    return Err(StoreError::InvalidCursor);
                }
                let f: HashMap<String, String> = self.conn.clone().hgetall(self.keys.token(c)).await.map_err(unavailable)?;
                let rec = record_from_fields(&f).ok_or(StoreError::InvalidCursor)?;
                if rec.kind != filter.kind || (filter.workspace.is_some() && rec.workspace.as_deref() != filter.workspace) {
                    return Err(StoreError::InvalidCursor);
                }
                let seq = f.get("seq").and_then(|v| v.parse::<u64>().ok()).ok_or(StoreError::InvalidCursor)?;
                format!("({seq}")
            }
        };
        // The ids, then their records in one pipelined round trip (same
        // slot on a Cluster); a record revoked in between shows revoked.
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.list(filter.kind, filter.workspace))
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(page_size + 1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut rows = Vec::new();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(self.keys.token(id));
            }
            let records: Vec<Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
            rows.extend(records.into_iter().filter_map(|v| record_from_fields(&fields(v))));
        }
        let more = rows.len() > page_size;
        rows.truncate(page_size);
        let next_cursor = if more { rows.last().map(|r| r.id.clone()) } else { None };
        Ok(Page { tokens: rows, next_cursor })
    }

    async fn revoke(&self, id: &str, at: i64) -> Result<Option<Revoked>, StoreError> {
        // EVAL (not EVALSHA) in a pipeline with the WAIT, so that the WAIT
        // runs on the very connection that wrote the revocation (it counts
        // the replicas that acknowledged that connection's writes).
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(REVOKE)
            .arg(4)
            .arg(self.keys.token(id))
            .arg(self.keys.revocations_seq())
            .arg(self.keys.revocations())
            .arg(self.keys.revocation_acks())
            .arg(at)
            .arg(channel())
            .arg(LOG_MAXLEN)
            .arg(ACKS_KEPT);
        if self.wait_replicas > 0 {
            pipe.cmd("WAIT").arg(self.wait_replicas).arg(self.timeout.as_millis() as u64);
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        if self.wait_replicas > 0 {
            let acked: i64 = parse(replies.pop().unwrap_or(Value::Nil))?;
            if acked < i64::from(self.wait_replicas) {
                return Err(not_replicated(acked, self.wait_replicas));
            }
        }
        let v = replies.pop().unwrap_or(Value::Nil);
        let items: Vec<Value> = parse(v)?;
        let Ok([newly, record, receivers, seq]) = <[Value; 4]>::try_from(items) else {
            return Ok(None);
        };
        let receivers: i64 = parse(receivers)?;
        let seq: u64 = parse(seq)?;
        let f = fields(record);
        let hash = f
            .get("hash")
            .and_then(|h| unhex(h))
            .ok_or_else(|| StoreError::Unavailable("token without hash in redis".into()))?;
        let record = record_from_fields(&f).ok_or_else(|| StoreError::Unavailable("unreadable token record in redis".into()))?;
        let newly: i64 = parse(newly)?;
        // PUBLISH counts the subscriptions that got the message; fewer than
        // the instances heartbeating means some instance relies on its poll.
        let live = self.live_instances.load(Ordering::Relaxed);
        let all_notified = newly != 1 || receivers >= i64::from(live);
        if !all_notified {
            tracing::warn!(
                receivers,
                live,
                "a revocation push reached fewer instances than are alive; waiting for their poll"
            );
        }
        Ok(Some(Revoked {
            record,
            hash,
            newly_revoked: newly == 1,
            all_notified,
            seq,
            receivers: receivers.max(0) as u64,
        }))
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        for chunk in batch.chunks(500) {
            let mut inv = self.scripts.last_used.prepare_invoke();
            for (id, _) in chunk {
                inv.key(self.keys.token(id));
            }
            for (_, ts) in chunk {
                inv.arg(*ts);
            }
            let _: i64 = inv.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn revocation_seq(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = self.conn.clone().get(self.keys.revocations_seq()).await.map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    async fn revocations_since(&self, after: u64, limit: usize) -> Result<Vec<Revocation>, StoreError> {
        let v: Vec<Value> = self
            .scripts
            .revocations_since
            .key(self.keys.revocations())
            .key(self.keys.revocations_seq())
            .arg(after)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if v.len() == 1 {
            return Err(StoreError::LogTruncated);
        }
        let mut out = Vec::with_capacity(v.len() / 2);
        for pair in v.chunks_exact(2) {
            let seq: u64 = parse(pair[0].clone())?;
            let h: String = parse(pair[1].clone())?;
            if let Some(hash) = unhex(&h) {
                out.push(Revocation { seq, hash });
            }
        }
        Ok(out)
    }

    /// `secret:session-bind`, set once by whichever instance asks first.
    async fn shared_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::Unavailable(format!("OS random source: {e}")))?;
        let k = key("secret:session-bind");
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("SET")
            .arg(&k)
            .arg(hex(&fresh))
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let v: Option<String> = conn.get(&k).await.map_err(unavailable)?;
        Ok(v.as_deref().and_then(unhex))
    }

    /// Every `hash:{hex}` key, by SCAN (a cursor over the keyspace, so
    /// Redis is never blocked): the filter of existing hashes at start. A
    /// token created afterwards on another instance is not in this
    /// instance's filter, and is still read (see `auth::miss_budget`).
    async fn all_hashes(&self) -> Result<Option<Vec<TokenHash>>, StoreError> {
        let prefix = self.keys.hash_prefix();
        let keys = self
            .conn
            .scan(&format!("{prefix}*"), &self.keys.tokens_seq())
            .await
            .map_err(unavailable)?;
        Ok(Some(keys.iter().filter_map(|k| k.strip_prefix(&prefix).and_then(unhex)).collect()))
    }

    fn audit(&self) -> Option<&dyn super::audit::AuditStore> {
        Some(self)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<Option<RevocationStream>, StoreError> {
        RedisStore::subscribe(self).await.map(Some)
    }

    async fn acknowledge(&self, seq: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .acknowledge
            .key(self.keys.revocation_acks())
            .arg(seq)
            .arg(channel())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (_, _, n): (i64, i64, u32) = redis::pipe()
            .atomic()
            .zadd(INSTANCES_KEY, &self.instance_id, now_ms)
            .zrembyscore(INSTANCES_KEY, 0, now_ms.saturating_sub(INSTANCE_TTL_MS))
            .zcard(INSTANCES_KEY)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        self.live_instances.store(n.max(1), Ordering::Relaxed);
        Ok(())
    }

    fn usage(&self) -> Option<&dyn super::usage::UsageStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let h = [0xab; 32];
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex("zz"), None);
    }
}
