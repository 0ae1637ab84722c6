//! Usage buckets in SQLite: `usage_minute` and `usage_hour`, one row per
//! bucket and key, created by [`migrate`] (its own `IF NOT EXISTS` tables,
//! so it needs no slot in the token schema's numbered migrations and an
//! older binary simply ignores them).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Counts, Increment, Retention, StoreError, UsageQuery, UsageRow, UsageStore, grouped};
use crate::store::sqlite::SqliteStore;

const TABLES: [&str; 2] = ["usage_minute", "usage_hour"];

/// Creates the usage tables if they are missing.
pub(in crate::store) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for t in TABLES {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                workspace TEXT NOT NULL,
                start INTEGER NOT NULL,
                token_id TEXT NOT NULL,
                member_id TEXT NOT NULL,
                server TEXT NOT NULL,
                tool TEXT NOT NULL,
                requests INTEGER NOT NULL,
                errors INTEGER NOT NULL,
                rate_limited INTEGER NOT NULL,
                PRIMARY KEY (workspace, start, token_id, member_id, server, tool)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS {t}_by_start ON {t} (start);"
        ))
        .map_err(unavailable)?;
    }
    Ok(())
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn add_usage(&self, batch: &[Increment], _retention: Retention) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        Self::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            for (table, width) in [(TABLES[0], 60), (TABLES[1], 3600)] {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (workspace, start, token_id, member_id, server, tool, requests, errors, rate_limited)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (workspace, start, token_id, member_id, server, tool) DO UPDATE SET
                           requests = requests + excluded.requests,
                           errors = errors + excluded.errors,
                           rate_limited = rate_limited + excluded.rate_limited"
                    ))
                    .map_err(unavailable)?;
                for i in &batch {
                    let k = &i.key;
                    stmt.execute(params![
                        k.workspace,
                        i.minute.div_euclid(width) * width,
                        k.token_id,
                        k.member_id,
                        k.server,
                        k.tool,
                        i.counts.requests as i64,
                        i.counts.errors as i64,
                        i.counts.rate_limited as i64,
                    ])
                    .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn query_usage(&self, q: &UsageQuery<'_>) -> Result<Vec<UsageRow>, StoreError> {
        let table = if q.bucket.stored_seconds() == 60 { TABLES[0] } else { TABLES[1] };
        // The column comes from a fixed enum, never from the request.
        let column = match q.group_by {
            super::GroupBy::Token => "token_id",
            super::GroupBy::Member => "member_id",
            super::GroupBy::Server => "server",
            super::GroupBy::Tool => "tool",
        };
        let (ws, from, to, width) = (q.workspace.to_owned(), q.aligned_from(), q.to, q.bucket.seconds());
        Self::with(&self.reader, move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT (start / ?4) * ?4, {column}, SUM(requests), SUM(errors), SUM(rate_limited) FROM {table}
                     WHERE workspace = ?1 AND start >= ?2 AND start < ?3 GROUP BY 1, 2"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![ws, from, to, width], |r| {
                    Ok((
                        (r.get::<_, i64>(0)?, r.get::<_, String>(1)?),
                        Counts {
                            requests: r.get::<_, i64>(2)? as u64,
                            errors: r.get::<_, i64>(3)? as u64,
                            rate_limited: r.get::<_, i64>(4)? as u64,
                        },
                    ))
                })
                .map_err(unavailable)?;
            let mut map = BTreeMap::new();
            for row in rows {
                let (k, v) = row.map_err(unavailable)?;
                map.insert(k, v);
            }
            Ok(grouped(map))
        })
        .await
    }

    async fn prune_usage(&self, now: i64, retention: Retention) -> Result<u64, StoreError> {
        Self::with(&self.writer, move |c| {
            let minutes = c
                .execute("DELETE FROM usage_minute WHERE start < ?1", [now - retention.minute])
                .map_err(unavailable)?;
            let hours = c
                .execute("DELETE FROM usage_hour WHERE start < ?1", [now - retention.hour])
                .map_err(unavailable)?;
            Ok((minutes + hours) as u64)
        })
        .await
    }
}
