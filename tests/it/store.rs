//! The `TokenStore` contract, run against both backends: SQLite (a real file)
//! and Redis (a private redis-server).

use std::sync::Arc;
use std::time::Duration;

use portcullis::store::redis::RedisStore;
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::{ListFilter, Revocation, StoreError, TokenStore};
use portcullis::token::{self, TokenHash, TokenKind, TokenRecord};

use crate::harness::RedisServer;

/// Keeps whatever the store needs alive (temp dir or redis-server).
struct Backend {
    store: Arc<dyn TokenStore>,
    _dir: Option<tempfile::TempDir>,
    redis: Option<RedisServer>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("sub/t.db")).unwrap());
    Backend {
        store,
        _dir: Some(dir),
        redis: None,
    }
}

async fn redis() -> Backend {
    let server = RedisServer::start().await;
    let store = Arc::new(RedisStore::connect(&server.url(), Duration::from_secs(2)).await.unwrap());
    Backend {
        store,
        _dir: None,
        redis: Some(server),
    }
}

fn record(ws: &str, name: &str) -> (TokenRecord, TokenHash) {
    let t = token::generate(TokenKind::Workspace);
    (
        TokenRecord {
            id: token::generate_id(),
            name: name.into(),
            workspace: Some(ws.into()),
            kind: TokenKind::Workspace,
            hint: t.hint,
            member_id: Some("m1".into()),
            email: None,
            created_at: 1000,
            created_by: "bootstrap".into(),
            expires_at: Some(5000),
            revoked_at: None,
            last_used_at: None,
            allowed_servers: Some(vec!["demo".into()]),
            requests_per_minute: Some(7),
        },
        t.hash,
    )
}

/// Runs one contract check on both backends.
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::sqlite().await).await
            }
            #[tokio::test]
            async fn redis() {
                super::$name(super::redis().await).await
            }
        }
    };
}

both_backends!(insert_find_get_roundtrip);
async fn insert_find_get_roundtrip(b: Backend) {
    let s = &b.store;
    let (r, h) = record("demo", "a");
    s.insert(&r, &h).await.unwrap();
    assert_eq!(s.find_by_hash(&h).await.unwrap().as_ref(), Some(&r));
    assert_eq!(s.get(&r.id).await.unwrap().as_ref(), Some(&r));
    assert!(s.find_by_hash(&[0; 32]).await.unwrap().is_none());
    assert!(s.get("tkn_0000000000000000").await.unwrap().is_none());
    assert!(matches!(s.insert(&r, &h).await, Err(StoreError::Conflict(_))));
    // Optional fields absent round-trip as None.
    let (mut bare, h2) = record("demo", "b");
    bare.member_id = None;
    bare.expires_at = None;
    bare.allowed_servers = None;
    bare.requests_per_minute = None;
    s.insert(&bare, &h2).await.unwrap();
    assert_eq!(s.get(&bare.id).await.unwrap().as_ref(), Some(&bare));
    s.ping().await.unwrap();
}

both_backends!(revoke_is_idempotent_and_logged_once);
async fn revoke_is_idempotent_and_logged_once(b: Backend) {
    let s = &b.store;
    let (r, h) = record("demo", "a");
    s.insert(&r, &h).await.unwrap();
    assert_eq!(s.revocation_seq().await.unwrap(), 0);
    assert!(s.revocations_since(0, 10).await.unwrap().is_empty());
    let first = s.revoke(&r.id, 2000).await.unwrap().unwrap();
    assert!(first.newly_revoked);
    assert_eq!(first.record.revoked_at, Some(2000));
    assert_eq!(first.hash, h);
    let second = s.revoke(&r.id, 3000).await.unwrap().unwrap();
    assert!(!second.newly_revoked);
    assert_eq!(second.record.revoked_at, Some(2000), "the first revocation time is kept");
    assert_eq!(s.revocation_seq().await.unwrap(), 1);
    assert_eq!(s.revocations_since(0, 10).await.unwrap(), vec![Revocation { seq: 1, hash: h }]);
    assert!(s.revocations_since(1, 10).await.unwrap().is_empty());
    assert!(s.revoke("tkn_0000000000000000", 1).await.unwrap().is_none());
    assert_eq!(s.find_by_hash(&h).await.unwrap().unwrap().revoked_at, Some(2000));
}

