//! The in-memory token index, its invalidation, and the verify step.
//!
//! Verification order (contract §3): parse and checksum → SHA-256 → index
//! lookup (on a miss, one store read per hash at a time) → revoked? expired?
//! Workspace and kind checks are the caller's, because they depend on the
//! route.
//!
//! Invariants:
//! - The raw token never leaves [`Verifier::verify`]; only its hash is kept.
//! - A revoked token can never be re-inserted as active by a slow store read
//!   ("fill after evict"): every revocation bumps `generation` *before* it
//!   touches the index, and a fill inserts only if the generation it started
//!   with is unchanged, checked under the same shard lock as the insert.
//! - Expiry is checked on every request, not when an entry is filled.

mod bearer;
pub mod browser;
pub mod lifecycle;
mod miss_budget;
mod negative;
pub mod self_check;
pub mod sync;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, TokenStore};
use crate::telemetry::{AuthFailureReason, IndexLookup, Metrics};
use crate::token::{self, TokenHash, TokenKind, TokenRecord};

pub use bearer::bearer;
pub use miss_budget::{HashFilter, MissBudget};
pub use negative::NegativeCache;

/// What the index keeps per token: enough to authorise a request without the
/// store, and nothing more (every byte here is paid per active token: the
/// name, only shown by `/v1/tokens/self`, is read from the store there).
/// Strings are boxed slices and times are `u32` seconds to keep an entry
/// small.
#[derive(Debug)]
pub struct CachedToken {
    pub id: Box<str>,
    pub kind: TokenKind,
    pub workspace: Option<Box<str>>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub requests_per_minute: Option<u32>,
    pub allowed_servers: Option<Box<[Box<str>]>>,
    pub limiter_key: u64,
    /// The member the token was issued to (its `member_id`, else its
    /// `email`), for usage analytics.
    pub member: Option<Box<str>>,
    /// The OAuth grant of a token of kind `oauth` (its record's
    /// `created_by`); `None` for the others. Sessions are bound to the
    /// grant, not the token, because the client's access token changes at
    /// every refresh while its MCP session goes on ([`Self::session_owner`]).
    pub grant: Option<Box<str>>,
    /// Last successful use (Unix seconds), kept in memory and flushed in batches.
    last_used: UnixSecs,
    /// The value of `last_used` last written to the store.
    flushed_last_used: UnixSecs,
    /// Last lookup of any outcome; idle entries are swept.
    last_seen: UnixSecs,
    /// Cancelled when this entry stops being valid (revoked; later also a
    /// removed member or grant), to end the responses still streaming for
    /// it. Created on first use only, by a streaming response subscribing or
    /// by the revocation itself, so a plain JSON request never touches it.
    /// Lives on the entry (not in a map keyed by hash) because the entry a
    /// stream holds is the one a revocation replaces: both reach the same
    /// `OnceLock`, whichever comes first creates it, so a stream that
    /// subscribes just after the revocation still finds it cancelled.
    ended: OnceLock<CancellationToken>,
}

/// Unix seconds in an `AtomicU32` (half an `AtomicI64`; good until 2106).
/// Times before 1970 read as 0, which no comparison here depends on.
#[derive(Debug)]
struct UnixSecs(AtomicU32);

impl UnixSecs {
    fn new(t: i64) -> Self {
        UnixSecs(AtomicU32::new(Self::clamp(t)))
    }
    fn clamp(t: i64) -> u32 {
        u32::try_from(t.max(0)).unwrap_or(u32::MAX)
    }
    fn load(&self, o: Ordering) -> i64 {
        i64::from(self.0.load(o))
    }
    fn store(&self, t: i64, o: Ordering) {
        self.0.store(Self::clamp(t), o);
    }
    fn fetch_max(&self, t: i64, o: Ordering) {
        self.0.fetch_max(Self::clamp(t), o);
    }
}

