//! The grant store's contract on both backends: grants listed by member and
//! workspace, revocation, the token list bounded, and one-time secrets
//! spent atomically (exactly one of many concurrent consumers sees a
//! fresh secret; the rest see reuse), expired ones unknown.

use std::sync::Arc;

use portcullis::store::TokenStore;
use portcullis::store::grants::{Consumed, Grant, MAX_TOKENS_PER_GRANT, Secret, SecretKind};
use portcullis::token::{self, now_unix};

use crate::harness::RedisServer;

fn grant(id: &str, member: &str, ws: &str, at: i64) -> Grant {
    Grant {
        id: id.into(),
        client_id: "mcc_x".into(),
        client_name: "App".into(),
        member_id: member.into(),
        email: None,
        workspace: ws.into(),
        servers: Some(vec!["a".into()]),
        created_at: at,
        last_used_at: None,
        revoked_at: None,
    }
}

async fn contract(store: Arc<dyn TokenStore>) {
    let g = store.grants().expect("the store keeps grants");
    let now = now_unix();
    g.create_grant(&grant("grt_1", "m1", "demo", now - 10)).await.unwrap();
    g.create_grant(&grant("grt_2", "m1", "other", now - 5)).await.unwrap();
    g.create_grant(&grant("grt_3", "m2", "demo", now)).await.unwrap();
    let ids = |v: Vec<Grant>| v.into_iter().map(|g| g.id).collect::<Vec<_>>();
    assert_eq!(ids(g.list_grants(Some("m1"), None).await.unwrap()), ["grt_2", "grt_1"]);
    assert_eq!(ids(g.list_grants(None, Some("demo")).await.unwrap()), ["grt_3", "grt_1"]);
    assert_eq!(ids(g.list_grants(Some("m1"), Some("demo")).await.unwrap()), ["grt_1"]);
    assert_eq!(g.get_grant("grt_1").await.unwrap().unwrap().servers, Some(vec!["a".to_string()]));
    assert!(g.get_grant("grt_nope").await.unwrap().is_none());

    g.touch_grant("grt_1", now).await.unwrap();
    let r = g.revoke_grant("grt_1", now + 1).await.unwrap().unwrap();
    assert_eq!((r.revoked_at, r.last_used_at), (Some(now + 1), Some(now)));
    let r = g.revoke_grant("grt_1", now + 9).await.unwrap().unwrap();
    assert_eq!(r.revoked_at, Some(now + 1), "the first revocation time is kept");
    assert!(g.revoke_grant("grt_nope", now).await.unwrap().is_none());

    for i in 0..MAX_TOKENS_PER_GRANT + 3 {
        g.add_grant_token("grt_2", &format!("tkn_{i}")).await.unwrap();
    }
    let t = g.grant_tokens("grt_2").await.unwrap();
    assert_eq!(t.len(), MAX_TOKENS_PER_GRANT);
    assert_eq!(t[0], format!("tkn_{}", MAX_TOKENS_PER_GRANT + 2), "newest first");

    // One-time secrets: many concurrent consumers, one fresh.
    let s = token::generate_refresh();
    let secret = Secret {
        kind: SecretKind::Refresh,
        grant_id: "grt_2".into(),
        payload: "mcc_x".into(),
        expires_at: now + 60,
    };
    g.put_secret(&s.hash, &secret).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        let hash = s.hash;
        tasks.push(tokio::spawn(async move {
            store.grants().unwrap().consume_secret(&hash, now).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        match t.await.unwrap() {
            Consumed::Fresh(got) => {
                assert_eq!(got, secret);
                fresh += 1;
            }
            Consumed::Reused { kind, grant_id } => assert_eq!((kind, grant_id.as_str()), (SecretKind::Refresh, "grt_2")),
            Consumed::Unknown => panic!("a stored secret is never unknown"),
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(g.consume_secret(&token::hash("mwr_other"), now).await.unwrap(), Consumed::Unknown);
    // Expired: unknown.
    let c = token::generate_refresh();
    g.put_secret(
        &c.hash,
        &Secret {
            expires_at: now + 2,
            kind: SecretKind::Code,
            ..secret.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(g.consume_secret(&c.hash, now + 2).await.unwrap(), Consumed::Unknown);
}

#[tokio::test]
async fn grants_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = portcullis::store::sqlite::SqliteStore::open(&dir.path().join("t.db")).unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test]
async fn grants_on_redis() {
    let redis = RedisServer::start().await;
    let store = portcullis::store::redis::RedisStore::connect(&redis.url(), std::time::Duration::from_secs(2))
        .await
        .unwrap();
    contract(Arc::new(store)).await;
}