both_backends!(list_is_newest_first_and_paginates_while_tokens_are_added);
async fn list_is_newest_first_and_paginates_while_tokens_are_added(b: Backend) {
    let s = &b.store;
    for i in 0..5 {
        let (r, h) = record("demo", &format!("t{i}"));
        s.insert(&r, &h).await.unwrap();
    }
    let (other, h) = record("other", "x");
    s.insert(&other, &h).await.unwrap();
    let f = ListFilter {
        kind: TokenKind::Workspace,
        workspace: Some("demo"),
    };
    let names = |p: &portcullis::store::Page| p.tokens.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let p1 = s.list(f, 2, None).await.unwrap();
    assert_eq!(names(&p1), ["t4", "t3"]);
    // A token created between pages does not shift the next page.
    let (late, h) = record("demo", "late");
    s.insert(&late, &h).await.unwrap();
    let p2 = s.list(f, 2, p1.next_cursor.as_deref()).await.unwrap();
    assert_eq!(names(&p2), ["t2", "t1"]);
    let p3 = s.list(f, 2, p2.next_cursor.as_deref()).await.unwrap();
    assert_eq!(names(&p3), ["t0"]);
    assert!(p3.next_cursor.is_none());
    assert!(matches!(s.list(f, 2, Some("garbage")).await, Err(StoreError::InvalidCursor)));
    // All workspaces, and another kind.
    let all = s
        .list(
            ListFilter {
                kind: TokenKind::Workspace,
                workspace: None,
            },
            100,
            None,
        )
        .await
        .unwrap();
    assert_eq!(all.tokens.len(), 7);
    assert!(
        s.list(
            ListFilter {
                kind: TokenKind::Admin,
                workspace: None
            },
            100,
            None
        )
        .await
        .unwrap()
        .tokens
        .is_empty()
    );
}

both_backends!(last_used_never_moves_backwards);
async fn last_used_never_moves_backwards(b: Backend) {
    let s = &b.store;
    let (r, h) = record("demo", "a");
    s.insert(&r, &h).await.unwrap();
    s.record_last_used(&[(r.id.clone(), 500)]).await.unwrap();
    s.record_last_used(&[(r.id.clone(), 400), ("tkn_0000000000000000".into(), 9)])
        .await
        .unwrap();
    assert_eq!(s.get(&r.id).await.unwrap().unwrap().last_used_at, Some(500));
    assert!(
        s.get("tkn_0000000000000000").await.unwrap().is_none(),
        "no record is created by a stray id"
    );
    s.record_last_used(&[]).await.unwrap();
}

#[tokio::test]
async fn sqlite_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (r, h) = record("demo", "a");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.insert(&r, &h).await.unwrap();
        s.record_last_used(&[(r.id.clone(), 500)]).await.unwrap();
        s.revoke(&r.id, 600).await.unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let got = s.get(&r.id).await.unwrap().unwrap();
    assert_eq!((got.last_used_at, got.revoked_at), (Some(500), Some(600)));
    assert_eq!(s.revocation_seq().await.unwrap(), 1);
}

