//! The control plane (contract §4) over real sockets.

use http::Method;
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::token::{TokenKind, now_unix};
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn create_returns_the_token_once_with_record_and_mcp_json() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let r = gw
        .admin_call(
            Method::POST,
            "/v1/workspaces/demo/tokens",
            Some(json!({"name": "laptop", "expires_in": 3600, "email": "a@b.example", "allowed_servers": ["main"]})),
        )
        .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("mwt_") && token.len() == 40);
    let info = &v["info"];
    assert!(info["id"].as_str().unwrap().starts_with("tkn_"));
    assert_eq!(info["name"], "laptop");
    assert_eq!(info["workspace"], "demo");
    assert_eq!(info["kind"], "workspace");
    assert_eq!(info["status"], "active");
    assert_eq!(info["hint"], format!("{}…", &token[..8]));
    assert_eq!(info["email"], "a@b.example");
    assert_eq!(info["allowed_servers"], json!(["main"]));
    assert!(info["created_by"].as_str().unwrap().starts_with("tkn_"));
    assert!(info["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(info.get("token").is_none());
    assert_eq!(
        v["mcp_json"],
        json!({"mcpServers": {"demo": {"url": "http://gateway.test/ws/demo", "headers": {"Authorization": format!("Bearer {token}")}}}})
    );

    // Never again: not in get, not in list.
    let id = info["id"].as_str().unwrap();
    let got = gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{id}"), None).await;
    assert_eq!(got.status, 200);
    assert!(!String::from_utf8_lossy(&got.body).contains(token));
    assert_eq!(got.json()["id"], id);
    let list = gw.admin_call(Method::GET, "/v1/workspaces/demo/tokens", None).await;
    assert!(!String::from_utf8_lossy(&list.body).contains(&token[4..]));
    // The database holds no raw token either.
    let db = std::fs::read(&gw.db).unwrap();
    let wal = std::fs::read(format!("{}-wal", gw.db.display())).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(36).any(|w| w == &token.as_bytes()[4..]),
            "raw token found in the database"
        );
    }
}

#[tokio::test]
async fn list_is_newest_first_paginated_and_keeps_revoked_and_expired() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = gw
            .admin_call(
                Method::POST,
                "/v1/workspaces/demo/tokens",
                Some(json!({"name": format!("t{i}"), "expires_in": if i == 1 { 1 } else { 0 }})),
            )
            .await;
        ids.push(r.json()["info"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(gw.revoke("demo", &ids[0]).await.status, 200);
    // Wait for t1's expiry instant itself (whole seconds, `expires_at <= now`).
    let expires_at = gw.state().store.get(&ids[1]).await.unwrap().unwrap().expires_at.unwrap();
    while now_unix() < expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut names = Vec::new();
    let mut statuses = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/workspaces/demo/tokens?page_size=2&cursor={c}"),
            None => "/v1/workspaces/demo/tokens?page_size=2".into(),
        };
        let v = gw.admin_call(Method::GET, &path, None).await.json();
        for t in v["tokens"].as_array().unwrap() {
            names.push(t["name"].as_str().unwrap().to_string());
            statuses.push(t["status"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["t4", "t3", "t2", "t1", "t0"]);
    assert_eq!(statuses, ["active", "active", "active", "expired", "revoked"]);
    for bad in ["page_size=0", "page_size=201", "page_size=abc", "cursor=zzz", "unknown=1"] {
        let r = gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens?{bad}"), None).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["code"], "bad_request");
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"expires_in": 10}), 400, "bad_request"),
        (json!({"name": "x", "color": "red"}), 400, "bad_request"),
        (json!({"name": "x", "expires_in": -5}), 400, "bad_request"),
        (json!({"name": "  "}), 422, "invalid_field"),
        (json!({"name": "x", "member_id": "m", "email": "a@b.c"}), 422, "invalid_field"),
        (json!({"name": "x", "email": "nope"}), 422, "invalid_field"),
        (json!({"name": "x", "allowed_servers": ["ghost"]}), 422, "invalid_field"),
        (json!({"name": "x", "allowed_servers": []}), 422, "invalid_field"),
        (json!({"name": "x", "expires_in": 999999999999u64}), 422, "invalid_field"),
        (json!({"name": "x", "requests_per_minute": 0}), 422, "invalid_field"),
    ];
    for (body, status, code) in cases {
        let r = gw.admin_call(Method::POST, "/v1/workspaces/demo/tokens", Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], code, "{body}");
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = send(
        Method::POST,
        &gw.admin_url("/v1/workspaces/demo/tokens"),
        &[("authorization", &format!("Bearer {}", gw.admin_token))],
        "{not json",
    )
    .await;
    assert_eq!(r.status, 400);
    let r = gw
        .admin_call(Method::POST, "/v1/workspaces/ghost/tokens", Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_str().unwrap()),
        (404, "workspace_not_found")
    );
    let r = gw
        .admin_call(Method::GET, "/v1/workspaces/demo/tokens/tkn_0000000000000000", None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_str().unwrap()),
        (404, "token_not_found")
    );
    let r = gw.admin_call(Method::DELETE, "/v1/workspaces/demo/tokens/garbage", None).await;
    assert_eq!(r.status, 404);
    let r = gw.admin_call(Method::GET, "/v1/nothing", None).await;
    assert_eq!(r.status, 404);
    let r = gw.admin_call(Method::PUT, "/v1/workspaces", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn admin_calls_need_an_admin_token() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (workspace_token, _) = gw.create_token("demo", json!({})).await;
    for token in [None, Some("mwa_garbage"), Some(workspace_token.as_str())] {
        let h: Vec<(&str, String)> = token.map(|t| ("authorization", format!("Bearer {t}"))).into_iter().collect();
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (m, p) in [
            (Method::GET, "/v1/workspaces"),
            (Method::GET, "/v1/workspaces/demo/tokens"),
            (Method::POST, "/v1/workspaces/demo/tokens"),
        ] {
            let r = send(m, &gw.admin_url(p), &h, r#"{"name":"x"}"#).await;
            assert_eq!(r.status, 401, "{p} with {token:?}");
            assert_eq!(r.json()["error"]["code"], "unauthorized");
        }
    }
    // Health, readiness and metrics are open.
    for p in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(send(Method::GET, &gw.admin_url(p), &[], "").await.status, 200, "{p}");
    }
}