impl CachedToken {
    fn from_record(r: &TokenRecord, hash: &TokenHash, now: i64) -> Self {
        let last_used = r.last_used_at.unwrap_or(0);
        CachedToken {
            id: r.id.as_str().into(),
            kind: r.kind,
            workspace: r.workspace.as_deref().map(Into::into),
            expires_at: r.expires_at,
            revoked: r.revoked_at.is_some(),
            requests_per_minute: r.requests_per_minute,
            allowed_servers: r.allowed_servers.as_ref().map(|v| v.iter().map(|s| s.as_str().into()).collect()),
            limiter_key: token::limiter_key(hash),
            member: r.member_id.as_deref().or(r.email.as_deref()).map(Into::into),
            grant: (r.kind == TokenKind::Oauth).then(|| r.created_by.as_str().into()),
            last_used: UnixSecs::new(last_used),
            flushed_last_used: UnixSecs::new(last_used),
            last_seen: UnixSecs::new(now),
            ended: OnceLock::new(),
        }
    }

    /// The same token, revoked. Pending `last_used` is carried over.
    fn revoked_copy(&self) -> Self {
        CachedToken {
            id: self.id.clone(),
            kind: self.kind,
            workspace: self.workspace.clone(),
            expires_at: self.expires_at,
            revoked: true,
            requests_per_minute: self.requests_per_minute,
            allowed_servers: self.allowed_servers.clone(),
            limiter_key: self.limiter_key,
            member: self.member.clone(),
            grant: self.grant.clone(),
            last_used: UnixSecs::new(self.last_used.load(Ordering::Relaxed)),
            flushed_last_used: UnixSecs::new(self.flushed_last_used.load(Ordering::Relaxed)),
            last_seen: UnixSecs::new(self.last_seen.load(Ordering::Relaxed)),
            ended: OnceLock::new(),
        }
    }

    /// The signal that this entry stopped being valid; a streaming response
    /// waits on it (see `gateway::revocable`).
    /// Whom an MCP session opened with this token belongs to: the token
    /// itself, or for an OAuth access token its grant (the same client
    /// and person across refreshes; a revoked grant refuses every token).
    pub fn session_owner(&self) -> &str {
        self.grant.as_deref().unwrap_or(&self.id)
    }

    pub fn ended(&self) -> CancellationToken {
        self.ended.get_or_init(CancellationToken::new).clone()
    }

    /// Ends every response streaming for this entry. The hook for anything
    /// that invalidates a token other than expiry (which streams watch for
    /// themselves): revocation today, member or grant removal later.
    pub fn end_streams(&self) {
        self.ended.get_or_init(CancellationToken::new).cancel();
    }

    /// Whether a request or a stream still holds this entry (the index's own
    /// reference excluded).
    fn in_use(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) > 1
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Records a successful use. Stores only when the second changes, so that
    /// concurrent requests of one token do not fight over the cache line.
    fn touch_used(&self, now: i64) {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    fn touch_seen(&self, now: i64) {
        if self.last_seen.load(Ordering::Relaxed) < now {
            self.last_seen.store(now, Ordering::Relaxed);
        }
    }
}

/// Why verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The credential is not acceptable; answer 401.
    Rejected(AuthFailureReason),
    /// The store could not be read on a miss; fail closed with 503.
    StoreUnavailable,
}

