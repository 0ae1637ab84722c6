//! The data plane over real sockets: every failure row of contract §3, and
//! what is (and is not) forwarded.

use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use portcullis::token::{self, TokenKind};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[tokio::test]
async fn a_valid_token_reaches_the_demo_upstream() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let init = gw
        .post(
            "demo",
            Some(&t),
            rpc(
                json!(1),
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            ),
        )
        .await;
    assert_eq!(init.status, 200);
    assert_eq!(init.json()["result"]["protocolVersion"], "2025-06-18");
    assert!(init.headers.contains_key("mcp-session-id"), "the upstream's session id passes back");
    let list = gw.post("demo", Some(&t), rpc(json!(2), "tools/list", json!({}))).await;
    let names: Vec<_> = list.json()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["echo", "add", "progress"]);
    let call = gw.post("demo", Some(&t), echo_call(3, "hello")).await;
    assert_eq!(call.json()["result"]["content"][0]["text"], "hello");
}

#[tokio::test]
async fn every_bad_credential_gets_the_same_401() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let (good, _) = gw.create_token("demo", json!({})).await;
    let (other_ws, _) = gw.create_token("other", json!({})).await;
    let (revoked, revoked_id) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.revoke("demo", &revoked_id).await.status, 200);
    let (expired, expired_id) = gw.create_token("demo", json!({"expires_in": 1})).await;
    let expires_at = gw
        .state()
        .store
        .get(&expired_id)
        .await
        .unwrap()
        .unwrap()
        .expires_at
        .expect("an expiry");
    // Valid until its expiry instant: a request answered wholly before it
    // (by the clock the gateway reads too) is served.
    let r = gw.post("demo", Some(&expired), echo_call(8, "x")).await;
    if token::now_unix() < expires_at {
        assert_eq!(r.status, 200, "refused before its expiry");
    }
    let unknown = token::generate(TokenKind::Workspace).raw;
    let mut bad_checksum = good.clone().into_bytes();
    bad_checksum[20] = if bad_checksum[20] == b'A' { b'B' } else { b'A' };
    let bad_checksum = String::from_utf8(bad_checksum).unwrap();
    let body = echo_call(9, "x");

    // No Authorization header: no `error` parameter (RFC 6750 §3.1).
    assert_unauthorized(&gw.post("demo", None, body.clone()).await, true);
    // The others are checked while the 1 s expiry runs out.
    for t in [
        "mwt_short",
        "Basic abc",
        &bad_checksum,
        &unknown,
        &revoked,
        &other_ws,
        gw.admin_token.as_str(),
    ] {
        assert_unauthorized(&gw.post("demo", Some(t), body.clone()).await, false);
    }
    // Not "Bearer": malformed.
    let r = send(Method::POST, &gw.ws_url("demo"), &[("authorization", "Token abc")], body.clone()).await;
    assert_unauthorized(&r, false);
    // Unknown slug, even with a valid token: 401, not 404 (no enumeration).
    assert_unauthorized(&gw.post("nope", Some(&good), body.clone()).await, false);
    assert_unauthorized(&gw.post("nope", None, body.clone()).await, true);
    // Wait for the expiry instant itself (whole seconds, `expires_at <= now`).
    while token::now_unix() < expires_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_unauthorized(&gw.post("demo", Some(&expired), body.clone()).await, false);
    // GET and DELETE need the token too.
    assert_unauthorized(&send(Method::GET, &gw.ws_url("demo"), &[], "").await, true);
    assert_unauthorized(&send(Method::DELETE, &gw.ws_url("demo"), &[], "").await, true);
    // The good token still works and nothing above echoed a token.
    assert_eq!(gw.post("demo", Some(&good), body).await.status, 200);
    let metrics = send(Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    for reason in [
        "missing",
        "malformed",
        "unknown",
        "revoked",
        "expired",
        "wrong_workspace",
        "wrong_kind",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("portcullis_auth_failures_total{{reason=\"{reason}\"}}")))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
    }
}

#[tokio::test]
async fn revocation_takes_effect_on_the_very_next_request() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    for i in 0..25 {
        let (t, id) = gw.create_token("demo", json!({})).await;
        assert_eq!(gw.post("demo", Some(&t), echo_call(i, "x")).await.status, 200);
        let r = gw.revoke("demo", &id).await;
        assert_eq!(r.status, 200);
        assert!(r.json()["revoked_at"].is_string());
        assert_eq!(r.json()["status"], "revoked");
        assert_unauthorized(&gw.post("demo", Some(&t), echo_call(i, "x")).await, false);
    }
}

