//! Process lifecycle: restart, offline revocation reaching a running gateway,
//! graceful shutdown with an open stream, and `last_used_at` batching.

use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use portcullis::store::TokenStore;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn restart_keeps_tokens_and_revocations() {
    let up = DemoUpstream::start().await;
    let mut gw = Setup::new(&up.url).start().await;
    let (kept, kept_id) = gw.create_token("demo", json!({})).await;
    let (revoked, revoked_id) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&kept), echo_call(1, "x")).await.status, 200);
    gw.revoke("demo", &revoked_id).await;
    gw.restart().await;
    assert_eq!(gw.post("demo", Some(&kept), echo_call(2, "x")).await.status, 200);
    assert_unauthorized(&gw.post("demo", Some(&revoked), echo_call(3, "x")).await, false);
    // The graceful stop flushed last_used_at.
    let rec = gw.state().store.get(&kept_id).await.unwrap().unwrap();
    assert!(rec.last_used_at.is_some());
    assert!(
        gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{kept_id}"), None)
            .await
            .json()["last_used_at"]
            .is_string()
    );
}

#[tokio::test]
async fn an_offline_revocation_reaches_the_running_gateway_within_the_poll_interval() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).server("revocation_poll_ms = 100").start().await;
    let (t, id) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&t), echo_call(1, "x")).await.status, 200);
    // Another process revokes directly in the store (what `admin token revoke` does).
    let other = portcullis::store::sqlite::SqliteStore::open(&gw.db).unwrap();
    let revoked_at = Instant::now();
    other.revoke(&id, portcullis::token::now_unix()).await.unwrap().unwrap();
    loop {
        let r = gw.post("demo", Some(&t), echo_call(2, "x")).await;
        if r.status == 401 {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "offline revocation not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn last_used_is_written_in_batches_not_per_request() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).server("last_used_flush_ms = 300").start().await;
    let (t, id) = gw.create_token("demo", json!({})).await;
    for i in 0..5 {
        gw.post("demo", Some(&t), echo_call(i, "x")).await;
    }
    let store = &gw.state().store;
    let deadline = Instant::now() + Duration::from_secs(3);
    while store.get(&id).await.unwrap().unwrap().last_used_at.is_none() {
        assert!(Instant::now() < deadline, "last_used_at never flushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `portcullis serve` as a child process on its own SQLite file.
struct ServeProcess {
    child: tokio::process::Child,
    config: std::path::PathBuf,
    db: std::path::PathBuf,
    data: u16,
    admin_base: String,
    admin_token: String,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    async fn start(upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (data, admin) = (free_port(), free_port());
        let db = dir.path().join("p.db");
        let config = dir.path().join("p.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{data}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nshutdown_grace_ms = 10000\n[store]\npath = \"{}\"\n[[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"{upstream}\"\nheaders = {{ Authorization = \"Bearer ${{KEY}}\" }}\n",
                db.display()
            ),
        )
        .unwrap();
        // Bootstrap offline, then start the real binary.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["admin", "token", "create", "--name", "a", "--json", "--config"])
            .arg(&config)
            .env("KEY", DEMO_KEY)
            .output()
            .unwrap();
        let admin_token = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let child = Self::spawn(&config).await;
        let p = ServeProcess {
            child,
            config,
            db,
            data,
            admin_base: format!("http://127.0.0.1:{admin}"),
            admin_token,
            _dir: dir,
        };
        p.wait_ready().await;
        p
    }

    async fn spawn(config: &std::path::Path) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(config)
            .env("KEY", DEMO_KEY)
            .env("PORTCULLIS_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = client()
                .request(
                    http::Request::get(format!("{}/readyz", self.admin_base))
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
                .await;
            if ok.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "serve did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn admin(&self, method: Method, path: &str, body: &str) -> Resp {
        send(
            method,
            &format!("{}{path}", self.admin_base),
            &[("authorization", &format!("Bearer {}", self.admin_token))],
            body.to_string(),
        )
        .await
    }

    async fn post(&self, token: &str) -> Resp {
        send(
            Method::POST,
            &format!("http://127.0.0.1:{}/ws/demo", self.data),
            &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
            echo_call(1, "x"),
        )
        .await
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_token_or_revocation() {
    let up = DemoUpstream::start().await;
    let mut p = ServeProcess::start(&up.url).await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        let v = p.admin(Method::POST, "/v1/workspaces/demo/tokens", r#"{"name":"t"}"#).await.json();
        let (t, id) = (
            v["token"].as_str().unwrap().to_string(),
            v["info"]["id"].as_str().unwrap().to_string(),
        );
        if i % 2 == 0 {
            assert_eq!(
                p.admin(Method::DELETE, &format!("/v1/workspaces/demo/tokens/{id}"), "")
                    .await
                    .status,
                200
            );
        }
        tokens.push((t, i % 2 == 0));
    }
    // SIGKILL right after the last acknowledged write: no graceful anything.
    p.child.start_kill().unwrap();
    p.child.wait().await.unwrap();
    p.child = ServeProcess::spawn(&p.config).await;
    p.wait_ready().await;
    for (t, revoked) in &tokens {
        let status = p.post(t).await.status;
        assert_eq!(status, if *revoked { 401 } else { 200 }, "revoked={revoked}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_open_stream_finish_flushes_and_exits_0() {
    // The upstream holds its result until released: the stream is certainly
    // still open when shutdown begins, whatever the machine's speed.
    let up = GatedSse::start().await;
    let p = ServeProcess::start(&up.url).await;
    let (admin_base, admin_token, data, db) = (p.admin_base.clone(), p.admin_token.clone(), p.data, p.db.clone());
    let mut child = p.child;
    let r = send(
        Method::POST,
        &format!("{admin_base}/v1/workspaces/demo/tokens"),
        &[("authorization", &format!("Bearer {admin_token}"))],
        r#"{"name":"t"}"#,
    )
    .await;
    let v = r.json();
    let (token, id) = (
        v["token"].as_str().unwrap().to_string(),
        v["info"]["id"].as_str().unwrap().to_string(),
    );

    // Open a stream; its first event arrives, its result is held back.
    let body = rpc(
        json!(1),
        "tools/call",
        json!({"name": "progress", "arguments": {}, "_meta": {"progressToken": 1}}),
    );
    let req = http::Request::post(format!("http://127.0.0.1:{data}/ws/demo"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let mut text = String::new();
    read_until(&mut stream, &mut text, |t| t.contains("progress")).await;

    // SIGTERM while the stream is open.
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Shutdown has begun once new connections are refused (polled: the
    // event, not a guessed delay; bounded as a hang guard).
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(("127.0.0.1", data)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");
    // Only now does the tool finish: the open stream must still deliver it.
    up.release.notify_one();
    while let Some(f) = stream.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&d).unwrap());
        }
    }
    assert!(text.contains("released"), "the open stream was cut: {text}");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // last_used_at was flushed on the way out (flush interval is 30 s).
    let store = portcullis::store::sqlite::SqliteStore::open(&db).unwrap();
    assert!(store.get(&id).await.unwrap().unwrap().last_used_at.is_some());
}
