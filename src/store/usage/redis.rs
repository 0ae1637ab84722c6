//! Usage buckets in Redis: one hash per workspace and bucket,
//! `portcullis:usage:<m|h>:<workspace>:<start>` (on a Redis Cluster
//! `portcullis:{u}:usage:…`: one flush is one MULTI over many buckets, which
//! must share a slot; `store::redis_keys`), with three fields per key,
//! `r`, `e` and `l` (requests, errors, rate limited) followed by the key as
//! a JSON array `[token, member, server, tool]` (unambiguous whatever a
//! member id holds). Every instance `HINCRBY`s the same fields, so
//! instances add up; `EXPIREAT` (bucket start + retention) prunes.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{Counts, Increment, Retention, StoreError, UsageKey, UsageQuery, UsageRow, UsageStore, grouped};
use crate::store::redis::RedisStore;

/// Most keys one query reads (a query wider than the retention reads
/// nothing older anyway; this bounds a misconfigured retention).
const MAX_KEYS_PER_QUERY: i64 = 100_000;
/// Commands per pipeline round trip.
const CHUNK: usize = 500;

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn field_key(k: &UsageKey) -> String {
    serde_json::to_string(&[&k.token_id, &k.member_id, &k.server, &k.tool]).expect("strings serialize")
}

#[async_trait]
impl UsageStore for RedisStore {
    async fn add_usage(&self, batch: &[Increment], retention: Retention) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One MULTI/EXEC: a failed flush added nothing and is retried whole.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for i in batch {
            let field = field_key(&i.key);
            for (kind, width, keep) in [('m', 60, retention.minute), ('h', 3600, retention.hour)] {
                let start = i.minute.div_euclid(width) * width;
                let key = self.keys.usage_bucket(kind, &i.key.workspace, start);
                for (prefix, n) in [('r', i.counts.requests), ('e', i.counts.errors), ('l', i.counts.rate_limited)] {
                    if n > 0 {
                        pipe.hincr(&key, format!("{prefix}{field}"), n).ignore();
                    }
                }
                pipe.cmd("EXPIREAT").arg(&key).arg(start + width + keep).ignore();
            }
        }
        let () = pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    async fn query_usage(&self, q: &UsageQuery<'_>) -> Result<Vec<UsageRow>, StoreError> {
        let stored = q.bucket.stored_seconds();
        let kind = if stored == 60 { 'm' } else { 'h' };
        let from = q.aligned_from();
        let n = ((q.to - from + stored - 1) / stored).clamp(0, MAX_KEYS_PER_QUERY);
        let starts: Vec<i64> = (0..n).map(|i| from + i * stored).filter(|s| *s < q.to).collect();
        let width = q.bucket.seconds();
        let mut map: BTreeMap<(i64, String), Counts> = BTreeMap::new();
        let mut conn = self.conn.clone();
        for chunk in starts.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for &s in chunk {
                pipe.hgetall(self.keys.usage_bucket(kind, q.workspace, s));
            }
            let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
            for (&s, fields) in chunk.iter().zip(hashes) {
                for (field, n) in fields {
                    let (prefix, json) = field.split_at(field.char_indices().nth(1).map_or(field.len(), |(i, _)| i));
                    let Ok([token_id, member_id, server, tool]) = serde_json::from_str::<[String; 4]>(json) else {
                        continue;
                    };
                    let key = UsageKey {
                        workspace: String::new(),
                        token_id,
                        member_id,
                        server,
                        tool,
                    };
                    let value = q.group_by.of(&key).to_owned();
                    let c = map.entry((s.div_euclid(width) * width, value)).or_default();
                    match prefix {
                        "r" => c.requests += n,
                        "e" => c.errors += n,
                        "l" => c.rate_limited += n,
                        _ => {}
                    }
                }
            }
        }
        Ok(grouped(map))
    }

    async fn prune_usage(&self, _now: i64, _retention: Retention) -> Result<u64, StoreError> {
        // Every bucket carries its own EXPIREAT.
        Ok(0)
    }
}