#[tokio::test]
async fn the_upstream_sees_its_own_credentials_never_the_clients() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url)
        .server("allowed_origins = [\"https://app.example.com\"]")
        .start()
        .await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let auth = format!("Bearer {t}");
    // The client holds the upstream's session sealed for its token
    // (tests/it/isolation.rs); the upstream gets its own id back.
    let sealed = gw
        .post("demo", Some(&t), echo_call(0, "x"))
        .await
        .header("mcp-session-id")
        .to_owned();
    let r = send(
        Method::POST,
        &gw.ws_url("demo"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", &sealed),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-param-region", "eu"),
            ("last-event-id", "ev-7"),
            ("x-request-id", "client-req-42"),
            ("origin", "https://app.example.com"),
            ("cookie", "session=secret"),
            ("x-forwarded-for", "1.2.3.4"),
            ("host", "evil.example"),
        ],
        echo_call(1, "x"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-request-id"),
        "client-req-42",
        "the gateway's request id wins over the upstream's"
    );
    assert_eq!(r.header("mcp-session-id"), sealed, "the client's own id comes back");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    let h = &seen[1].headers;
    assert_eq!(h["authorization"], format!("Bearer {DEMO_KEY}"));
    assert_eq!(h["x-upstream-extra"], "configured");
    assert_eq!(h["host"], up.authority.as_str(), "Host is the upstream's own authority");
    for (k, v) in [
        ("mcp-session-id", "upstream-session-1"),
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
        ("mcp-param-region", "eu"),
        ("last-event-id", "ev-7"),
        ("x-request-id", "client-req-42"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(h[k], v, "{k} passes through");
    }
    for k in ["origin", "cookie", "x-forwarded-for"] {
        assert!(!h.contains_key(k), "{k} must not be forwarded");
    }
    for (name, value) in h {
        assert!(
            !value.to_str().unwrap_or_default().contains("mwt_"),
            "{name} carries the client token"
        );
    }
    assert_eq!(seen[1].body, echo_call(1, "x").as_bytes());
}

#[tokio::test]
async fn request_ids_are_generated_when_absent() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let r = gw.post("demo", Some(&t), echo_call(1, "x")).await;
    let id = r.header("x-request-id").to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(up.requests()[0].headers["x-request-id"], id.as_str());
    // Errors carry one too.
    assert!(gw.post("demo", None, "{}").await.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn origins_not_listed_are_forbidden() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let auth = format!("Bearer {t}");
    let r = send(
        Method::POST,
        &gw.ws_url("demo"),
        &[("authorization", &auth), ("origin", "https://evil.example")],
        echo_call(4, "x"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(rpc_error(&r), (-31003, "Forbidden".into()));
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn bad_bodies_get_jsonrpc_errors_and_never_reach_the_upstream() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url).server("max_body_bytes = 1024").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;

    let r = gw.post("demo", Some(&t), "this is not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}})
    );

    let r = gw.post("demo", Some(&t), r#"{"id": 5, "method": "tools/list"}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -32600, "message": "Invalid Request"}})
    );
    let r = gw.post("demo", Some(&t), "[1,2]").await;
    assert_eq!((r.status.as_u16(), rpc_error(&r).0), (400, -32600));

    let big = echo_call(6, &"x".repeat(2000));
    let r = gw.post("demo", Some(&t), big.clone()).await;
    assert_eq!(r.status, 413);
    assert_eq!(rpc_error(&r), (-32600, "Request too large".into()));

    // Same without Content-Length (chunked): the limit is enforced while reading.
    let auth = format!("Bearer {t}");
    let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes, std::convert::Infallible>::new(2);
    let half = big.len() / 2;
    let (first, second) = (
        bytes::Bytes::from(big[..half].to_string()),
        bytes::Bytes::from(big[half..].to_string()),
    );
    tokio::spawn(async move {
        let _ = tx.send_data(first).await;
        let _ = tx.send_data(second).await;
    });
    let req = http::Request::post(gw.ws_url("demo"))
        .header("authorization", &auth)
        .body(body)
        .unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]["code"], -32600);

    assert!(up.requests().is_empty(), "nothing invalid was forwarded");
    let r = send(Method::PUT, &gw.ws_url("demo"), &[("authorization", &auth)], "").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn the_per_token_limit_admits_the_burst_then_answers_429() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    // Default 120/min: a burst of 120, refilled at 2 per second.
    let started = Instant::now();
    let mut ok = 0;
    let refused = loop {
        let r = gw.post("demo", Some(&t), rpc(json!(format!("req-{ok}")), "ping", json!({}))).await;
        if r.status == 200 {
            ok += 1;
            assert!(ok <= 300, "never limited");
        } else {
            break r;
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    assert!(ok >= 120, "the whole burst of 120 is admitted (got {ok})");
    assert!(
        ok as f64 <= 120.0 + 2.0 * elapsed + 1.0,
        "{ok} admitted in {elapsed:.2} s exceeds burst plus refill"
    );
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json(),
        json!({"jsonrpc": "2.0", "id": format!("req-{ok}"), "error": {"code": -32000, "message": "Rate limit exceeded", "data": {"retryAfter": 1}}})
    );
    assert_eq!(refused.header("retry-after"), "1");
    assert_eq!(refused.header("ratelimit-policy"), "\"per-token\";q=120;w=60");
    assert_eq!(refused.header("ratelimit"), "\"per-token\";r=0;t=1");
    // Another token of the same workspace is unaffected.
    let (t2, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&t2), echo_call(1, "x")).await.status, 200);
}

