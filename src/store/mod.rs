//! Durable token state behind the [`TokenStore`] trait.
//!
//! Only the store writes durable state. The embedded backend is SQLite
//! ([`sqlite::SqliteStore`]); the shared Redis backend implements the same
//! trait for cluster mode. Every store also keeps an append-only revocation
//! log with a monotonically increasing sequence number, so that every process
//! holding an in-memory index can learn of revocations made elsewhere (another
//! instance, or the offline CLI) by polling a single number.

pub mod audit;
pub mod grants;
pub mod members;
mod members_redis;
pub mod redis;
pub mod redis_conn;
pub mod redis_keys;
pub mod redis_url;
pub mod sessions;
pub mod sqlite;
pub mod usage;

use async_trait::async_trait;

use crate::token::{TokenHash, TokenKind, TokenRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed; callers must fail closed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint failed (id or hash collision).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A pagination cursor that this store did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The revocation log no longer reaches back to the requested point;
    /// the caller must assume anything it cached may have been revoked.
    #[error("the revocation log was truncated past the requested point")]
    LogTruncated,
}

/// Which tokens a listing returns.
#[derive(Debug, Clone, Copy)]
pub struct ListFilter<'a> {
    pub kind: TokenKind,
    /// `Some(ws)`: tokens of that workspace; `None`: all (admin listings).
    pub workspace: Option<&'a str>,
}

/// One page of a newest-first listing.
#[derive(Debug)]
pub struct Page {
    pub tokens: Vec<TokenRecord>,
    /// Opaque cursor for the next page, `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One entry of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub seq: u64,
    pub hash: TokenHash,
}

/// Result of a revoke call.
#[derive(Debug)]
pub struct Revoked {
    pub record: TokenRecord,
    pub hash: TokenHash,
    /// False when the token had already been revoked (revoking twice is fine).
    pub newly_revoked: bool,
    /// False when some live instance may not have received the push (shared
    /// stores only): the caller then waits until every instance has polled
    /// the revocation log before reporting the revocation done.
    pub all_notified: bool,
    /// Sequence number of this revocation in the log (0 if not new).
    pub seq: u64,
    /// Subscriptions the push reached (shared stores; 0 otherwise). Each
    /// acknowledges once it has applied the revocation, and the store
    /// announces when the last one has ([`Pushed::Applied`]).
    pub receivers: u64,
}

/// A message on a shared store's invalidation channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A revocation to apply.
    Revoked(Revocation),
    /// Every instance the push of revocation `seq` reached has applied it.
    Applied { seq: u64 },
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a new token. Fails with [`StoreError::Conflict`] on a duplicate.
    async fn insert(&self, record: &TokenRecord, hash: &TokenHash) -> Result<(), StoreError>;
    /// The record whose token hashes to `hash` (the verify path's miss read).
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError>;
    /// The record with public id `id`.
    async fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Newest first. `cursor` comes from a previous page of the same filter.
    async fn list(&self, filter: ListFilter<'_>, page_size: usize, cursor: Option<&str>) -> Result<Page, StoreError>;
    /// Marks the token revoked at `at` (kept if already revoked) and appends
    /// to the revocation log in the same transaction. `None` if unknown.
    async fn revoke(&self, id: &str, at: i64) -> Result<Option<Revoked>, StoreError>;
    /// Batched `last_used_at` update; never moves a timestamp backwards.
    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError>;
    /// Highest revocation sequence number (0 when none).
    async fn revocation_seq(&self) -> Result<u64, StoreError>;
    /// Revocations with `seq > after`, oldest first, at most `limit`.
    async fn revocations_since(&self, after: u64, limit: usize) -> Result<Vec<Revocation>, StoreError>;
    /// Every stored token hash, to build the index's filter of hashes that
    /// exist at start. `None`: this store does not list them (the index
    /// then budgets every miss per client address).
    async fn all_hashes(&self) -> Result<Option<Vec<TokenHash>>, StoreError> {
        Ok(None)
    }
    /// A random 32-byte secret kept in the store, made by the first process
    /// that asks and the same for every process using the store (and after
    /// restarts). Binds pass-through sessions to their token when
    /// `server.session_keys` is not set (`gateway::session_bind`). `None`:
    /// this store keeps none.
    async fn shared_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(None)
    }
    /// Where dashboard sessions live (`None`: this store keeps none, and
    /// the dashboard cannot sign anyone in).
    fn sessions(&self) -> Option<&dyn sessions::SessionStore> {
        None
    }
    /// The audit trail kept in this store (`store::audit`). `None`: this
    /// store keeps none (events then go to the sink only, if any).
    fn audit(&self) -> Option<&dyn audit::AuditStore> {
        None
    }
    /// Where OAuth grants, codes and refresh tokens live (`None`: this
    /// store keeps none, and the authorization server cannot issue any).
    fn grants(&self) -> Option<&dyn grants::GrantStore> {
        None
    }
    /// Where members, sign-in links and member sessions live (`None`: this
    /// store keeps none, and nobody can be a member).
    fn members(&self) -> Option<&dyn members::MemberStore> {
        None
    }
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Revocations pushed as they happen, for stores shared between
    /// processes. `None`: no push channel; polling the log is all there is.
    /// The stream ends when the subscription drops.
    async fn subscribe(&self) -> Result<Option<redis::RevocationStream>, StoreError> {
        Ok(None)
    }
    /// Announces this instance to a shared store (no-op for embedded stores).
    async fn heartbeat(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Counts this instance among those that have applied revocation `seq`
    /// (the last one makes the store announce [`Pushed::Applied`]).
    async fn acknowledge(&self, _seq: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// The usage buckets of this store (`usage`); `None`: it keeps none
    /// (counts are then dropped and queries answer empty).
    fn usage(&self) -> Option<&dyn usage::UsageStore> {
        None
    }
}
