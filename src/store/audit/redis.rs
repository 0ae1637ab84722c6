//! The audit trail in Redis: streams.
//!
//! - `portcullis:audit:all`: every event, for the global listing;
//! - `portcullis:audit:ws:<slug>`: a workspace's events, a copy under the
//!   same stream id.
//!
//! On a Redis Cluster both carry the hash tag `{a}` (`portcullis:{a}:audit:…`,
//! `store::redis_keys`), since one script writes both.
//!
//! One script appends a whole batch, every stream it writes passed in
//! `KEYS`: `XADD *` on the global stream gives
//! the id (Redis's clock, unique across every instance sharing this
//! Redis), and the workspace copy is added under that same id, which is
//! always valid since the global stream's ids only grow. Both streams are
//! capped with `MAXLEN ~ max_events` (cheap, whole stream nodes), and
//! the writer's prune, once a minute, trims exactly: `MAXLEN =` and, for
//! retention by age, `MINID =` (stream ids are Redis milliseconds, so
//! "older than" is judged by when the event was written, at most one
//! writer batch after it happened).
//!
//! Pages are `XREVRANGE` from the cursor's id (exclusive), filtered here;
//! a scan stops after [`SCAN_LIMIT`] events, returning what matched so far
//! with a cursor to go on from, so one request never walks a whole stream.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;

use super::{AuditEvent, AuditPage, AuditQuery, AuditStore, Retention};
use crate::store::StoreError;
use crate::store::redis::RedisStore;

/// Most events one page request reads before it answers.
pub const SCAN_LIMIT: usize = 5_000;
/// `at` is the instance's clock, stream ids Redis's: time bounds are
/// widened by this much on the stream and then applied exactly to `at`.
const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;

static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1]: the global stream; KEYS[1 + j]: event j's workspace stream
-- when ARGV[2j] is '1'. ARGV[1]: the cap; ARGV[2j + 1]: event j's JSON.
local maxlen = tonumber(ARGV[1])
local function add(key, id, e)
  if maxlen > 0 then
    return redis.call('XADD', key, 'MAXLEN', '~', maxlen, id, 'e', e)
  end
  return redis.call('XADD', key, id, 'e', e)
end
local ids = {}
for j = 1, (#ARGV - 1) / 2 do
  local e = ARGV[2 * j + 1]
  local id = add(KEYS[1], '*', e)
  if ARGV[2 * j] == '1' then add(KEYS[1 + j], id, e) end
  ids[#ids + 1] = id
end
return ids
"#,
    )
});

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

type Entry = (String, HashMap<String, String>);

#[async_trait::async_trait]
impl AuditStore for RedisStore {
    async fn append(&self, mut events: Vec<AuditEvent>, max_events: u64) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(events);
        }
        let all = self.keys.audit_all();
        let mut inv = APPEND.key(&all);
        // Pruning applies `max_events` too; the cap here keeps a stream
        // bounded between prunes.
        inv.arg(max_events);
        for e in &events {
            let json = serde_json::to_string(e).map_err(|e| StoreError::Unavailable(format!("audit event: {e}")))?;
            // An event of no workspace names the global stream again (the
            // script does not write it twice): KEYS stay one per event.
            match e.workspace.as_deref() {
                Some(ws) => inv.key(self.keys.audit_workspace(ws)).arg("1"),
                None => inv.key(&all).arg("0"),
            };
            inv.arg(json);
        }
        let mut conn = self.connection();
        let ids: Vec<String> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        for (e, id) in events.iter_mut().zip(ids) {
            e.id = format!("evt_{id}");
        }
        Ok(events)
    }

    async fn page(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        let key = match &q.workspace {
            Some(ws) => self.keys.audit_workspace(ws),
            None => self.keys.audit_all(),
        };
        let mut end = match (q.position()?, q.to) {
            (Some(pos), _) => {
                if !is_stream_id(&pos) {
                    return Err(StoreError::InvalidCursor);
                }
                format!("({pos}")
            }
            (None, Some(to)) => to.saturating_add(CLOCK_SLACK_MS).to_string(),
            (None, None) => "+".to_owned(),
        };
        let start = q
            .from
            .map_or_else(|| "-".to_owned(), |f| f.saturating_sub(CLOCK_SLACK_MS).max(0).to_string());
        let chunk = (q.page_size + 1).clamp(64, 1000);
        let mut conn = self.connection();
        let mut events = Vec::new();
        let mut scanned = 0;
        let mut next_cursor = None;
        'scan: loop {
            let entries: Vec<Entry> = redis::cmd("XREVRANGE")
                .arg(&key)
                .arg(&end)
                .arg(&start)
                .arg("COUNT")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let exhausted = entries.len() < chunk;
            for (id, fields) in entries {
                scanned += 1;
                end = format!("({id}");
                // An entry that does not decode is skipped, not fatal: one
                // bad entry must not hide the rest of the trail.
                if let Some(mut e) = fields.get("e").and_then(|j| serde_json::from_str::<AuditEvent>(j).ok()) {
                    e.id = format!("evt_{id}");
                    if q.matches(&e) {
                        if events.len() == q.page_size {
                            let last: &AuditEvent = events.last().expect("page_size > 0");
                            next_cursor = Some(q.cursor_at(last.id.trim_start_matches("evt_")));
                            break 'scan;
                        }
                        events.push(e);
                    }
                }
                if scanned >= SCAN_LIMIT {
                    next_cursor = Some(q.cursor_at(&id));
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(AuditPage { events, next_cursor })
    }

    async fn prune(&self, retention: Retention, workspaces: &[String]) -> Result<u64, StoreError> {
        let mut conn = self.connection();
        let keys = std::iter::once(self.keys.audit_all()).chain(workspaces.iter().map(|w| self.keys.audit_workspace(w)));
        let mut deleted = 0u64;
        for key in keys {
            if let Some(before) = retention.before {
                let n: u64 = redis::cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg("=")
                    .arg(before.max(0))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                deleted += n;
            }
            if retention.max_events > 0 {
                let n: u64 = redis::cmd("XTRIM")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("=")
                    .arg(retention.max_events)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                deleted += n;
            }
        }
        Ok(deleted)
    }
}

/// `ms-n`, both parts digits: the only cursor position this backend issues.
fn is_stream_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
    })
}
