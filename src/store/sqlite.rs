//! Embedded SQLite store: one file, WAL journal, `synchronous = FULL`.
//!
//! WAL lets readers proceed while a write commits; `synchronous = FULL` makes
//! a commit durable before it is acknowledged, so a crash or power cut right
//! after a revoke call returns cannot bring the token back.
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool. Two
//! connections: one for writes and one for reads, so a miss on the verify path
//! never queues behind a batch of `last_used_at` writes. Each sits in a
//! `std::sync::Mutex` because no `.await` happens while it is held.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{ListFilter, Page, Revocation, Revoked, StoreError, TokenStore};
use crate::token::{TokenHash, TokenKind, TokenRecord};

/// Ordered schema migrations; `schema_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: tokens and the revocation log.
    "CREATE TABLE tokens (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        hash BLOB NOT NULL UNIQUE,
        name TEXT NOT NULL,
        workspace TEXT,
        kind TEXT NOT NULL,
        hint TEXT NOT NULL,
        member_id TEXT,
        email TEXT,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used_at INTEGER,
        allowed_servers TEXT,
        requests_per_minute INTEGER
    );
    CREATE INDEX tokens_by_workspace ON tokens (kind, workspace, seq);
    CREATE TABLE revocations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        token_id TEXT NOT NULL,
        hash BLOB NOT NULL,
        revoked_at INTEGER NOT NULL
    );",
];

const COLUMNS: &str = "id, name, workspace, kind, hint, member_id, email, created_at, created_by, \
                       expires_at, revoked_at, last_used_at, allowed_servers, requests_per_minute";

pub struct SqliteStore {
    pub(in crate::store) writer: Arc<Mutex<Connection>>,
    pub(in crate::store) reader: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating file and directory if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        make_private(path).map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", path.display())))?;
        let writer = open_connection(path)?;
        migrate(&writer)?;
        super::sessions::migrate(&writer)?;
        super::audit::sqlite::migrate(&writer)?;
        super::usage::migrate_sqlite(&writer)?;
        super::members::migrate(&writer)?;
        let reader = open_connection(path)?;
        // The reader serves index misses only: the in-memory index is the
        // cache that matters, and the OS page cache already holds the file.
        // SQLite's default 2 MiB page cache would duplicate it; 512 KiB keeps
        // the B-tree's upper levels.
        reader.pragma_update(None, "cache_size", -512).map_err(unavailable)?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    pub(in crate::store) async fn with<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call; the connection itself is
            // still consistent (SQLite rolled the transaction back), so go on.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Creates the store's directory (and missing parents) readable by the
/// owner only: the database holds token hashes and emails. An existing
/// directory is left as it is (it may be shared on purpose).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Creates the database file 0600 before SQLite does (SQLite would use
/// the umask, typically 0644), and takes group and other access away from
/// an existing one and its `-wal` and `-shm` files. SQLite creates the
/// `-wal` and `-shm` files with the database file's own permissions.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path == Path::new(":memory:") {
            return Ok(());
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            if let Ok(meta) = std::fs::metadata(&p)
                && meta.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(meta.permissions().mode() & 0o700))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    // Another process (the offline CLI) may hold the write lock briefly.
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(unavailable)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(unavailable)?;
    let current: i64 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this binary understands ({}); upgrade portcullis",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.unchecked_transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [i as i64 + 1])
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

pub(in crate::store) fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let kind: String = r.get(3)?;
    let allowed: Option<String> = r.get(12)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        workspace: r.get(2)?,
        kind: TokenKind::from_str_opt(&kind).unwrap_or(TokenKind::Workspace),
        hint: r.get(4)?,
        member_id: r.get(5)?,
        email: r.get(6)?,
        created_at: r.get(7)?,
        created_by: r.get(8)?,
        expires_at: r.get(9)?,
        revoked_at: r.get(10)?,
        last_used_at: r.get(11)?,
        allowed_servers: allowed.and_then(|s| serde_json::from_str(&s).ok()),
        requests_per_minute: r.get::<_, Option<i64>>(13)?.map(|v| v as u32),
    })
}

#[async_trait]
impl TokenStore for SqliteStore {
    fn sessions(&self) -> Option<&dyn super::sessions::SessionStore> {
        Some(self)
    }

    fn members(&self) -> Option<&dyn super::members::MemberStore> {
        Some(self)
    }