/// Tuning of the index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Slots of the negative cache (bounded memory).
    pub negative_slots: usize,
    /// How long an unknown hash is remembered.
    pub negative_ttl: Duration,
    /// Entries not looked up for this long are evicted (they are re-read on demand).
    pub idle_ttl: Duration,
    /// Whether the store is shared with other processes that push revocations
    /// (cluster mode). Then the index is trusted only while the invalidation
    /// subscription is live and caught up; until then every request reads
    /// through to the store.
    pub shared_store: bool,
    /// Cluster mode: how long after the last confirmed sync an index hit may
    /// still be accepted when the store cannot be read. Zero: fail closed.
    pub revocation_grace: Duration,
    /// How often every instance polls the revocation log. A revocation whose
    /// push did not reach every live instance waits this long (twice, plus a
    /// margin) before it is reported done.
    pub revocation_poll: Duration,
    /// Store reads per second allowed for index misses (0: unlimited). A
    /// flood of random well-formed tokens passes the checksum and misses
    /// the negative cache every time; this keeps it from becoming a flood of
    /// store reads. Tokens already in the index are unaffected.
    pub miss_reads_per_second: u32,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            negative_slots: 65_536,
            negative_ttl: Duration::from_secs(60),
            idle_ttl: Duration::from_secs(600),
            shared_store: false,
            revocation_grace: Duration::ZERO,
            revocation_poll: Duration::from_millis(250),
            miss_reads_per_second: 2000,
        }
    }
}

type Fill = Arc<OnceCell<Result<Option<Arc<CachedToken>>, ()>>>;

pub struct Verifier {
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    index: DashMap<TokenHash, Arc<CachedToken>>,
    negative: NegativeCache,
    /// One in-flight store read per hash; later misses wait on it.
    inflight: DashMap<TokenHash, Fill>,
    /// Bumped by every revocation before it touches the index.
    generation: AtomicU64,
    /// Highest revocation-log sequence number applied to this index.
    applied_revocation_seq: AtomicU64,
    /// False while revocations might have been missed (cluster mode with the
    /// subscription down or behind): index hits are then re-checked in the store.
    trusted: AtomicBool,
    /// Unix ms of the last moment the index was known to be in sync.
    confirmed_at_ms: AtomicI64,
    /// Cluster mode: when (monotonic ms, [`mono_ms`]) the last successful
    /// poll of the revocation log began. Every revocation committed before
    /// that instant is applied here. An index hit is trusted only while this
    /// is at most [`Verifier::propagation_wait`] old: a revoke call whose push
    /// some instance missed returns after waiting exactly that long, so an
    /// instance whose poll ran late (a starved loop, a slow Redis) reads
    /// through to the store instead of accepting a token revoked meanwhile.
    caught_up_at_ms: AtomicI64,
    /// Recent revocations every instance has applied (announced by the store).
    acks: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    acked: tokio::sync::Notify,
    /// Budgets of store reads for misses (see `IndexOptions::miss_reads_per_second`
    /// and [`miss_budget`]).
    miss_budget: MissBudget,
    /// The token hashes that exist, when the store can list them (set once
    /// at start by [`Verifier::load_filter`]).
    filter: OnceLock<HashFilter>,
    options: IndexOptions,
    /// The audit trail, set once by `AppState::new` (a verifier built
    /// alone, in tests and benches, records nothing).
    audit: OnceLock<Arc<crate::audit::Audit>>,
}

impl Verifier {
    pub fn new(store: Arc<dyn TokenStore>, metrics: Arc<Metrics>, options: IndexOptions) -> Self {
        Verifier {
            store,
            metrics,
            index: DashMap::new(),
            negative: NegativeCache::new(options.negative_slots, options.negative_ttl.as_millis() as i64),
            inflight: DashMap::new(),
            generation: AtomicU64::new(0),
            applied_revocation_seq: AtomicU64::new(0),
            trusted: AtomicBool::new(!options.shared_store),
            confirmed_at_ms: AtomicI64::new(0),
            caught_up_at_ms: AtomicI64::new(i64::MIN / 2),
            acks: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            acked: tokio::sync::Notify::new(),
            miss_budget: MissBudget::new(options.miss_reads_per_second),
            filter: OnceLock::new(),
            options,
            audit: OnceLock::new(),
        }
    }

    /// Attaches the audit trail: refusals of revoked or expired tokens and
    /// token creation and revocation (`lifecycle`) are recorded in it.
    pub fn set_audit(&self, audit: Arc<crate::audit::Audit>) {
        let _ = self.audit.set(audit);
    }

    /// The audit trail, if attached.
    pub fn audit(&self) -> Option<&crate::audit::Audit> {
        self.audit.get().map(|a| &**a)
    }