#[tokio::test]
async fn workspace_scoped_admin_tokens_see_only_their_workspace() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let state = gw.state();
    let req = NewTokenRequest {
        name: "scoped".into(),
        kind: Some(TokenKind::Admin),
        workspace: Some("other".into()),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (scoped, scoped_rec) = lifecycle::create(Some(&state.verifier), &state.store, req, now_unix())
        .await
        .unwrap();
    let v = gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces", None).await.json();
    let slugs: Vec<_> = v["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["other"]);
    let r = gw
        .admin_call_as(&scoped, Method::POST, "/v1/workspaces/demo/tokens", Some(json!({"name": "x"})))
        .await;
    assert_eq!((r.status.as_u16(), r.json()["error"]["code"].as_str().unwrap()), (403, "forbidden"));
    let r = gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/demo/tokens", None).await;
    assert_eq!(r.status, 403);
    let r = gw
        .admin_call_as(&scoped, Method::POST, "/v1/workspaces/other/tokens", Some(json!({"name": "x"})))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["info"]["created_by"], scoped_rec.id);
    // A token of `demo` is not found under `other`.
    let (_, demo_id) = gw.create_token("demo", json!({})).await;
    assert_eq!(
        gw.admin_call(Method::GET, &format!("/v1/workspaces/other/tokens/{demo_id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin_call(Method::DELETE, &format!("/v1/workspaces/other/tokens/{demo_id}"), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn revoking_twice_is_fine_and_an_admin_token_cannot_revoke_itself() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (_, id) = gw.create_token("demo", json!({})).await;
    let first = gw.revoke("demo", &id).await.json();
    let second = gw.revoke("demo", &id).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["revoked_at"], first["revoked_at"]);
    let me = gw.admin_call(Method::GET, "/v1/tokens/self", None).await.json();
    let my_id = me["id"].as_str().unwrap();
    let r = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/demo/tokens/{my_id}"), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_str().unwrap()),
        (409, "cannot_revoke_self")
    );
}

#[tokio::test]
async fn tokens_self_on_both_listeners() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, id) = gw.create_token("demo", json!({"expires_in": 600})).await;
    for base in [format!("http://{}", gw.data), format!("http://{}", gw.admin)] {
        let r = send(
            Method::GET,
            &format!("{base}/v1/tokens/self"),
            &[("authorization", &format!("Bearer {t}"))],
            "",
        )
        .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["name"], "test", "the name comes from the store, not the index");
        assert_eq!(
            (v["valid"].as_bool(), v["id"].as_str(), v["kind"].as_str(), v["workspace"].as_str()),
            (Some(true), Some(id.as_str()), Some("workspace"), Some("demo"))
        );
        assert!(v["expires_at"].is_string());
        let r = send(Method::GET, &format!("{base}/v1/tokens/self"), &[], "").await;
        assert_eq!(r.status, 401);
    }
    let v = gw.admin_call(Method::GET, "/v1/tokens/self", None).await.json();
    assert_eq!(v["kind"], "admin");
    assert_eq!(v["workspace"], Value::Null);
    gw.revoke("demo", &id).await;
    let r = send(
        Method::GET,
        &format!("http://{}/v1/tokens/self", gw.data),
        &[("authorization", &format!("Bearer {t}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn workspaces_listing_shows_no_secrets() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let r = gw.admin_call(Method::GET, "/v1/workspaces", None).await;
    let text = String::from_utf8_lossy(&r.body);
    assert!(!text.contains(DEMO_KEY));
    let v = r.json();
    assert_eq!(v["workspaces"][0]["slug"], "demo");
    assert_eq!(v["workspaces"][0]["servers"][0]["url"], up.url.as_str());
    assert_eq!(v["workspaces"][0]["requests_per_minute"], 120);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({"requests_per_minute": 1})).await;
    gw.post("demo", Some(&t), echo_call(1, "x")).await;
    gw.post("demo", Some(&t), echo_call(2, "x")).await;
    let r = send(Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    assert!(r.header("content-type").starts_with("text/plain"));
    let text = String::from_utf8_lossy(&r.body).to_string();
    for line in [
        "portcullis_requests_total{workspace=\"demo\",status=\"200\"} 1",
        "portcullis_requests_total{workspace=\"demo\",status=\"429\"} 1",
        "portcullis_rate_limited_total{workspace=\"demo\"} 1",
        "portcullis_upstream_response_seconds_count{workspace=\"demo\",server=\"main\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    for prefix in [
        "portcullis_index_lookups_total{result=\"miss\"}",
        "portcullis_index_lookups_total{result=\"hit\"}",
        "portcullis_store_reads_total",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("missing {prefix}"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
    assert!(!text.contains("mwt_"));
}

#[tokio::test]
async fn a_workspace_scoped_admin_token_can_neither_read_nor_revoke_another_workspaces_token() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let state = gw.state();
    let req = NewTokenRequest {
        name: "scoped".into(),
        kind: Some(TokenKind::Admin),
        workspace: Some("other".into()),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (scoped, _) = lifecycle::create(Some(&state.verifier), &state.store, req, now_unix())
        .await
        .unwrap();
    let (demo_token, demo_id) = gw.create_token("demo", json!({})).await;
    let forbidden = json!({"error": {"code": "forbidden", "message": "this admin token is scoped to workspace `other`"}});
    // Named under its own workspace: the same 404 as an id that does not exist.
    for m in [Method::GET, Method::DELETE] {
        let r = gw
            .admin_call_as(&scoped, m.clone(), &format!("/v1/workspaces/other/tokens/{demo_id}"), None)
            .await;
        assert_eq!(r.status, 404, "{m}");
        assert_eq!(r.json()["error"]["code"], "token_not_found", "{m}");
        // Under the token's own workspace: 403, whatever the id.
        let r = gw
            .admin_call_as(&scoped, m.clone(), &format!("/v1/workspaces/demo/tokens/{demo_id}"), None)
            .await;
        assert_eq!((r.status.as_u16(), r.json()), (403, forbidden.clone()), "{m}");
    }
    // Nothing was revoked: the token still works, and is still listed as active.
    assert_eq!(gw.post("demo", Some(&demo_token), echo_call(1, "x")).await.status, 200);
    let r = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{demo_id}"), None)
        .await;
    assert_eq!(r.json()["status"], "active");
}

#[tokio::test]
async fn forged_pagination_cursors_never_reach_past_the_workspace() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let (_, own) = gw.create_token("other", json!({"name": "own"})).await;
    // Tokens of another workspace, created after (so with larger positions).
    for _ in 0..3 {
        gw.create_token("demo", json!({})).await;
    }
    // Cursors that are not positions at all: the contract's 400.
    for bad in ["zzz", "0", "-1", "1e3", "99999999999999999999999", "%20"] {
        let r = gw
            .admin_call(Method::GET, &format!("/v1/workspaces/other/tokens?cursor={bad}"), None)
            .await;
        assert_eq!(r.status, 400, "cursor={bad}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["error"]["code"], "bad_request", "cursor={bad}");
        assert!(v["error"]["message"].is_string(), "cursor={bad}");
    }
    // A forged cursor that is a plausible position (today cursors are row
    // positions; were they made opaque, a forged one would be refused): it
    // may only ever page through this workspace's own tokens.
    for forged in ["1", "2", "4", "1000", "9223372036854775807"] {
        let r = gw
            .admin_call(Method::GET, &format!("/v1/workspaces/other/tokens?cursor={forged}"), None)
            .await;
        match r.status.as_u16() {
            200 => {
                let v = r.json();
                for t in v["tokens"].as_array().unwrap() {
                    assert_eq!(t["workspace"], "other", "cursor={forged} leaked {t}");
                    assert_eq!(t["id"], own.as_str(), "cursor={forged}");
                }
            }
            400 => assert_eq!(r.json()["error"]["code"], "bad_request", "cursor={forged}"),
            s => panic!("cursor={forged}: {s} {}", String::from_utf8_lossy(&r.body)),
        }
    }
}
