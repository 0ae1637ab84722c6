use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::lifecycle::{self, NewTokenRequest};
use super::*;
use crate::config::Config;
use crate::store::sqlite::SqliteStore;
use crate::store::{ListFilter, Page, Revocation, Revoked};

/// The real SQLite store with two test hooks on the miss read: a counter, and
/// a gate that holds reads until the test releases them (to stage races).
struct GatedStore {
    inner: SqliteStore,
    reads: AtomicUsize,
    gate: Semaphore,
}

#[async_trait]
impl TokenStore for GatedStore {
    async fn insert(&self, r: &TokenRecord, h: &TokenHash) -> Result<(), StoreError> {
        self.inner.insert(r, h).await
    }
    async fn find_by_hash(&self, h: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        // Read first, then wait: the record returned is the pre-revocation one.
        let r = self.inner.find_by_hash(h).await;
        self.gate.acquire().await.expect("open").forget();
        r
    }
    async fn get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, f: ListFilter<'_>, n: usize, c: Option<&str>) -> Result<Page, StoreError> {
        self.inner.list(f, n, c).await
    }
    async fn revoke(&self, id: &str, at: i64) -> Result<Option<Revoked>, StoreError> {
        self.inner.revoke(id, at).await
    }
    async fn record_last_used(&self, b: &[(String, i64)]) -> Result<(), StoreError> {
        self.inner.record_last_used(b).await
    }
    async fn revocation_seq(&self) -> Result<u64, StoreError> {
        self.inner.revocation_seq().await
    }
    async fn revocations_since(&self, a: u64, l: usize) -> Result<Vec<Revocation>, StoreError> {
        self.inner.revocations_since(a, l).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    gated: Arc<GatedStore>,
    store: Arc<dyn TokenStore>,
    verifier: Arc<Verifier>,
}

fn metrics() -> Arc<Metrics> {
    let c = Config::from_toml(std::path::Path::new("t.toml"), "", &|_| None).unwrap();
    Arc::new(Metrics::new(&c))
}

fn fixture(open_gate: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let gated = Arc::new(GatedStore {
        inner: SqliteStore::open(&path).unwrap(),
        reads: AtomicUsize::new(0),
        gate: Semaphore::new(if open_gate { Semaphore::MAX_PERMITS } else { 0 }),
    });
    let store: Arc<dyn TokenStore> = gated.clone();
    let verifier = Arc::new(Verifier::new(Arc::clone(&store), metrics(), IndexOptions::default()));
    Fixture {
        _dir: dir,
        path,
        gated,
        store,
        verifier,
    }
}

