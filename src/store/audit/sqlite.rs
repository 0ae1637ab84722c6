//! The audit trail in SQLite: one table, `audit_events`, appended to in
//! batches on the writer connection and read newest first on the reader.
//!
//! Its schema is created by its own migration (`migrate`, called once from
//! `SqliteStore::open`), separate from the token schema's numbered list, so
//! a store written before the audit trail existed simply gains the table.

use rusqlite::{Connection, Row, params};

use super::{AuditEvent, AuditPage, AuditQuery, AuditStore, EventType, Retention};
use crate::store::StoreError;
use crate::store::sqlite::{SqliteStore, unavailable};

/// `seq` orders events (append order) and is the cursor's position;
/// `(workspace, seq)` is indexed for a workspace's pages. `at_ms` is not
/// indexed: events are appended in (nearly) time order, so retention by age
/// walks `seq` from the oldest (see `prune`), and an index would cost every
/// insert a second B-tree write for a query run once a minute.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        type TEXT NOT NULL,
        actor TEXT,
        workspace TEXT,
        token_id TEXT,
        token_name TEXT,
        member_id TEXT,
        server TEXT,
        tool TEXT,
        method TEXT,
        status INTEGER,
        duration_us INTEGER,
        request_id TEXT
    );
    CREATE INDEX IF NOT EXISTS audit_by_workspace ON audit_events (workspace, seq);";

const COLUMNS: &str =
    "seq, at_ms, type, actor, workspace, token_id, token_name, member_id, server, tool, method, status, duration_us, request_id";

pub(in crate::store) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(unavailable)
}

/// `None` for a type this binary does not know (written by a newer one):
/// such a row is left out of the page rather than failing it.
fn event_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, Option<AuditEvent>)> {
    let seq: i64 = r.get(0)?;
    let kind: String = r.get(2)?;
    let Some(kind) = EventType::parse(&kind) else {
        return Ok((seq, None));
    };
    Ok((
        seq,
        Some(AuditEvent {
            id: format!("evt_{seq}"),
            at: r.get(1)?,
            kind,
            actor: r.get(3)?,
            workspace: r.get(4)?,
            token_id: r.get(5)?,
            token_name: r.get(6)?,
            member_id: r.get(7)?,
            server: r.get(8)?,
            tool: r.get(9)?,
            method: r.get(10)?,
            status: r.get::<_, Option<i64>>(11)?.map(|s| s as u16),
            duration_ms: r.get::<_, Option<i64>>(12)?.map(|us| us as f64 / 1000.0),
            request_id: r.get(13)?,
        }),
    ))
}

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, mut events: Vec<AuditEvent>, _max_events: u64) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(events);
        }
        SqliteStore::with(&self.writer, move |c| {
            // One transaction per batch: one fsync for the lot.
            let tx = c.transaction().map_err(unavailable)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO audit_events (at_ms, type, actor, workspace, token_id, token_name, member_id, server, tool, method, status, duration_us, request_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )
                    .map_err(unavailable)?;
                for e in &mut events {
                    stmt.execute(params![
                        e.at,
                        e.kind.as_str(),
                        e.actor,
                        e.workspace,
                        e.token_id,
                        e.token_name,
                        e.member_id,
                        e.server,
                        e.tool,
                        e.method,
                        e.status,
                        e.duration_ms.map(|ms| (ms * 1000.0).round() as i64),
                        e.request_id,
                    ])
                    .map_err(unavailable)?;
                    e.id = format!("evt_{}", tx.last_insert_rowid());
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(events)
        })
        .await
    }

    async fn page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let before: i64 = match query.position()? {
            None => i64::MAX,
            Some(p) => p.parse().map_err(|_| StoreError::InvalidCursor)?,
        };
        let q = query.clone();
        let limit = q.page_size as i64 + 1;
        SqliteStore::with(&self.reader, move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM audit_events
                     WHERE (?1 IS NULL OR workspace = ?1) AND seq < ?2
                       AND (?3 IS NULL OR at_ms >= ?3) AND (?4 IS NULL OR at_ms <= ?4)
                       AND (?5 IS NULL OR type = ?5) AND (?6 IS NULL OR token_id = ?6)
                       AND (?7 IS NULL OR member_id = ?7)
                     ORDER BY seq DESC LIMIT ?8"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![
                        q.workspace,
                        before,
                        q.from,
                        q.to,
                        q.kind.map(EventType::as_str),
                        q.token_id,
                        q.member_id,
                        limit
                    ],
                    event_from_row,
                )
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            // The cursor follows the rows read, skipped ones included.
            let more = rows.len() > q.page_size;
            let next_cursor = match rows.get(q.page_size.wrapping_sub(1)) {
                Some((seq, _)) if more => Some(q.cursor_at(&seq.to_string())),
                _ => None,
            };
            let events = rows.into_iter().take(q.page_size).filter_map(|(_, e)| e).collect();
            Ok(AuditPage { events, next_cursor })
        })
        .await
    }

    async fn prune(&self, retention: Retention, _workspaces: &[String]) -> Result<u64, StoreError> {
        SqliteStore::with(&self.writer, move |c| {
            let mut deleted = 0;
            if let Some(before) = retention.before {
                // Everything before the oldest event that is recent enough,
                // found from the oldest end: the walk reads only the rows it
                // then deletes. An event written a moment out of time order
                // may outlive its age by one prune.
                deleted += c
                    .execute(
                        "DELETE FROM audit_events WHERE seq < COALESCE(
                             (SELECT seq FROM audit_events WHERE at_ms >= ?1 ORDER BY seq LIMIT 1),
                             (SELECT MAX(seq) + 1 FROM audit_events))",
                        [before],
                    )
                    .map_err(unavailable)?;
            }
            if retention.max_events > 0 {
                deleted += c
                    .execute(
                        "DELETE FROM audit_events WHERE seq <= (SELECT seq FROM audit_events ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                        [i64::try_from(retention.max_events).unwrap_or(i64::MAX)],
                    )
                    .map_err(unavailable)?;
            }
            Ok(deleted as u64)
        })
        .await
    }
}
