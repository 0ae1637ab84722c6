//! The audit trail end to end (docs/audit.md): control-plane events with
//! their actor, `tool_call` events matching the response's request id and
//! never holding arguments, `revoked_token_refused` once per token, the
//! admin API's filters, pagination and refusals, the bounded queue's drops,
//! the JSON-lines sink, retention, the Redis backend and `audit tail`.

use std::time::{Duration, Instant};

use http::Method;
use portcullis::audit::{AuditEvent, AuditQuery, EventType};
use portcullis::store::TokenStore;
use portcullis::store::audit::Retention;
use portcullis::store::sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::harness::*;

const SECRET_ARGUMENT: &str = "s3cr3t-argument-7f3a9c";

async fn events(gw: &Gateway, path: &str) -> Value {
    let r = gw.admin_call(Method::GET, path, None).await;
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Polls `path` until `pred` holds for its events (the writer task is
/// asynchronous); panics after 5 s.
async fn wait_for(gw: &Gateway, path: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = events(gw, path).await;
        let list = v["events"].as_array().cloned().unwrap_or_default();
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{path}: condition never held; events: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn of_type<'a>(list: &'a [Value], t: &str) -> Vec<&'a Value> {
    list.iter().filter(|e| e["type"] == t).collect()
}

async fn admin_id(gw: &Gateway) -> String {
    let r = gw.admin_call(Method::GET, "/v1/tokens/self", None).await;
    r.json()["id"].as_str().unwrap().to_owned()
}

fn assert_api_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
}

/// No raw token of either kind anywhere in `text` (events carry ids and
/// names, never a token or even its hint).
fn assert_no_raw_token(text: &str) {
    assert!(!text.contains("mwt_") && !text.contains("mwa_"), "a token appears: {text}");
}

#[tokio::test]
async fn token_creation_and_revocation_are_recorded_with_their_actor() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let admin = admin_id(&gw).await;
    let (_, id) = gw.create_token("demo", json!({"name": "ci-bot", "member_id": "m-42"})).await;
    assert_eq!(gw.revoke("demo", &id).await.status, 200);
    // Revoking twice is not an error, and not a second event.
    assert_eq!(gw.revoke("demo", &id).await.status, 200);

    let v = events(&gw, "/v1/workspaces/demo/audit").await;
    let list = v["events"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v:#}");
    let (revoked, created) = (&list[0], &list[1]);
    assert_eq!(revoked["type"], "token_revoked", "newest first");
    assert_eq!(created["type"], "token_created");
    for e in [revoked, created] {
        assert_eq!(e["actor"], admin.as_str());
        assert_eq!(e["workspace"], "demo");
        assert_eq!(e["token_id"], id.as_str());
        assert_eq!(e["token_name"], "ci-bot");
        assert_eq!(e["member_id"], "m-42");
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        // Every key of the contract's shape is there.
        for k in [
            "id",
            "at",
            "type",
            "actor",
            "workspace",
            "token_id",
            "member_id",
            "server",
            "tool",
            "method",
            "status",
            "duration_ms",
            "request_id",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    assert_ne!(revoked["id"], created["id"]);
    assert!(revoked["at"].as_str().unwrap() >= created["at"].as_str().unwrap());
    assert_no_raw_token(&v.to_string());

    // The global listing also has the admin token the harness created.
    let all = events(&gw, "/v1/audit").await;
    let admin_created = of_type(all["events"].as_array().unwrap(), "admin_token_created");
    assert_eq!(admin_created.len(), 1, "{all:#}");
    assert_eq!(admin_created[0]["token_id"], admin.as_str());
    assert_eq!(admin_created[0]["actor"], "bootstrap");
    assert!(admin_created[0]["workspace"].is_null());
    assert_no_raw_token(&all.to_string());
}

#[tokio::test]
async fn tool_calls_are_recorded_with_the_request_id_and_never_their_arguments() {
    let up = DemoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("audit.jsonl");
    let gw = Setup::new(&up.url)
        .raw(&format!("[audit]\nsink = \"{}\"\n", sink.display()))
        .start()
        .await;
    let (token, id) = gw.create_token("demo", json!({"name": "agent", "member_id": "m-7"})).await;
    let r = gw.post("demo", Some(&token), echo_call(1, SECRET_ARGUMENT)).await;
    assert_eq!(r.status, 200);
    let request_id = r.header("x-request-id").to_owned();
    // Another method is not a tool call.
    let r = gw.post("demo", Some(&token), rpc(json!(2), "tools/list", json!({}))).await;
    assert_eq!(r.status, 200);

    let list = wait_for(&gw, "/v1/workspaces/demo/audit?type=tool_call", |l| !l.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let list2 = events(&gw, "/v1/workspaces/demo/audit?type=tool_call").await;
    assert_eq!(
        list2["events"].as_array().unwrap().len(),
        1,
        "tools/list is not a tool call: {list2:#}"
    );
    let e = &list[0];
    assert_eq!(e["token_id"], id.as_str());
    assert_eq!(e["token_name"], "agent");
    assert_eq!(e["member_id"], "m-7");
    assert_eq!(e["workspace"], "demo");
    assert_eq!(e["server"], "main");
    assert_eq!(e["tool"], "echo");
    assert_eq!(e["method"], "tools/call");
    assert_eq!(e["status"], 200);
    assert_eq!(e["request_id"], request_id.as_str());
    assert!(e["actor"].is_null());
    let ms = e["duration_ms"].as_f64().unwrap();
    assert!(ms > 0.0 && ms < 5000.0, "{ms}");

    // The secret argument is nowhere: not in the API, not in the sink, not
    // in the database file (nor its write-ahead log).
    let api = events(&gw, "/v1/audit").await.to_string();
    assert!(!api.contains(SECRET_ARGUMENT), "{api}");
    assert_no_raw_token(&api);
    let lines = std::fs::read_to_string(&sink).unwrap();
    assert!(!lines.contains(SECRET_ARGUMENT));
    assert_no_raw_token(&lines);
    for suffix in ["", "-wal"] {
        let mut p = gw.db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !bytes.windows(SECRET_ARGUMENT.len()).any(|w| w == SECRET_ARGUMENT.as_bytes()),
                "the argument reached {}",
                std::path::Path::new(&p).display()
            );
        }
    }

    // The sink holds the same events, one JSON object per line, with ids.
    let sunk: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let sunk_call = sunk.iter().find(|s| s["type"] == "tool_call").expect("tool_call in the sink");
    assert_eq!(sunk_call, e);
    assert!(sunk.iter().any(|s| s["type"] == "token_created" && s["token_id"] == id.as_str()));
    assert!(sunk.iter().all(|s| s["id"].as_str().is_some_and(|i| i.starts_with("evt_"))));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test]
async fn tool_calls_can_be_switched_off_while_control_events_stay() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).raw("[audit]\ntool_calls = false\n").start().await;
    let (token, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&token), echo_call(1, "x")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = events(&gw, "/v1/workspaces/demo/audit").await;
    let list = v["events"].as_array().unwrap();
    assert!(of_type(list, "tool_call").is_empty(), "{v:#}");
    assert_eq!(of_type(list, "token_created").len(), 1);
    let stats = events(&gw, "/v1/audit/stats").await;
    assert_eq!(stats["tool_calls"], false);
}

