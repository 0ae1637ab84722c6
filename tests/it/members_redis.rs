//! Members on Redis (docs/members.md): a link made on one instance signs in
//! on another, removal there ends the session and the tokens at once; and
//! the `MemberStore` contract on both SQLite and Redis.

use std::path::Path;

use http::Method;
use portcullis::app;
use portcullis::config::Config;
use serde_json::json;

use crate::harness::*;
use crate::members::{Member, follow_at, invite_at, origin};

#[tokio::test]
async fn on_redis_a_link_made_on_one_instance_signs_in_on_another_and_removal_ends_it_there() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"http://gateway.test\"\nshutdown_grace_ms = 500\n\
         [store]\nbackend = \"redis\"\nurl = \"{}\"\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
        redis.url(),
        up.url
    );
    let start = || async {
        app::start(Config::from_toml(Path::new("c.toml"), &text, &|_| None).unwrap())
            .await
            .unwrap()
    };
    let (a, b) = (start().await, start().await);
    let req = portcullis::auth::lifecycle::NewTokenRequest {
        name: "cluster-admin".into(),
        kind: Some(portcullis::token::TokenKind::Admin),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (admin, _) = portcullis::auth::lifecycle::create(Some(&a.state.verifier), &a.state.store, req, portcullis::token::now_unix())
        .await
        .unwrap();
    let (link, v) = invite_at(&a.admin_addr.to_string(), &admin, "demo", "hal@example.com", "member").await;
    let id = v["member"]["id"].as_str().unwrap().to_string();
    // Duplicates are refused on Redis too.
    let r = send(
        Method::POST,
        &format!("http://{}/v1/workspaces/demo/members", a.admin_addr),
        &[("authorization", &format!("Bearer {admin}")), ("content-type", "application/json")],
        json!({"email": "HAL@example.com", "role": "owner"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 409);
    // Redis holds the link under the hash of its code only.
    let code_hex = link.rsplit('/').next().unwrap();
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("portcullis:*").query_async(&mut c).await.unwrap();
    assert!(keys.iter().all(|k| !k.contains(code_hex)), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("portcullis:signin:")));
    // Used on B; used again on A: 410.
    let m = follow_at(&b.data_addr.to_string(), &link).await;
    let r = send(Method::POST, &format!("http://{}{link}", a.data_addr), &[], "").await;
    assert_eq!(r.status, 410);
    let (raw, _) = m.new_token("hal's").await;
    let on_a = Member {
        base: origin(&a.data_addr.to_string()),
        cookie: m.cookie.clone(),
        csrf: m.csrf.clone(),
    };
    assert_eq!(on_a.get("/me").await.status, 200, "the session is served by every instance");
    // Removed on A: B refuses the session and the token at once.
    let r = send(
        Method::DELETE,
        &format!("http://{}/v1/workspaces/demo/members/{id}", a.admin_addr),
        &[("authorization", &format!("Bearer {admin}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(m.get("/me").await.status, 401);
    let r = send(
        Method::POST,
        &format!("http://{}/ws/demo", b.data_addr),
        &[
            ("authorization", &format!("Bearer {raw}")),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        echo_call(1, "x"),
    )
    .await;
    assert_eq!(r.status, 401);
    for r in [a, b] {
        r.shutdown();
        r.wait().await;
    }
}

/// The store's side, on SQLite and on Redis: one winner among concurrent
/// uses of a link, states after use and expiry, unique emails, deletion
/// taking sessions and links with it.
async fn member_store_contract(s: &dyn portcullis::store::members::MemberStore) {
    use portcullis::store::members::{LinkRecord, LinkState, MemberRecord, MemberSessionRecord, Role};
    let now = portcullis::token::now_unix();
    let m = MemberRecord {
        id: "mem_contract000001".into(),
        workspace: "w".into(),
        email: "kim@example.com".into(),
        name: None,
        role: Role::Member,
        created_at: now,
    };
    s.insert_member(&m).await.unwrap();
    let dup = MemberRecord {
        id: "mem_contract000002".into(),
        ..m.clone()
    };
    assert!(matches!(
        s.insert_member(&dup).await,
        Err(portcullis::store::StoreError::Conflict(_))
    ));
    // Another workspace may have the same address.
    let other = MemberRecord {
        id: "mem_contract000003".into(),
        workspace: "w2".into(),
        ..m.clone()
    };
    s.insert_member(&other).await.unwrap();
    assert_eq!(s.member_by_email("w", "kim@example.com").await.unwrap(), Some(m.clone()));
    assert_eq!(
        s.get_member("w2", &m.id).await.unwrap(),
        None,
        "ids are looked up within their workspace"
    );
    let link = LinkRecord {
        workspace: "w".into(),
        member_id: m.id.clone(),
        created_at: now,
        expires_at: now + 60,
    };
    s.create_link(&[1; 32], &link).await.unwrap();
    assert_eq!(s.peek_link(&[1; 32], now).await.unwrap(), LinkState::Valid(link.clone()));
    let results = futures_util::future::join_all((0..8).map(|_| s.consume_link(&[1; 32], now))).await;
    let winners = results.iter().filter(|r| matches!(r, Ok(LinkState::Valid(_)))).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(LinkState::Valid(_)) | Ok(LinkState::Used))));
    assert_eq!(s.peek_link(&[1; 32], now).await.unwrap(), LinkState::Used);
    s.create_link(&[2; 32], &link).await.unwrap();
    assert_eq!(s.consume_link(&[2; 32], now + 60).await.unwrap(), LinkState::Expired);
    assert_eq!(s.consume_link(&[3; 32], now).await.unwrap(), LinkState::Unknown);
    let sess = MemberSessionRecord {
        workspace: "w".into(),
        member_id: m.id.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 600,
    };
    s.create_member_session(&[4; 32], &sess, 60).await.unwrap();
    s.touch_member_session(&[4; 32], now + 5, 60).await.unwrap();
    assert_eq!(s.get_member_session(&[4; 32]).await.unwrap().unwrap().last_seen_at, now + 5);
    s.create_link(&[5; 32], &link).await.unwrap();
    assert_eq!(s.delete_member("w", &m.id).await.unwrap(), Some(m.clone()));
    assert_eq!(s.delete_member("w", &m.id).await.unwrap(), None);
    assert_eq!(s.get_member("w", &m.id).await.unwrap(), None);
    assert_eq!(s.list_members("w").await.unwrap(), vec![]);
    assert_eq!(s.list_members("w2").await.unwrap(), vec![other]);
    // The address is free again.
    s.insert_member(&dup).await.unwrap();
    s.delete_member_session(&[4; 32]).await.unwrap();
    assert_eq!(s.get_member_session(&[4; 32]).await.unwrap(), None);
}

#[tokio::test]
async fn member_stores_keep_the_contract_on_sqlite_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = portcullis::store::sqlite::SqliteStore::open(&dir.path().join("m.db")).unwrap();
    member_store_contract(&sqlite).await;
    let redis = RedisServer::start().await;
    let store = portcullis::store::redis::RedisStore::connect(&redis.url(), std::time::Duration::from_secs(2))
        .await
        .unwrap();
    member_store_contract(&store).await;
}