    /// Starts the revocation log at the store's current end: everything
    /// revoked before this point is read from the store on first use anyway.
    pub async fn sync_revocation_seq(&self) -> Result<(), StoreError> {
        let seq = self.store.revocation_seq().await?;
        self.applied_revocation_seq.store(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Loads the filter of existing token hashes from the store (see
    /// [`miss_budget`]). A store that cannot list its hashes leaves the
    /// index without one: every miss is then budgeted per client address.
    /// Call before serving; tokens created meanwhile are added by
    /// [`Verifier::forget_unknown`] only once the filter is set, and a
    /// token missing from the filter is still found (at a lower priority).
    pub async fn load_filter(&self) -> Result<usize, StoreError> {
        let Some(hashes) = self.store.all_hashes().await? else {
            return Ok(0);
        };
        let filter = HashFilter::with_capacity(hashes.len());
        for h in &hashes {
            filter.insert(h);
        }
        let _ = self.filter.set(filter);
        Ok(hashes.len())
    }

    /// Verifies `raw` and returns the token's cached record. The caller checks
    /// kind and workspace. `now` is Unix seconds.
    pub async fn verify(&self, raw: &str, now: i64) -> Result<Arc<CachedToken>, VerifyError> {
        self.verify_from(raw, now, None).await
    }

    /// [`Verifier::verify`] for a request from `client`: a miss of a hash
    /// the filter does not know is charged to that address's budget.
    pub async fn verify_from(&self, raw: &str, now: i64, client: Option<IpAddr>) -> Result<Arc<CachedToken>, VerifyError> {
        if token::parse(raw).is_err() {
            return Err(self.reject(AuthFailureReason::Malformed));
        }
        self.verify_hash(&token::hash(raw), now, client).await
    }

    /// [`Verifier::verify_from`] for a token known only by its hash: a
    /// dashboard session keeps the hash of the admin token that signed in
    /// (never the token) and re-checks it on every request, through the
    /// same index, so a revocation ends the session as soon as the index
    /// knows of it.
    pub async fn verify_hash(&self, hash: &TokenHash, now: i64, client: Option<IpAddr>) -> Result<Arc<CachedToken>, VerifyError> {
        let hash = *hash;
        if !self.trusted.load(Ordering::Acquire) || (self.options.shared_store && !self.caught_up_recently()) {
            return self.verify_untrusted(&hash, now).await;
        }
        let entry = match self.index.get(&hash) {
            Some(e) => {
                self.metrics.index_lookup(IndexLookup::Hit);
                Arc::clone(e.value())
            }
            None => {
                if self.negative.contains(&hash, now.saturating_mul(1000)) {
                    self.metrics.index_lookup(IndexLookup::NegativeHit);
                    return Err(self.reject(AuthFailureReason::Unknown));
                }
                self.metrics.index_lookup(IndexLookup::Miss);
                match self.fill(&hash, now, client).await {
                    Ok(Some(e)) => e,
                    Ok(None) => return Err(self.reject(AuthFailureReason::Unknown)),
                    Err(()) => return Err(VerifyError::StoreUnavailable),
                }
            }
        };
        self.admit(entry, now)
    }

    /// The status checks every verification ends with: revoked, then expired
    /// (evaluated now, not when the entry was filled).
    fn admit(&self, entry: Arc<CachedToken>, now: i64) -> Result<Arc<CachedToken>, VerifyError> {
        entry.touch_seen(now);
        if entry.revoked || entry.is_expired(now) {
            // The first refusal of this token is an audit event (once per
            // token, in fixed memory: `audit::Audit::refused`).
            if let Some(a) = self.audit() {
                a.refused(&entry.id, entry.workspace.as_deref());
            }
            let reason = if entry.revoked {
                AuthFailureReason::Revoked
            } else {
                AuthFailureReason::Expired
            };
            return Err(self.reject(reason));
        }
        entry.touch_used(now);
        Ok(entry)
    }

    /// Verification while revocations may have been missed: the store is the
    /// authority for every request. If it cannot be read, an index hit is
    /// accepted only within the configured grace after the last confirmed
    /// sync; otherwise the request fails closed.
    async fn verify_untrusted(&self, hash: &TokenHash, now: i64) -> Result<Arc<CachedToken>, VerifyError> {
        let entry = loop {
            let generation = self.generation.load(Ordering::SeqCst);
            let read = self.store.find_by_hash(hash).await;
            self.metrics.store_read(read.is_ok());
            match read {
                Ok(Some(record)) => {
                    if record.revoked_at.is_some() {
                        if let Some(a) = self.audit() {
                            a.refused(&record.id, record.workspace.as_deref());
                        }
                        // The index may still hold it as active: fix that now.
                        self.apply_revocation(hash);
                        return Err(self.reject(AuthFailureReason::Revoked));
                    }
                    // Only revocation ever changes a token, so an active index
                    // entry is this record; using it keeps last_used batching.
                    // Otherwise the record goes into the index, as a fill
                    // would: a response streaming for it must be reachable by
                    // the revocation that replaces it (`CachedToken::ended`).
                    match self.index.entry(*hash) {
                        Entry::Occupied(e) if !e.get().revoked => break Arc::clone(e.get()),
                        Entry::Occupied(_) => break Arc::new(CachedToken::from_record(&record, hash, now)),
                        Entry::Vacant(v) => {
                            // As in `read_through`: a revocation that raced
                            // the read has bumped the generation; read again.
                            if self.generation.load(Ordering::SeqCst) != generation {
                                continue;
                            }
                            break Arc::clone(v.insert(Arc::new(CachedToken::from_record(&record, hash, now))).value());
                        }
                    }
                }
                Ok(None) => return Err(self.reject(AuthFailureReason::Unknown)),
                Err(e) => {
                    let grace_ms = self.options.revocation_grace.as_millis() as i64;
                    let within_grace = grace_ms > 0 && now_ms() - self.confirmed_at_ms.load(Ordering::Acquire) <= grace_ms;
                    match self.index.get(hash) {
                        Some(cached) if within_grace => break Arc::clone(cached.value()),
                        _ => {
                            tracing::warn!(error = %e, "revocation state cannot be confirmed; refusing the request");
                            return Err(VerifyError::StoreUnavailable);
                        }
                    }
                }
            }
        };
        self.admit(entry, now)
    }

    /// Whether the last successful poll of the revocation log began within
    /// [`Verifier::propagation_wait`] (cluster mode; see `caught_up_at_ms`).
    fn caught_up_recently(&self) -> bool {
        let wait = i64::try_from(self.propagation_wait().as_millis()).unwrap_or(i64::MAX);
        mono_ms() - self.caught_up_at_ms.load(Ordering::Acquire) <= wait
    }

    /// Whether index hits are trusted without a store read.
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Stops trusting the index (subscription lost, store unreachable).
    pub fn distrust(&self) {
        if self.trusted.swap(false, Ordering::AcqRel) {
            tracing::warn!("revocation state unconfirmed: checking every request against the store until resynchronised");
        }
    }

    /// When (Unix ms) the index was last confirmed in sync: the instant the
    /// revocation grace counts from. Read by tests, which judge the grace
    /// against the instance's own clock instead of a wall-clock threshold.
    pub fn confirmed_at_ms(&self) -> i64 {
        self.confirmed_at_ms.load(Ordering::Acquire)
    }

    /// The index is in sync as of now (subscribed and caught up).
    pub fn confirm_in_sync(&self) {
        self.confirmed_at_ms.store(now_ms(), Ordering::Release);
        if !self.trusted.swap(true, Ordering::AcqRel) {
            tracing::info!("revocation state confirmed: index trusted again");
        }
    }

    /// Drops every cached entry: used when revocations may have been missed
    /// beyond what the log can replay.
    ///
    /// Responses still streaming for a token in the index end too: which of
    /// those tokens were revoked cannot be told any more, and a stream could
    /// not be reached by a later revocation once its entry is gone. Failing
    /// closed costs their clients one reconnection (and one re-check).
    pub fn flush_index(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for e in self.index.iter() {
            if e.value().in_use() {
                e.value().end_streams();
            }
        }
        self.index.clear();
    }

    /// Counts a failure and wraps it.
    pub fn reject(&self, reason: AuthFailureReason) -> VerifyError {
        self.metrics.auth_failure(reason);
        // Names the reason on the request's access-log line (the span's
        // `auth_failure` field; a no-op outside a request span). The client
        // only ever sees the uniform 401.
        tracing::Span::current().record("auth_failure", reason.as_str());
        VerifyError::Rejected(reason)
    }

    /// Reads the store for a miss, collapsing concurrent misses of one hash.
    async fn fill(&self, hash: &TokenHash, now: i64, client: Option<IpAddr>) -> Result<Option<Arc<CachedToken>>, ()> {
        let cell: Fill = Arc::clone(self.inflight.entry(*hash).or_default().value());
        let result = cell.get_or_init(|| self.read_through(hash, now, client)).await.clone();
        // Only the cell we used is removed; a newer one may already be there.
        self.inflight.remove_if(hash, |_, v| Arc::ptr_eq(v, &cell));
        result
    }

    async fn read_through(&self, hash: &TokenHash, now: i64, client: Option<IpAddr>) -> Result<Option<Arc<CachedToken>>, ()> {
        let filter = self.filter.get();
        let known = filter.is_some_and(|f| f.may_contain(hash));
        if !self.miss_budget.allow(known, filter.is_none(), client, now) {
            self.metrics.miss_budget_exhausted();
            return Err(());
        }
        loop {
            let generation = self.generation.load(Ordering::SeqCst);
            let read = self.store.find_by_hash(hash).await;
            self.metrics.store_read(read.is_ok());
            let record = match read {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.negative.insert(hash, now.saturating_mul(1000));
                    return Ok(None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "token store read failed; refusing the request");
                    return Err(());
                }
            };
            let fresh = Arc::new(CachedToken::from_record(&record, hash, now));
            match self.index.entry(*hash) {
                // Someone else (a revocation, another fill) got there first; theirs wins.
                Entry::Occupied(e) => return Ok(Some(Arc::clone(e.get()))),
                Entry::Vacant(v) => {
                    // Checked while holding the shard lock: a revocation that
                    // raced our read has already bumped the generation.
                    if self.generation.load(Ordering::SeqCst) != generation {
                        continue;
                    }
                    v.insert(Arc::clone(&fresh));
                    // Found though the filter did not know it (created
                    // elsewhere): known from now on, so that after an idle
                    // eviction it is not budgeted with the unknown again.
                    if let Some(f) = filter {
                        f.insert(hash);
                    }
                    return Ok(Some(fresh));
                }
            }
        }
    }

    /// Applies a revocation to the index. Call after the store has committed it.
    ///
    /// Responses still streaming for the token end: they hold the entry
    /// replaced here, whose signal fires before the replacement (so before a
    /// revoke call returns, on this instance and, through the
    /// acknowledgements, on every other). The entry is always here while a
    /// stream holds it: the idle sweep keeps entries in use, and a flush ends
    /// their streams.
    pub fn apply_revocation(&self, hash: &TokenHash) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(mut e) = self.index.get_mut(hash)
            && !e.revoked
        {
            e.end_streams();
            *e = Arc::new(e.revoked_copy());
        }
    }

    /// A token was just created: forget any "unknown" verdict for its hash,
    /// and add it to the filter of hashes that exist.
    pub fn forget_unknown(&self, hash: &TokenHash) {
        if let Some(f) = self.filter.get() {
            f.insert(hash);
        }
        self.negative.remove(hash);
    }

    /// Reads revocations made by other processes from the store's log and
    /// applies them. Returns how many were applied.
    pub async fn poll_revocations(&self) -> Result<usize, StoreError> {
        // Taken before the log is read: whatever was committed before this
        // instant is in what the reads below return.
        let started = mono_ms();
        let applied = self.poll_revocations_inner().await?;
        self.caught_up_at_ms.fetch_max(started, Ordering::AcqRel);
        Ok(applied)
    }

    async fn poll_revocations_inner(&self) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let after = self.applied_revocation_seq.load(Ordering::SeqCst);
            let batch = match self.store.revocations_since(after, 1000).await {
                Ok(b) => b,
                Err(StoreError::LogTruncated) => {
                    // Revocations were missed and cannot be replayed: forget
                    // everything cached and start again from the log's end.
                    let seq = self.store.revocation_seq().await?;
                    tracing::warn!(
                        after,
                        now = seq,
                        "revocation log truncated past our position; flushing the token index"
                    );
                    self.flush_index();
                    self.applied_revocation_seq.store(seq, Ordering::SeqCst);
                    return Ok(applied);
                }
                Err(e) => return Err(e),
            };
            if batch.is_empty() {
                return Ok(applied);
            }
            for r in &batch {
                self.apply_revocation(&r.hash);
                self.applied_revocation_seq.fetch_max(r.seq, Ordering::SeqCst);
            }
            applied += batch.len();
        }
    }

    /// Writes pending `last_used_at` values to the store in one batch.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let pending: Vec<(Arc<CachedToken>, i64)> = self
            .index
            .iter()
            .filter_map(|e| {
                let used = e.last_used.load(Ordering::Relaxed);
                (used > e.flushed_last_used.load(Ordering::Relaxed)).then(|| (Arc::clone(e.value()), used))
            })
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let batch: Vec<(String, i64)> = pending.iter().map(|(e, used)| (e.id.to_string(), *used)).collect();
        self.store.record_last_used(&batch).await?;
        for (e, used) in &pending {
            e.flushed_last_used.fetch_max(*used, Ordering::Relaxed);
        }
        Ok(pending.len())
    }

    /// Evicts entries not looked up within the idle TTL, except those whose
    /// `last_used_at` has not been flushed yet and those a request or stream
    /// still holds (a stream open for hours makes no lookups, but its entry
    /// must stay where a revocation finds it).
    pub fn sweep_idle(&self, now: i64) -> usize {
        let cutoff = now - self.options.idle_ttl.as_secs() as i64;
        let before = self.index.len();
        self.index.retain(|_, e| {
            e.last_seen.load(Ordering::Relaxed) >= cutoff
                || e.last_used.load(Ordering::Relaxed) > e.flushed_last_used.load(Ordering::Relaxed)
                || e.in_use()
        });
        before - self.index.len()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Records that every instance has applied revocation `seq`.
    pub fn record_ack(&self, seq: u64) {
        {
            // Held for a set update only; no await inside.
            let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
            acks.insert(seq);
            // Bounded: only recent revocations can still have a waiter.
            while acks.len() > 4096 {
                acks.pop_first();
            }
        }
        self.acked.notify_waiters();
    }

    /// Waits until every instance has applied revocation `seq`, or `timeout`.
    /// Returns whether they all did.
    pub async fn wait_for_acks(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acked.notified();
            tokio::pin!(notified);
            // Registered before checking, so an ack between the check and
            // the wait is not lost.
            notified.as_mut().enable();
            if self.acks.lock().unwrap_or_else(|p| p.into_inner()).contains(&seq) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// How long a revocation that some instance missed must wait before
    /// every instance has caught up through its poll.
    pub fn propagation_wait(&self) -> Duration {
        self.options.revocation_poll * 2 + Duration::from_millis(100)
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }
}

/// Milliseconds on a monotonic clock (since the first call): for ages
/// measured within this process, which a wall-clock step must not stretch or
/// shrink.
fn mono_ms() -> i64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    i64::try_from(EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