#[tokio::test]
async fn token_and_workspace_overrides_set_the_limit() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({"requests_per_minute": 3})).await;
    for i in 0..3 {
        assert_eq!(gw.post("demo", Some(&t), echo_call(i, "x")).await.status, 200);
    }
    let r = gw.post("demo", Some(&t), echo_call(3, "x")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "20", "3 per minute refills one every 20 s");
    assert_eq!(r.header("ratelimit-policy"), "\"per-token\";q=3;w=60");
    // A limited client's request is refused whatever its body; the id is
    // echoed when it can be read.
    let r = gw.post("demo", Some(&t), "not json").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["id"], json!(null));
    let r = gw.post("demo", Some(&t), echo_call(77, "x")).await;
    assert_eq!(r.json()["id"], 77);
}

#[tokio::test]
async fn workspace_override_applies_to_its_tokens() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).demo_workspace_keys("requests_per_minute = 2").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&t), echo_call(1, "x")).await.status, 200);
    assert_eq!(gw.post("demo", Some(&t), echo_call(2, "x")).await.status, 200);
    let r = gw.post("demo", Some(&t), echo_call(3, "x")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "30");
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let dead = dead_address().await;
    // Never answers within the test: a 504 can only come from the timeout.
    let slow = RecordingUpstream::start(200, Duration::from_secs(3600)).await;
    let refusing = RecordingUpstream::start(401, Duration::ZERO).await;
    let gw = Setup::new(&dead)
        .workspace("slow", &slow.url, "timeout_ms = 300")
        .workspace("refusing", &refusing.url, "")
        .start()
        .await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let r = gw.post("demo", Some(&t), echo_call(1, "x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(rpc_error(&r), (-32603, "Upstream unavailable".into()));
    assert_eq!(r.json()["id"], 1, "the request id is echoed");

    let (t, _) = gw.create_token("slow", json!({})).await;
    let r = gw.post("slow", Some(&t), echo_call(2, "x")).await;
    assert_eq!(r.status, 504);
    assert_eq!(rpc_error(&r), (-32603, "Upstream timeout".into()));
    assert_eq!(r.json()["id"], 2);
    assert_eq!(slow.requests().len(), 1, "it did reach the upstream");

    // An upstream refusing the gateway's credentials is the gateway's fault,
    // not the client's: 502, never a 401 that would look like a bad token.
    let (t, _) = gw.create_token("refusing", json!({})).await;
    let r = gw.post("refusing", Some(&t), echo_call(3, "x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["data"]["upstreamStatus"], 401);
    assert!(!r.headers.contains_key("www-authenticate"));
}

/// POSTs a tools/call with `Accept: text/event-stream`; returns the body.
async fn open_sse(gw: &Gateway, token: &str) -> hyper::body::Incoming {
    let body = rpc(
        json!(1),
        "tools/call",
        json!({"name": "progress", "arguments": {}, "_meta": {"progressToken": "p"}}),
    );
    let req = http::Request::post(gw.ws_url("demo"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    // A gateway that buffered the stream would not even send the head before
    // the upstream is released (hang guard, not a timing claim).
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("the response head arrives while the upstream still holds its result")
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp.into_body()
}

#[tokio::test]
async fn sse_progress_streams_before_the_tool_finishes() {
    let up = GatedSse::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut body = open_sse(&gw, &t).await;
    let mut text = String::new();
    // The first event arrives while the upstream is still holding the result.
    read_until(&mut body, &mut text, |t| t.contains("notifications/progress")).await;
    assert!(!text.contains("released"), "{text}");
    up.release.notify_one();
    read_until(&mut body, &mut text, |t| t.contains("released")).await;
    assert!(body.frame().await.is_none(), "the stream ends with the upstream's");
}

#[tokio::test]
async fn oauth_discovery_probes_get_a_quick_404_without_auth() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    for p in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/ws/demo",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = send(Method::GET, &format!("http://{}{p}", gw.data), &[], "").await;
        assert_eq!(r.status, 404, "{p}");
        assert!(!r.headers.contains_key("www-authenticate"));
    }
    let r = send(Method::GET, &format!("http://{}/elsewhere", gw.data), &[], "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).server("header_read_timeout_ms = 300").start().await;
    let mut s = tokio::net::TcpStream::connect(gw.data).await.unwrap();
    s.write_all(b"POST /ws/demo HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    // The server answers 408 or just closes; either way the read ends. The
    // 10 s are a hang guard (the head would never complete), not a bound.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("connection closed by the gateway");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn slow_bodies_get_408() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).server("body_read_timeout_ms = 300").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut s = tokio::net::TcpStream::connect(gw.data).await.unwrap();
    let head = format!("POST /ws/demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\"");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answered");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("-32600"));
}

#[tokio::test]
async fn get_and_delete_are_forwarded() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let auth = format!("Bearer {t}");
    let sealed = gw
        .post("demo", Some(&t), echo_call(0, "x"))
        .await
        .header("mcp-session-id")
        .to_owned();
    for m in [Method::GET, Method::DELETE] {
        let r = send(
            m.clone(),
            &gw.ws_url("demo"),
            &[("authorization", &auth), ("mcp-session-id", &sealed)],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{m}");
    }
    let seen = up.requests();
    assert_eq!(
        seen.iter().map(|s| s.method.clone()).collect::<Vec<_>>(),
        [Method::POST, Method::GET, Method::DELETE]
    );
    assert!(seen[1..].iter().all(|s| s.headers["mcp-session-id"] == "upstream-session-1"));
}

/// The real SQLite store, whose miss reads can be switched to fail.
struct BreakableStore {
    inner: portcullis::store::sqlite::SqliteStore,
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl portcullis::store::TokenStore for BreakableStore {
    async fn insert(
        &self,
        r: &portcullis::token::TokenRecord,
        h: &portcullis::token::TokenHash,
    ) -> Result<(), portcullis::store::StoreError> {
        self.inner.insert(r, h).await
    }
    async fn find_by_hash(
        &self,
        h: &portcullis::token::TokenHash,
    ) -> Result<Option<portcullis::token::TokenRecord>, portcullis::store::StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(portcullis::store::StoreError::Unavailable("injected failure".into()));
        }
        self.inner.find_by_hash(h).await
    }
    async fn get(&self, id: &str) -> Result<Option<portcullis::token::TokenRecord>, portcullis::store::StoreError> {
        self.inner.get(id).await
    }
    async fn list(
        &self,
        f: portcullis::store::ListFilter<'_>,
        n: usize,
        c: Option<&str>,
    ) -> Result<portcullis::store::Page, portcullis::store::StoreError> {
        self.inner.list(f, n, c).await
    }
    async fn revoke(&self, id: &str, at: i64) -> Result<Option<portcullis::store::Revoked>, portcullis::store::StoreError> {
        self.inner.revoke(id, at).await
    }
    async fn record_last_used(&self, b: &[(String, i64)]) -> Result<(), portcullis::store::StoreError> {
        self.inner.record_last_used(b).await
    }
    async fn revocation_seq(&self) -> Result<u64, portcullis::store::StoreError> {
        self.inner.revocation_seq().await
    }
    async fn revocations_since(&self, a: u64, l: usize) -> Result<Vec<portcullis::store::Revocation>, portcullis::store::StoreError> {
        self.inner.revocations_since(a, l).await
    }
    async fn ping(&self) -> Result<(), portcullis::store::StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(portcullis::store::StoreError::Unavailable("injected failure".into()));
        }
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_store_failure_fails_closed_with_503() {
    let up = DemoUpstream::start().await;
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b = broken.clone();
    let mut setup = Setup::new(&up.url);
    setup.store = Some(Box::new(move |c: &portcullis::config::Config| {
        let portcullis::config::StoreConfig::Sqlite { path } = &c.store else {
            panic!("this test configures SQLite")
        };
        std::sync::Arc::new(BreakableStore {
            inner: portcullis::store::sqlite::SqliteStore::open(path).unwrap(),
            broken: b,
        }) as std::sync::Arc<dyn portcullis::store::TokenStore>
    }));
    let gw = setup.start().await;
    let (cached, _) = gw.create_token("demo", json!({})).await;
    let (uncached, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&cached), echo_call(1, "x")).await.status, 200);
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    // A token that must be read from the store cannot be verified: 503, not 200 or 401.
    let r = gw.post("demo", Some(&uncached), echo_call(2, "x")).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(rpc_error(&r), (-32603, "Service unavailable".into()));
    assert_eq!(r.header("retry-after"), "1");
    // Readiness reflects it.
    assert_eq!(send(Method::GET, &gw.admin_url("/readyz"), &[], "").await.status, 503);
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(gw.post("demo", Some(&uncached), echo_call(3, "x")).await.status, 200);
    assert_eq!(send(Method::GET, &gw.admin_url("/readyz"), &[], "").await.status, 200);
}

#[tokio::test]
async fn idle_event_streams_get_keepalive_comments_between_events() {
    let up = GatedSse::start().await;
    let gw = Setup::new(&up.url).server("sse_keepalive_ms = 100").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut body = open_sse(&gw, &t).await;
    let mut text = String::new();
    // While the upstream is silent, the gateway sends comments on its own;
    // the upstream is released only once two have arrived.
    read_until(&mut body, &mut text, |t| t.matches(": keep-alive\n\n").count() >= 2).await;
    assert!(!text.contains("released"), "{text}");
    up.release.notify_one();
    read_until(&mut body, &mut text, |t| t.contains("released")).await;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&d).unwrap());
        }
    }
    // Every event is intact: comments only sit between events.
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty() && !e.starts_with(':')).collect();
    assert_eq!(events.len(), 2, "{text}");
    for e in events {
        let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        serde_json::from_str::<serde_json::Value>(data).unwrap();
    }
    // JSON answers are never touched.
    let json_up = DemoUpstream::start().await;
    let gw = Setup::new(&json_up.url).server("sse_keepalive_ms = 100").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let r = gw.post("demo", Some(&t), echo_call(2, "x")).await;
    assert_eq!(r.status, 200);
    assert!(!String::from_utf8_lossy(&r.body).contains("keep-alive"));
}