#[tokio::test]
async fn a_revoked_or_expired_token_is_recorded_once_not_per_request() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (revoked, revoked_id) = gw.create_token("demo", json!({"name": "gone"})).await;
    let (expiring, expiring_id) = gw.create_token("demo", json!({"name": "brief", "expires_in": 1})).await;
    assert_eq!(gw.post("demo", Some(&revoked), echo_call(1, "x")).await.status, 200);
    gw.revoke("demo", &revoked_id).await;
    for i in 0..5 {
        assert_eq!(gw.post("demo", Some(&revoked), echo_call(i, "x")).await.status, 401);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..5 {
        assert_eq!(gw.post("demo", Some(&expiring), echo_call(i, "x")).await.status, 401);
    }
    let path = "/v1/workspaces/demo/audit?type=revoked_token_refused";
    wait_for(&gw, path, |l| l.len() >= 2).await;
    // More refusals later record nothing more.
    for i in 0..3 {
        gw.post("demo", Some(&revoked), echo_call(i, "x")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list = events(&gw, path).await["events"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:#?}");
    for (id, name) in [(&revoked_id, "gone"), (&expiring_id, "brief")] {
        let e = list.iter().find(|e| e["token_id"] == id.as_str()).expect("one event per token");
        assert_eq!(e["token_name"], name);
        assert_eq!(e["status"], 401);
        assert_eq!(e["workspace"], "demo");
    }
    assert_no_raw_token(&serde_json::to_string(&list).unwrap());
}

#[tokio::test]
async fn filters_pagination_and_bad_input() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let member = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            gw.create_token("demo", json!({"name": format!("t{i}"), "member_id": member}))
                .await
                .1,
        );
    }
    gw.create_token("other", json!({})).await;

    // Pages of 2, newest first, covering all five without repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/workspaces/demo/audit?page_size=2".to_owned(),
            Some(c) => format!("/v1/workspaces/demo/audit?page_size=2&cursor={c}"),
        };
        let v = events(&gw, &path).await;
        let list = v["events"].as_array().unwrap();
        assert!(list.len() <= 2);
        seen.extend(list.iter().map(|e| e["token_id"].as_str().unwrap().to_owned()));
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "another workspace's events never show");

    let by_token = events(&gw, &format!("/v1/workspaces/demo/audit?token_id={}", ids[1])).await;
    assert_eq!(by_token["events"].as_array().unwrap().len(), 1);
    let odd = events(&gw, "/v1/workspaces/demo/audit?member_id=odd").await;
    assert_eq!(odd["events"].as_array().unwrap().len(), 2);
    let created = events(&gw, "/v1/workspaces/demo/audit?type=token_created").await;
    assert_eq!(created["events"].as_array().unwrap().len(), 5);
    let none = events(&gw, "/v1/workspaces/demo/audit?type=token_revoked").await;
    assert_eq!(none["events"], json!([]));
    assert_eq!(none["next_cursor"], Value::Null);
    let future = events(&gw, "/v1/workspaces/demo/audit?from=2999-01-01T00:00:00Z").await;
    assert_eq!(future["events"], json!([]));
    let past = events(&gw, "/v1/workspaces/demo/audit?to=2000-01-01T00:00:00Z").await;
    assert_eq!(past["events"], json!([]));
    let window = events(
        &gw,
        "/v1/workspaces/demo/audit?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00%2B01:00",
    )
    .await;
    assert_eq!(window["events"].as_array().unwrap().len(), 5);

    // A cursor of another workspace, or of the global listing, is refused.
    let other_cursor = events(&gw, "/v1/audit?page_size=1").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [
        "from=yesterday".to_owned(),
        "to=2026-13-01T00:00:00Z".to_owned(),
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
        "type=token_exploded".to_owned(),
        "page_size=0".to_owned(),
        "page_size=201".to_owned(),
        "page_size=100000000000000000000".to_owned(),
        "page_size=ten".to_owned(),
        "cursor=not-a-cursor".to_owned(),
        format!("cursor={other_cursor}"),
        "colour=blue".to_owned(),
    ] {
        let r = gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/audit?{bad}"), None).await;
        assert_api_error(&r, 400);
    }
    let demo_cursor = events(&gw, "/v1/workspaces/demo/audit?page_size=1").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/other/audit?cursor={demo_cursor}"), None)
        .await;
    assert_api_error(&r, 400);
    let r = gw.admin_call(Method::GET, "/v1/workspaces/nowhere/audit", None).await;
    assert_api_error(&r, 404);
    let r = send(Method::GET, &gw.admin_url("/v1/workspaces/demo/audit"), &[], "").await;
    assert_api_error(&r, 401);

    // A scoped admin token sees its workspace only, and not the global trail.
    let scoped = {
        let state = gw.state();
        let req = portcullis::auth::lifecycle::NewTokenRequest {
            name: "scoped".into(),
            kind: Some(portcullis::token::TokenKind::Admin),
            workspace: Some("other".into()),
            created_by: "bootstrap".into(),
            ..Default::default()
        };
        portcullis::auth::lifecycle::create(Some(&state.verifier), &state.store, req, portcullis::token::now_unix())
            .await
            .unwrap()
            .0
    };
    let r = gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/other/audit", None).await;
    assert_eq!(r.status, 200);
    let list = r.json()["events"].as_array().unwrap().clone();
    assert!(list.iter().all(|e| e["workspace"] == "other"), "{list:#?}");
    assert!(
        of_type(&list, "admin_token_created").len() == 1,
        "the scoped token's own creation: {list:#?}"
    );
    assert_api_error(
        &gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/demo/audit", None).await,
        403,
    );
    assert_api_error(&gw.admin_call_as(&scoped, Method::GET, "/v1/audit", None).await, 403);
    // A workspace token is no admin token.
    let (ws_token, _) = gw.create_token("demo", json!({})).await;
    assert_api_error(
        &gw.admin_call_as(&ws_token, Method::GET, "/v1/workspaces/demo/audit", None).await,
        401,
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_events_and_never_delays_a_request() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).raw("[audit]\nqueue_capacity = 1\n").start().await;
    let (token, _) = gw.create_token("demo", json!({"requests_per_minute": 100000})).await;
    // Stall the writer: hold SQLite's write lock from another connection,
    // so its next batch waits (for less than the store's 5 s busy timeout).
    let db = gw.db.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv_timeout(Duration::from_secs(4)).ok();
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        let r = gw.post("demo", Some(&token), echo_call(i, "x")).await;
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a request waited for the audit trail: {slowest:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    release_tx.send(()).unwrap();
    holder.join().unwrap();

    let stats = events(&gw, "/v1/audit/stats").await;
    let dropped = stats["dropped"].as_u64().unwrap();
    // The writer holds one event, the queue one more: the rest are dropped.
    assert!(dropped >= 27, "{stats}");
    assert_eq!(stats["queue_capacity"], 1);
    let metrics = send(Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains(&format!("portcullis_audit_dropped_total {dropped}")), "{text}");
    // What was not dropped is written once the store is free again.
    let list = wait_for(&gw, "/v1/workspaces/demo/audit?type=tool_call", |l| !l.is_empty()).await;
    assert_eq!(list.len() as u64 + dropped, 30, "every call either recorded or counted");
}

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
    for r in instances {
        r.shutdown();
        r.wait().await;
    }
}