    async fn insert(&self, record: &TokenRecord, hash: &TokenHash) -> Result<(), StoreError> {
        let r = record.clone();
        let hash = *hash;
        Self::with(&self.writer, move |c| {
            let allowed = r
                .allowed_servers
                .as_ref()
                .map(|v| serde_json::to_string(v).expect("strings serialize"));
            c.execute(
                &format!("INSERT INTO tokens (hash, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
                params![
                    &hash[..],
                    r.id,
                    r.name,
                    r.workspace,
                    r.kind.as_str(),
                    r.hint,
                    r.member_id,
                    r.email,
                    r.created_at,
                    r.created_by,
                    r.expires_at,
                    r.revoked_at,
                    r.last_used_at,
                    allowed,
                    r.requests_per_minute.map(i64::from),
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict("a token with this id or hash already exists".into())
                }
                e => unavailable(e),
            })?;
            Ok(())
        })
        .await
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let hash = *hash;
        Self::with(&self.reader, move |c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"))
                .and_then(|mut s| s.query_row([&hash[..]], record_from_row).optional())
                .map_err(unavailable)
        })
        .await
    }

    async fn all_hashes(&self) -> Result<Option<Vec<TokenHash>>, StoreError> {
        Self::with(&self.reader, |c| {
            let mut s = c.prepare("SELECT hash FROM tokens").map_err(unavailable)?;
            let rows = s.query_map([], |r| r.get::<_, Vec<u8>>(0)).map_err(unavailable)?;
            let mut out = Vec::new();
            for r in rows {
                if let Ok(h) = TokenHash::try_from(r.map_err(unavailable)?.as_slice()) {
                    out.push(h);
                }
            }
            Ok(Some(out))
        })
        .await
    }

    async fn shared_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::Unavailable(format!("OS random source: {e}")))?;
        Self::with(&self.writer, move |c| {
            // Created here rather than by a migration: it is the store's own
            // secret, not token data, and older binaries simply ignore it.
            c.execute_batch("CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
                .map_err(unavailable)?;
            c.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES ('session_bind', ?1)",
                [&fresh[..]],
            )
            .map_err(unavailable)?;
            let v: Vec<u8> = c
                .query_row("SELECT value FROM secrets WHERE name = 'session_bind'", [], |r| r.get(0))
                .map_err(unavailable)?;
            Ok(<[u8; 32]>::try_from(v.as_slice()).ok())
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        Self::with(&self.reader, move |c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))
                .and_then(|mut s| s.query_row([&id], record_from_row).optional())
                .map_err(unavailable)
        })
        .await
    }

    async fn list(&self, filter: ListFilter<'_>, page_size: usize, cursor: Option<&str>) -> Result<Page, StoreError> {
        // The cursor is the id of the last row of the previous page: random,
        // so it tells nothing about how many tokens there are, and it must
        // be a token of the same listing (kind and workspace). Paging runs
        // on that row's `seq`; rows are only ever appended with larger
        // `seq`, so paging stays correct while tokens are being created.
        let kind = filter.kind.as_str();
        let workspace = filter.workspace.map(str::to_owned);
        let cursor = cursor.map(str::to_owned);
        let limit = page_size as i64 + 1;
        Self::with(&self.reader, move |c| {
            let before: i64 = match cursor {
                None => i64::MAX,
                Some(id) => c
                    .prepare_cached("SELECT seq FROM tokens WHERE id = ?1 AND kind = ?2 AND (?3 IS NULL OR workspace = ?3)")
                    .and_then(|mut s| s.query_row(params![id, kind, workspace], |r| r.get::<_, i64>(0)).optional())
                    .map_err(unavailable)?
                    .ok_or(StoreError::InvalidCursor)?,
            };
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM tokens WHERE kind = ?1 AND (?2 IS NULL OR workspace = ?2) AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
                ))
                .map_err(unavailable)?;
            let mut tokens = stmt
                .query_map(params![kind, workspace, before, limit], record_from_row)
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let more = tokens.len() > page_size;
            tokens.truncate(page_size);
            let next_cursor = if more { tokens.last().map(|r| r.id.clone()) } else { None };
            Ok(Page { tokens, next_cursor })
        })
        .await
    }

    async fn revoke(&self, id: &str, at: i64) -> Result<Option<Revoked>, StoreError> {
        let id = id.to_owned();
        Self::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let changed = tx
                .execute(
                    "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
                .map_err(unavailable)?;
            let found = tx
                .query_row(&format!("SELECT {COLUMNS}, hash FROM tokens WHERE id = ?1"), [&id], |r| {
                    Ok((record_from_row(r)?, r.get::<_, Vec<u8>>(14)?))
                })
                .optional()
                .map_err(unavailable)?;
            let Some((record, hash)) = found else { return Ok(None) };
            let hash: TokenHash = hash.try_into().map_err(|_| StoreError::Unavailable("corrupt hash column".into()))?;
            if changed == 1 {
                tx.execute(
                    "INSERT INTO revocations (token_id, hash, revoked_at) VALUES (?1, ?2, ?3)",
                    params![id, &hash[..], at],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(Some(Revoked {
                record,
                hash,
                newly_revoked: changed == 1,
                // One process owns the index here; others poll the log.
                all_notified: true,
                seq: 0,
                receivers: 0,
            }))
        })
        .await
    }

    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        Self::with(&self.writer, move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            {
                let mut stmt = tx
                    .prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)")
                    .map_err(unavailable)?;
                for (id, ts) in &batch {
                    stmt.execute(params![id, ts]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn revocation_seq(&self) -> Result<u64, StoreError> {
        Self::with(&self.reader, |c| {
            c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM revocations")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map(|v| v as u64)
                .map_err(unavailable)
        })
        .await
    }

    async fn revocations_since(&self, after: u64, limit: usize) -> Result<Vec<Revocation>, StoreError> {
        Self::with(&self.reader, move |c| {
            let mut stmt = c
                .prepare_cached("SELECT seq, hash FROM revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![after as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, hash) = row.map_err(unavailable)?;
                if let Ok(hash) = TokenHash::try_from(hash) {
                    out.push(Revocation { seq: seq as u64, hash });
                }
            }
            Ok(out)
        })
        .await
    }

    fn audit(&self) -> Option<&dyn super::audit::AuditStore> {
        Some(self)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Self::with(&self.reader, |c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable)).await
    }

    fn usage(&self) -> Option<&dyn super::usage::UsageStore> {
        Some(self)
    }
}

// The behaviour every store shares is tested against SQLite and Redis alike
// in `tests/it/store.rs`.

/// For `portcullis doctor`, without migrating or creating anything: the
/// schema version of an existing store file and the one this binary
/// writes, after checking that a write transaction can be started (file and
/// directory permissions, a lock another process holds too long).
pub fn check_existing(path: &Path) -> Result<(usize, usize), String> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| format!("cannot open it read-write: {e}"))?;
    conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let version: i64 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read its schema version: {e}"))?;
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|e| format!("cannot start a write transaction: {e}"))?;
    Ok((version.max(0) as usize, MIGRATIONS.len()))
}
