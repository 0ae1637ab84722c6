//! Two instances sharing a private redis-server: every step of the flow on
//! either instance (the sign-in, the signed consent form, the code, the
//! refresh tokens and the grants are all in Redis; the keys derive from the
//! store's shared secret), and a refresh token reused on one instance ends
//! the grant's access token on the other at once.

use std::path::Path;
use std::sync::Arc;

use portcullis::app;
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::config::Config;
use portcullis::token::{TokenKind, now_unix};

use super::*;

async fn instance(text: &str, admin_token: &str) -> Gateway {
    let config = Config::from_toml(Path::new("cluster.toml"), text, &|_| None).unwrap();
    let running = app::start(config).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !running.state.verifier.is_trusted() {
        assert!(std::time::Instant::now() < deadline, "instance never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Gateway {
        data: running.data_addr,
        admin: running.admin_addr,
        running: Some(running),
        admin_token: admin_token.to_string(),
        db: Default::default(),
        config_text: text.to_string(),
        dir: Arc::new(tempfile::tempdir().unwrap()),
    }
}

#[tokio::test]
async fn the_flow_spans_instances_and_reuse_revokes_everywhere() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"http://gateway.test\"\nshutdown_grace_ms = 1000\n\
         [store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout_ms = 500\n[oauth]\nenabled = true\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
        redis.url(),
        up.url
    );
    let mut a = instance(&text, "").await;
    let (admin_token, _) = lifecycle::create(
        Some(&a.state().verifier),
        &a.state().store,
        NewTokenRequest {
            name: "admin".into(),
            kind: Some(TokenKind::Admin),
            created_by: "bootstrap".into(),
            ..Default::default()
        },
        now_unix(),
    )
    .await
    .unwrap();
    a.admin_token = admin_token.clone();
    let b = instance(&text, &admin_token).await;

    // Invited on A, signed in on B; registered on A, consent page on B,
    // Allow on A, code exchanged on B.
    let link = invite(&a, "demo", "ann@example.com").await;
    let cookie = member_cookie(&follow_link(&b, &link, None).await);
    let client_id = register_client(&a).await;
    let (verifier, challenge) = pkce();
    let (_, request, sig) = consent_page(&b, &cookie, &authorize_url(&b, &client_id, &challenge, "x", RESOURCE)).await;
    let r = consent_post(
        &a,
        &cookie,
        &[("request", &request), ("sig", &sig), ("decision", "allow"), ("server_main", "on")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let code = query_param(r.header("location"), "code").unwrap();
    let r = exchange(&b, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let refresh1 = r.json()["refresh_token"].as_str().unwrap().to_string();
    // The code is spent for A too.
    assert_oauth_error(&exchange(&a, &client_id, &code, &verifier).await, 400, "invalid_grant");
    // That reuse revoked the grant: the access token is refused on both.
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    assert_refused(&call(&a, &access).await);
    assert_refused(&call(&b, &access).await);
    assert_oauth_error(&refresh(&b, &client_id, &refresh1).await, 400, "invalid_grant");

    // A second grant: refresh on A, reuse on B, refused on A at once.
    let (code, verifier) = authorize(&b, &cookie, &client_id, &["main"]).await;
    let v = exchange(&a, &client_id, &code, &verifier).await.json();
    let refresh1 = v["refresh_token"].as_str().unwrap().to_string();
    let v = refresh(&a, &client_id, &refresh1).await.json();
    let access2 = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(&a, &access2).await.status, 200);
    assert_eq!(call(&b, &access2).await.status, 200);
    assert_oauth_error(&refresh(&b, &client_id, &refresh1).await, 400, "invalid_grant");
    assert_refused(&call(&a, &access2).await);
    assert_refused(&call(&b, &access2).await);
}
