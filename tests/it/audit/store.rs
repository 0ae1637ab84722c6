//! Where the trail is kept: retention in SQLite, and the Redis streams shared
//! by several instances.

#[allow(unused_imports)]
use super::*;

#[tokio::test]
async fn retention_deletes_by_age_and_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let audit = store.audit().unwrap();
    let now = portcullis::audit::now_ms();
    let mut batch = Vec::new();
    for i in 0..10 {
        let mut e = AuditEvent::new(EventType::ToolCall, now - (10 - i) * 86_400_000);
        e.workspace = Some("demo".into());
        e.tool = Some(format!("t{i}"));
        batch.push(e);
    }
    let stored = audit.append(batch, 0).await.unwrap();
    assert!(stored.iter().all(|e| e.id.starts_with("evt_")));
    let page = |n| AuditQuery {
        workspace: Some("demo".into()),
        page_size: n,
        ..AuditQuery::default()
    };
    // Older than 5.5 days: t0..t4 go.
    let deleted = audit
        .prune(
            Retention {
                before: Some(now - 5 * 86_400_000 - 43_200_000),
                max_events: 0,
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    // At most 3: the oldest of the rest go.
    audit
        .prune(
            Retention {
                before: None,
                max_events: 3,
            },
            &[],
        )
        .await
        .unwrap();
    let left = audit.page(&page(100)).await.unwrap();
    let tools: Vec<_> = left.events.iter().map(|e| e.tool.clone().unwrap()).collect();
    assert_eq!(tools, ["t9", "t8", "t7"]);
}

#[tokio::test]
async fn the_redis_store_keeps_the_trail_for_every_instance() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 1000\n\
         [store]\nbackend = \"redis\"\nurl = \"{}\"\n\
         [audit]\nmax_events = 1000\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
        redis.url(),
        up.url
    );
    let mut instances = Vec::new();
    for _ in 0..2 {
        let config = portcullis::config::Config::from_toml(std::path::Path::new("t.toml"), &text, &|_| None).unwrap();
        instances.push(portcullis::app::start(config).await.unwrap());
    }
    let state = &instances[0].state;
    let req = portcullis::auth::lifecycle::NewTokenRequest {
        name: "admin".into(),
        kind: Some(portcullis::token::TokenKind::Admin),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (admin, _) = portcullis::auth::lifecycle::create(Some(&state.verifier), &state.store, req, portcullis::token::now_unix())
        .await
        .unwrap();
    let auth = format!("Bearer {admin}");
    let admin_get = |i: usize, path: String| {
        let url = format!("http://{}{path}", instances[i].admin_addr);
        let auth = auth.clone();
        async move {
            let r = send(Method::GET, &url, &[("authorization", &auth)], "").await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()
        }
    };
    let url = format!("http://{}/v1/workspaces/demo/tokens", instances[1].admin_addr);
    let r = send(
        Method::POST,
        &url,
        &[("authorization", &auth), ("content-type", "application/json")],
        json!({"name": "r"}).to_string(),
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let mut request_ids = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        for n in 0..3 {
            let r = send(
                Method::POST,
                &format!("http://{}/ws/demo", inst.data_addr),
                &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
                echo_call((i * 10 + n) as i64, SECRET_ARGUMENT),
            )
            .await;
            assert_eq!(r.status, 200);
            request_ids.push(r.header("x-request-id").to_owned());
        }
    }
    // Both instances' events, read from either, unique ids, newest first;
    // walked in pages of one.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = admin_get(0, "/v1/workspaces/demo/audit?type=tool_call".into()).await;
        if v["events"].as_array().unwrap().len() == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = admin_get(1, format!("/v1/workspaces/demo/audit?page_size=1&cursor={cursor}")).await;
        seen.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "6 tool calls and the token's creation: {seen:#?}");
    assert_eq!(seen[6]["type"], "token_created");
    let mut ids: Vec<_> = seen.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);
    let mut recorded: Vec<_> = seen[..6].iter().map(|e| e["request_id"].as_str().unwrap().to_owned()).collect();
    recorded.sort();
    request_ids.sort();
    assert_eq!(recorded, request_ids);
    let global = admin_get(0, "/v1/audit".into()).await;
    assert_eq!(global["events"].as_array().unwrap().len(), 8, "plus the admin token: {global:#}");
    assert!(!global.to_string().contains(SECRET_ARGUMENT));
    assert_no_raw_token(&global.to_string());
    let bad = send(
        Method::GET,
        &format!(
            "http://{}/v1/workspaces/demo/audit?cursor={}",
            instances[0].admin_addr,
            global["next_cursor"].as_str().unwrap_or("eA")
        ),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_api_error(&bad, 400);

    // Retention: at most 3 per stream, then nothing older than now.
    let audit = instances[0].state.store.audit().unwrap();
    audit
        .prune(
            Retention {
                before: None,
                max_events: 3,
            },
            &["demo".into()],
        )
        .await
        .unwrap();
    let global = admin_get(0, "/v1/audit".into()).await;
    assert_eq!(global["events"].as_array().unwrap().len(), 3, "{global:#}");
    let ws = admin_get(0, "/v1/workspaces/demo/audit".into()).await;
    assert_eq!(ws["events"].as_array().unwrap().len(), 3);
    audit
        .prune(
            Retention {
                before: Some(portcullis::audit::now_ms() + 1000),
                max_events: 0,
            },
            &["demo".into()],
        )
        .await
        .unwrap();
    assert_eq!(admin_get(1, "/v1/audit".into()).await["events"], json!([]));
    assert_eq!(admin_get(1, "/v1/workspaces/demo/audit".into()).await["events"], json!([]));
    for r in instances {
        r.shutdown();
        r.wait().await;
    }
}