#[tokio::test]
async fn redis_keeps_acknowledged_revocations_across_a_crash() {
    let mut b = redis().await;
    let (r, h) = record("demo", "a");
    b.store.insert(&r, &h).await.unwrap();
    b.store.revoke(&r.id, 600).await.unwrap().unwrap();
    // kill -9: only the append-only file survives.
    b.redis.as_mut().unwrap().restart().await;
    let s = RedisStore::connect(&b.redis.as_ref().unwrap().url(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(s.find_by_hash(&h).await.unwrap().unwrap().revoked_at, Some(600));
    assert_eq!(s.revocation_seq().await.unwrap(), 1);
    assert_eq!(s.revocations_since(0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn redis_reports_a_truncated_revocation_log() {
    let b = redis().await;
    let (r, h) = record("demo", "a");
    b.store.insert(&r, &h).await.unwrap();
    b.store.revoke(&r.id, 600).await.unwrap().unwrap();
    let mut c = b.redis.as_ref().unwrap().conn().await;
    let _: () = redis::cmd("DEL").arg("portcullis:revocations").query_async(&mut c).await.unwrap();
    assert!(matches!(b.store.revocations_since(0, 10).await, Err(StoreError::LogTruncated)));
    assert!(
        b.store.revocations_since(1, 10).await.unwrap().is_empty(),
        "nothing missed after the latest"
    );
}

#[tokio::test]
async fn redis_unreachable_is_an_error_not_a_miss() {
    let mut b = redis().await;
    let (r, h) = record("demo", "a");
    b.store.insert(&r, &h).await.unwrap();
    b.redis.as_mut().unwrap().kill();
    assert!(matches!(b.store.find_by_hash(&h).await, Err(StoreError::Unavailable(_))));
    assert!(b.store.ping().await.is_err());
}

/// Acknowledgements are counted down in Redis, and only the last one is
/// announced (`d:{seq}`): two messages per instance per revocation, not one
/// per instance pair (benches/fleet.rs, docs/scaling.md).
#[tokio::test]
async fn redis_announces_a_revocation_once_every_receiver_has_acknowledged_it() {
    use futures_util::StreamExt;
    use portcullis::store::Pushed;
    let b = redis().await;
    let store = RedisStore::connect(&b.redis.as_ref().unwrap().url(), Duration::from_secs(2))
        .await
        .unwrap();
    let (mut one, mut two) = (store.subscribe().await.unwrap(), store.subscribe().await.unwrap());
    let mut c = b.redis.as_ref().unwrap().conn().await;
    // One instance's acknowledgement in the former design: never taken for
    // "all applied", which would end a revoke call's wait too early.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(portcullis::store::redis::channel())
        .arg("a:1:someinstance")
        .query_async(&mut c)
        .await
        .unwrap();
    let (r, h) = record("demo", "a");
    b.store.insert(&r, &h).await.unwrap();
    let revoked = b.store.revoke(&r.id, 600).await.unwrap().unwrap();
    assert_eq!((revoked.seq, revoked.receivers), (1, 2));
    for s in [&mut one, &mut two] {
        assert_eq!(s.next().await, Some(Pushed::Revoked(Revocation { seq: 1, hash: h })));
    }
    let left = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            let v: Option<i64> = redis::cmd("HGET")
                .arg("portcullis:revocations:acks")
                .arg(1)
                .query_async(&mut c)
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(left(&mut c).await, Some(2));
    store.acknowledge(1).await.unwrap();
    assert_eq!(left(&mut c).await, Some(1), "one of two acknowledged");
    store.acknowledge(1).await.unwrap();
    assert_eq!(left(&mut c).await, None, "the counter is gone with the last acknowledgement");
    for s in [&mut one, &mut two] {
        assert_eq!(
            s.next().await,
            Some(Pushed::Applied { seq: 1 }),
            "announced after the last, and only then"
        );
    }
    // A late acknowledgement does not bring the counter back.
    store.acknowledge(1).await.unwrap();
    assert_eq!(left(&mut c).await, None);

    // A counter nobody finishes (an instance died before acknowledging) is
    // dropped by the revocation 1024 later: the hash stays bounded.
    let (r2, h2) = record("demo", "b");
    b.store.insert(&r2, &h2).await.unwrap();
    assert_eq!(b.store.revoke(&r2.id, 700).await.unwrap().unwrap().seq, 2);
    assert_eq!(
        redis::cmd("HGET")
            .arg("portcullis:revocations:acks")
            .arg(2)
            .query_async::<Option<i64>>(&mut c)
            .await
            .unwrap(),
        Some(2)
    );
    let _: () = redis::cmd("SET")
        .arg("portcullis:revocations:seq")
        .arg(1025)
        .query_async(&mut c)
        .await
        .unwrap();
    let (r3, h3) = record("demo", "c");
    b.store.insert(&r3, &h3).await.unwrap();
    assert_eq!(b.store.revoke(&r3.id, 800).await.unwrap().unwrap().seq, 1026);
    assert_eq!(
        redis::cmd("HGET")
            .arg("portcullis:revocations:acks")
            .arg(2)
            .query_async::<Option<i64>>(&mut c)
            .await
            .unwrap(),
        None
    );
}
