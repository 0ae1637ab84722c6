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

mod api;
mod cli;
mod store;

pub(super) const SECRET_ARGUMENT: &str = "s3cr3t-argument-7f3a9c";

pub(super) async fn events(gw: &Gateway, path: &str) -> Value {
    let r = gw.admin_call(Method::GET, path, None).await;
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Polls `path` until `pred` holds for its events (the writer task is
/// asynchronous); panics after 5 s.
pub(super) async fn wait_for(gw: &Gateway, path: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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

pub(super) fn of_type<'a>(list: &'a [Value], t: &str) -> Vec<&'a Value> {
    list.iter().filter(|e| e["type"] == t).collect()
}

pub(super) async fn admin_id(gw: &Gateway) -> String {
    let r = gw.admin_call(Method::GET, "/v1/tokens/self", None).await;
    r.json()["id"].as_str().unwrap().to_owned()
}

pub(super) fn assert_api_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
}

/// No raw token of either kind anywhere in `text` (events carry ids and
/// names, never a token or even its hint).
pub(super) fn assert_no_raw_token(text: &str) {
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
    // One call, then the writer is stuck in its store write (after its
    // 0.1 s of gathering); everything after that waits in the queue of one.
    assert_eq!(gw.post("demo", Some(&token), echo_call(100, "x")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
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
    // The queue holds one: the rest are dropped.
    assert!(dropped >= 27, "{stats}");
    assert_eq!(stats["queue_capacity"], 1);
    let metrics = send(Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains(&format!("portcullis_audit_dropped_total {dropped}")), "{text}");
    // What was not dropped is written once the store is free again.
    // (`wait_for` fails after 5 s if some call is neither.)
    wait_for(&gw, "/v1/workspaces/demo/audit?type=tool_call", |l| l.len() as u64 + dropped == 31).await;
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