async fn create(f: &Fixture, expires_in: Option<u64>, now: i64) -> (String, TokenRecord) {
    let req = NewTokenRequest {
        name: "t".into(),
        workspace: Some("demo".into()),
        expires_in,
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    lifecycle::create(Some(&f.verifier), &f.store, req, now).await.unwrap()
}

#[tokio::test]
async fn hit_after_one_store_read_and_unknown_is_cached_negatively() {
    let f = fixture(true);
    let (raw, rec) = create(&f, None, 100).await;
    let e = f.verifier.verify(&raw, 100).await.unwrap();
    assert_eq!(&*e.id, rec.id.as_str());
    f.verifier.verify(&raw, 100).await.unwrap();
    assert_eq!(f.gated.reads.load(Ordering::SeqCst), 1, "second verify is an index hit");

    let unknown = token::generate(TokenKind::Workspace).raw;
    for _ in 0..3 {
        assert_eq!(
            f.verifier.verify(&unknown, 100).await.unwrap_err(),
            VerifyError::Rejected(AuthFailureReason::Unknown)
        );
    }
    assert_eq!(
        f.gated.reads.load(Ordering::SeqCst),
        2,
        "unknown hash is read once, then negatively cached"
    );
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let f = fixture(true);
    let (raw, _) = create(&f, None, 100).await;
    let mut bad = raw.clone().into_bytes();
    bad[10] = if bad[10] == b'x' { b'y' } else { b'x' };
    for t in [
        String::from_utf8(bad).unwrap(),
        "mwt_short".into(),
        String::new(),
        "Bearer x".into(),
    ] {
        assert_eq!(
            f.verifier.verify(&t, 100).await.unwrap_err(),
            VerifyError::Rejected(AuthFailureReason::Malformed)
        );
    }
    assert_eq!(f.gated.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrent_misses_of_one_hash_are_one_store_read() {
    let f = fixture(false);
    let (raw, _) = create(&f, None, 100).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let v = Arc::clone(&f.verifier);
        let raw = raw.clone();
        tasks.push(tokio::spawn(async move { v.verify(&raw, 100).await.map(|_| ()) }));
    }
    // Hold the store read until every caller has arrived: each one either
    // waits on the one in-flight read (holding a clone of its cell, next to
    // the map's own) or, were misses not collapsed, has started a read of
    // its own. Released before that, the test would prove nothing.
    let hash = crate::token::hash(&raw);
    let arrived = || {
        let waiting = f.verifier.inflight.get(&hash).map_or(0, |c| Arc::strong_count(c.value()) - 1);
        waiting.max(f.gated.reads.load(Ordering::SeqCst))
    };
    let mut spins = 0;
    while arrived() < 20 {
        spins += 1;
        assert!(spins < 100_000, "only {} of 20 misses arrived", arrived());
        tokio::task::yield_now().await;
    }
    f.gated.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(f.gated.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_fill_racing_a_revocation_never_caches_the_token_as_active() {
    let f = fixture(false);
    let (raw, rec) = create(&f, None, 100).await;
    // A request misses and reads the still-active record, then stalls.
    let v = Arc::clone(&f.verifier);
    let raw2 = raw.clone();
    let slow = tokio::spawn(async move { v.verify(&raw2, 100).await.map(|_| ()) });
    while f.gated.reads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Meanwhile the token is revoked.
    lifecycle::revoke(Some(&f.verifier), &f.store, &rec.id, 101).await.unwrap().unwrap();
    // The stale read completes; the fill must notice and re-read.
    f.gated.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    assert_eq!(slow.await.unwrap().unwrap_err(), VerifyError::Rejected(AuthFailureReason::Revoked));
    assert_eq!(
        f.verifier.verify(&raw, 102).await.unwrap_err(),
        VerifyError::Rejected(AuthFailureReason::Revoked)
    );
}

#[tokio::test]
async fn revocation_of_a_cached_token_applies_before_revoke_returns() {
    let f = fixture(true);
    let (raw, rec) = create(&f, None, 100).await;
    f.verifier.verify(&raw, 100).await.unwrap();
    let r = lifecycle::revoke(Some(&f.verifier), &f.store, &rec.id, 101).await.unwrap().unwrap();
    assert!(r.newly_revoked);
    assert_eq!(
        f.verifier.verify(&raw, 101).await.unwrap_err(),
        VerifyError::Rejected(AuthFailureReason::Revoked)
    );
}

#[tokio::test]
async fn expiry_is_checked_on_every_request_not_only_on_fill() {
    let f = fixture(true);
    let (raw, _) = create(&f, Some(10), 100).await;
    f.verifier.verify(&raw, 100).await.unwrap();
    f.verifier.verify(&raw, 109).await.unwrap();
    assert_eq!(
        f.verifier.verify(&raw, 110).await.unwrap_err(),
        VerifyError::Rejected(AuthFailureReason::Expired)
    );
    assert_eq!(f.gated.reads.load(Ordering::SeqCst), 1, "the cached entry itself expired");
}

#[tokio::test]
async fn revocations_by_another_process_arrive_through_the_log() {
    let f = fixture(true);
    f.verifier.sync_revocation_seq().await.unwrap();
    let (raw, rec) = create(&f, None, 100).await;
    f.verifier.verify(&raw, 100).await.unwrap();
    // Another process (e.g. the offline CLI) opens the same file and revokes.
    let other: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&f.path).unwrap());
    lifecycle::revoke(None, &other, &rec.id, 101).await.unwrap().unwrap();
    assert!(f.verifier.verify(&raw, 101).await.is_ok(), "not seen until the log is polled");
    assert_eq!(f.verifier.poll_revocations().await.unwrap(), 1);
    assert_eq!(
        f.verifier.verify(&raw, 101).await.unwrap_err(),
        VerifyError::Rejected(AuthFailureReason::Revoked)
    );
    assert_eq!(f.verifier.poll_revocations().await.unwrap(), 0);
}

#[tokio::test]
async fn last_used_is_batched_and_idle_entries_are_swept() {
    let f = fixture(true);
    let (raw, rec) = create(&f, None, 100).await;
    for now in 100..110 {
        f.verifier.verify(&raw, now).await.unwrap();
    }
    assert_eq!(
        f.store.get(&rec.id).await.unwrap().unwrap().last_used_at,
        None,
        "no write per request"
    );
    assert_eq!(f.verifier.sweep_idle(100_000), 0, "unflushed entries are kept");
    assert_eq!(f.verifier.flush_last_used().await.unwrap(), 1);
    assert_eq!(f.store.get(&rec.id).await.unwrap().unwrap().last_used_at, Some(109));
    assert_eq!(f.verifier.flush_last_used().await.unwrap(), 0, "nothing pending");
    assert_eq!(f.verifier.sweep_idle(109), 0);
    assert_eq!(f.verifier.sweep_idle(100_000), 1);
    assert!(f.verifier.is_empty());
    // Evicted entries come back on demand.
    f.verifier.verify(&raw, 100_001).await.unwrap();
}

#[tokio::test]
async fn revocation_ends_the_streams_of_the_entry_it_replaces() {
    let f = fixture(true);
    let (raw, rec) = create(&f, None, 100).await;
    let streaming = f.verifier.verify(&raw, 100).await.unwrap();
    let watching = streaming.ended();
    // A request verified before the revocation whose stream subscribes only
    // after it: it must find the signal already fired.
    let late = f.verifier.verify(&raw, 100).await.unwrap();
    assert!(!watching.is_cancelled());
    lifecycle::revoke(Some(&f.verifier), &f.store, &rec.id, 101).await.unwrap().unwrap();
    assert!(watching.is_cancelled(), "fired before the revoke call returned");
    assert!(late.ended().is_cancelled());
}

#[tokio::test]
async fn entries_held_by_a_stream_are_not_swept_and_a_flush_ends_their_streams() {
    let f = fixture(true);
    let (raw, _) = create(&f, None, 100).await;
    let streaming = f.verifier.verify(&raw, 100).await.unwrap();
    f.verifier.flush_last_used().await.unwrap();
    assert_eq!(f.verifier.sweep_idle(100_000), 0, "held: kept where a revocation finds it");
    f.verifier.flush_index();
    assert!(streaming.ended().is_cancelled(), "flushed: its revocation could no longer reach it");
    drop(streaming);
    let idle = fixture(true);
    let (raw, _) = create(&idle, None, 100).await;
    drop(idle.verifier.verify(&raw, 100).await.unwrap());
    idle.verifier.flush_last_used().await.unwrap();
    assert_eq!(idle.verifier.sweep_idle(100_000), 1, "released: swept");
}

#[tokio::test]
async fn an_entry_read_through_while_distrusted_is_indexed_so_a_revocation_reaches_its_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
    let options = IndexOptions {
        shared_store: true,
        ..IndexOptions::default()
    };
    let verifier = Verifier::new(Arc::clone(&store), metrics(), options);
    assert!(!verifier.is_trusted());
    let req = NewTokenRequest {
        name: "t".into(),
        workspace: Some("demo".into()),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (raw, _) = lifecycle::create(Some(&verifier), &store, req, 100).await.unwrap();
    let streaming = verifier.verify(&raw, 100).await.unwrap();
    assert_eq!(verifier.len(), 1);
    // The revocation as the sync loop applies it, from another instance.
    verifier.apply_revocation(&token::hash(&raw));
    assert!(streaming.ended().is_cancelled());
}

/// Cluster mode: a revocation committed by another instance whose push this
/// one missed. The revoke call waits `propagation_wait` and returns; from
/// then on this instance must refuse, even if its poll of the log has not run
/// (a starved loop under load): an index hit is trusted only while the last
/// poll began within that wait.
#[tokio::test]
async fn an_index_not_caught_up_within_the_propagation_wait_reads_through() {
    let dir = tempfile::tempdir().unwrap();
    let gated = Arc::new(GatedStore {
        inner: SqliteStore::open(&dir.path().join("t.db")).unwrap(),
        reads: AtomicUsize::new(0),
        gate: Semaphore::new(Semaphore::MAX_PERMITS),
    });
    let store: Arc<dyn TokenStore> = gated.clone();
    let options = IndexOptions {
        shared_store: true,
        revocation_poll: Duration::from_millis(5),
        ..IndexOptions::default()
    };
    let verifier = Verifier::new(Arc::clone(&store), metrics(), options);
    let req = NewTokenRequest {
        name: "t".into(),
        workspace: Some("demo".into()),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (raw, record) = lifecycle::create(Some(&verifier), &store, req, 100).await.unwrap();
    // In sync: subscribed and caught up, as the sync loop leaves it.
    verifier.poll_revocations().await.unwrap();
    verifier.confirm_in_sync();
    verifier.verify(&raw, 100).await.unwrap();
    let reads = gated.reads.load(Ordering::SeqCst);
    verifier.verify(&raw, 100).await.unwrap();
    assert_eq!(gated.reads.load(Ordering::SeqCst), reads, "caught up: an index hit, no store read");

    // Revoked elsewhere; the push never arrives and no poll runs. Wait out
    // the revoke call's own wait, as the other instance's caller does.
    store.revoke(&record.id, 101).await.unwrap();
    tokio::time::sleep(verifier.propagation_wait() + Duration::from_millis(5)).await;
    assert!(verifier.is_trusted(), "the subscription is still live");
    assert!(matches!(
        verifier.verify(&raw, 102).await,
        Err(VerifyError::Rejected(AuthFailureReason::Revoked))
    ));
    assert!(gated.reads.load(Ordering::SeqCst) > reads, "read through to the store");
}