#[tokio::test]
async fn audit_tail_prints_json_lines_and_follows() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (_, first) = gw.create_token("demo", json!({"name": "one"})).await;
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let admin_url = format!("http://{}", gw.admin);
    let out = tokio::process::Command::new(bin)
        .args(["audit", "tail", "--workspace", "demo", "--json"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["token_id"], first.as_str());
    assert_no_raw_token(&text);

    // Text, with a bad type: a usage of the API that fails with exit 1.
    let out = tokio::process::Command::new(bin)
        .args(["audit", "tail", "--type", "nope"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // --follow prints what happens after it started, once.
    let mut child = tokio::process::Command::new(bin)
        .args(["audit", "tail", "--follow", "--json", "--interval", "0.2"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut got = Vec::new();
    // The existing events first (the admin token and "one").
    for _ in 0..2 {
        let l = tokio::time::timeout(Duration::from_secs(5), reader.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    let (_, second) = gw.create_token("demo", json!({"name": "two"})).await;
    gw.revoke("demo", &second).await;
    for _ in 0..2 {
        let l = tokio::time::timeout(Duration::from_secs(5), reader.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    assert_eq!(got[2]["type"], "token_created");
    assert_eq!(got[2]["token_id"], second.as_str());
    assert_eq!(got[3]["type"], "token_revoked");
    // Nothing printed twice in the next polls.
    let more = tokio::time::timeout(Duration::from_millis(800), reader.next_line()).await;
    assert!(more.is_err(), "an event was printed again: {more:?}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_offline_admin_token_create_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            db.display()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "admin",
            "token",
            "create",
            "--name",
            "boot",
            "--workspace",
            "demo",
            "--json",
            "--config",
        ])
        .arg(&config)
        .env("PORTCULLIS_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["info"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = SqliteStore::open(&db).unwrap();
    let page = store
        .audit()
        .unwrap()
        .page(&AuditQuery {
            workspace: Some("demo".into()),
            page_size: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    let e = &page.events[0];
    assert_eq!(e.kind, EventType::AdminTokenCreated);
    assert_eq!(e.actor.as_deref(), Some("bootstrap"));
    assert_eq!(e.token_id.as_deref(), Some(id.as_str()));
    assert_eq!(e.token_name.as_deref(), Some("boot"));
}

#[tokio::test]
async fn an_aggregating_workspace_records_the_server_and_the_bare_tool_name() {
    let (a, b) = (DemoUpstream::start_open().await, DemoUpstream::start_open().await);
    let gw = Setup::new(&a.url)
        .server(&format!("session_keys = [\"{}\"]", "3".repeat(64)))
        .raw(&format!(
            "[[workspaces]]\nslug = \"team\"\n[[workspaces.servers]]\nname = \"alpha\"\nurl = \"{}\"\n[[workspaces.servers]]\nname = \"beta\"\nurl = \"{}\"\n",
            a.url, b.url
        ))
        .start()
        .await;
    let (token, id) = gw.create_token("team", json!({"name": "multi"})).await;
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", auth.as_str()),
    ];
    let init = rpc(
        json!(0),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}),
    );
    let r = send(Method::POST, &gw.ws_url("team"), &headers, init).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let session = r.header("mcp-session-id").to_owned();
    headers.push(("mcp-session-id", session.as_str()));
    let call = rpc(
        json!(1),
        "tools/call",
        json!({"name": "beta__echo", "arguments": {"text": SECRET_ARGUMENT}}),
    );
    let r = send(Method::POST, &gw.ws_url("team"), &headers, call).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ok_request = r.header("x-request-id").to_owned();
    let call = rpc(json!(2), "tools/call", json!({"name": "nowhere__echo", "arguments": {}}));
    let r = send(Method::POST, &gw.ws_url("team"), &headers, call).await;
    let failed_status = r.status.as_u16();
    assert!(failed_status >= 400, "an unknown tool fails: {failed_status}");

    let list = wait_for(&gw, "/v1/workspaces/team/audit?type=tool_call", |l| l.len() == 2).await;
    let (failed, ok) = (&list[0], &list[1]);
    assert_eq!(ok["server"], "beta");
    assert_eq!(ok["tool"], "echo");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["request_id"], ok_request.as_str());
    assert_eq!(ok["token_id"], id.as_str());
    assert!(failed["server"].is_null(), "{failed}");
    assert_eq!(failed["tool"], "nowhere__echo");
    assert_eq!(failed["status"], failed_status);
    assert!(!serde_json::to_string(&list).unwrap().contains(SECRET_ARGUMENT));
}