#[tokio::test]
async fn a_flood_of_random_tokens_cannot_flood_the_store() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).server("store_miss_reads_per_second = 5").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&t), echo_call(0, "x")).await.status, 200);
    let reads_before = metric(&gw, "portcullis_store_reads_total").await;
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for i in 0..30 {
        // Well-formed (valid checksum), never issued, all different.
        let random = portcullis::token::generate(TokenKind::Workspace).raw;
        statuses.push(gw.post("demo", Some(&random), echo_call(i, "x")).await.status.as_u16());
        // Tokens already in the index keep working throughout.
        assert_eq!(gw.post("demo", Some(&t), echo_call(i, "x")).await.status, 200);
    }
    let reads = metric(&gw, "portcullis_store_reads_total").await - reads_before;
    // The budget is a burst of 5 refilled at 5/s: what the loop's duration
    // (long on a loaded machine) allows, and far below one read per token.
    let allowed = 5 + (5.0 * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        reads <= allowed && reads < 30,
        "{reads} store reads for 30 random tokens (budget allowed {allowed})"
    );
    assert!(statuses.iter().all(|s| *s == 401 || *s == 503), "{statuses:?}");
    let refused = statuses.iter().filter(|s| **s == 503).count() as u64;
    assert!(refused >= 30 - allowed.min(30), "{statuses:?}");
    assert!(metric(&gw, "portcullis_store_miss_budget_exhausted_total").await >= refused);
}

async fn metric(gw: &Gateway, name: &str) -> u64 {
    let r = send(Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_token_scoped_to_other_servers_is_forbidden() {
    let up = DemoUpstream::start().await;
    let mut gw = Setup::new(&up.url).start().await;
    let (scoped, _) = gw.create_token("demo", json!({"allowed_servers": ["main"]})).await;
    assert_eq!(gw.post("demo", Some(&scoped), echo_call(1, "x")).await.status, 200);
    // The operator renames the workspace's server: the token's scope no longer
    // covers anything behind this URL.
    gw.config_text = gw.config_text.replace("name = \"main\"", "name = \"renamed\"");
    gw.restart().await;
    let r = gw.post("demo", Some(&scoped), echo_call(2, "x")).await;
    assert_eq!(r.status, 403);
    assert_eq!(rpc_error(&r), (-31003, "Forbidden".into()));
    let (unscoped, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&unscoped), echo_call(3, "x")).await.status, 200);
}
