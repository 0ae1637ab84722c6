//! Issue 16's bound: a response still streaming for a token ends at most
//! 100 ms after the revoke call returns.
//!
//! `cargo bench --bench stream_cut` starts the demo upstream and one gateway
//! (SQLite), then for `TRIALS` trials (default 200): opens a `tools/call` of
//! the demo `progress` tool as an SSE stream (an event every 40 ms for 4 s)
//! with a fresh token, waits for its first progress event, revokes the token
//! through the admin API, and reads the stream to its end. It prints the
//! revoke call's latency and the time from its return to the stream's last
//! event, and **exits non-zero** when any trial breaks the contract: a revoke
//! call that is not 200, a stream that does not end with the JSON-RPC error
//! (-31001, the request's id), a progress event or result received after
//! that error, or a cut later than `BOUND_MS` (default 100) after the
//! revoke call returned. The tests in `tests/it/stream_revocation.rs` pin
//! the behaviour without timing; this is where the timing target lives.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::app;
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::config::Config;
use portcullis::token::{TokenKind, now_unix};
use tokio_util::sync::CancellationToken;

type Http = Client<HttpConnector, Full<Bytes>>;

const CALL: &str = r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"progress","arguments":{"steps":100,"interval_ms":40},"_meta":{"progressToken":"p"}}}"#;

fn request(method: Method, url: &str, token: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The `data:` payloads of the complete events in `buf`, removed from it.
fn events(buf: &mut Vec<u8>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let event: Vec<u8> = buf.drain(..end + 2).collect();
        for line in String::from_utf8_lossy(&event).lines() {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str(data.trim())
            {
                out.push(v);
            }
        }
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    std::process::exit(rt.block_on(run()));
}

async fn run() -> i32 {
    let trials: usize = std::env::var("TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let bound = Duration::from_millis(std::env::var("BOUND_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100));
    let dir = tempfile::tempdir().unwrap();
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/mcp", upstream_listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(portcullis::demo::serve(
        upstream_listener,
        portcullis::demo::DemoOptions { api_key: None },
        stop.clone(),
    ));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [store]\nbackend = \"sqlite\"\npath = \"{}\"\n\
         [limits]\nrequests_per_minute = 100000000\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"{upstream}\"\n",
        dir.path().join("bench.db").display()
    );
    let cfg = Config::from_toml(Path::new("bench.toml"), &text, &|_| None).unwrap();
    let gw = app::start(cfg).await.unwrap();
    let admin = NewTokenRequest {
        name: "bench-admin".into(),
        kind: Some(TokenKind::Admin),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (admin_token, _) = lifecycle::create(Some(&gw.state.verifier), &gw.state.store, admin, now_unix())
        .await
        .unwrap();
    let http: Http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (data, admin_url) = (
        format!("http://{}/ws/demo", gw.data_addr),
        format!("http://{}/v1/workspaces/demo/tokens", gw.admin_addr),
    );

    let (mut revoke_latency, mut cut_after) = (Vec::new(), Vec::new());
    let mut failures: Vec<String> = Vec::new();
    for trial in 0..trials {
        let resp = http
            .request(request(Method::POST, &admin_url, &admin_token, r#"{"name":"stream"}"#))
            .await
            .unwrap();
        let created: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let (token, id) = (
            created["token"].as_str().unwrap().to_string(),
            created["info"]["id"].as_str().unwrap().to_string(),
        );
        let resp = http.request(request(Method::POST, &data, &token, CALL)).await.unwrap();
        if resp.status() != 200 {
            failures.push(format!("trial {trial}: the call answered {}", resp.status()));
            continue;
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        // The first progress event: the stream is live.
        let mut seen = Vec::new();
        while seen.is_empty() {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                        seen.extend(events(&mut buf));
                    }
                }
                _ => break,
            }
        }
        let revoke_started = Instant::now();
        let resp = http
            .request(request(Method::DELETE, &format!("{admin_url}/{id}"), &admin_token, ""))
            .await
            .unwrap();
        let returned = Instant::now();
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status != 200 {
            failures.push(format!("trial {trial}: the revoke call answered {status}"));
            continue;
        }
        revoke_latency.push(returned - revoke_started);
        // Read to the end: the last event must be the -31001 error, with
        // nothing after it, arriving within the bound.
        let mut after = Vec::new();
        let mut last_at = returned;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(d) = frame.into_data() {
                buf.extend_from_slice(&d);
                let got = events(&mut buf);
                if !got.is_empty() {
                    last_at = Instant::now();
                    after.extend(got);
                }
            }
        }
        let error_at = after.iter().position(|v| v["error"]["code"] == -31001);
        match error_at {
            None => failures.push(format!("trial {trial}: the stream ended without the -31001 event")),
            Some(i) if i + 1 != after.len() => failures.push(format!("trial {trial}: {} events after the error", after.len() - i - 1)),
            Some(i) if after[i]["id"] != 77 => failures.push(format!("trial {trial}: the error carries id {}", after[i]["id"])),
            Some(_) => {
                let d = last_at.saturating_duration_since(returned);
                if d > bound {
                    failures.push(format!("trial {trial}: cut {} ms after the revoke call returned", ms(d)));
                }
                cut_after.push(d);
            }
        }
    }
    gw.shutdown();
    stop.cancel();
    revoke_latency.sort();
    cut_after.sort();
    println!("### Stream cut on revocation ({trials} trials, single node, SQLite)\n");
    println!("| figure | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|");
    for (name, v) in [
        ("revoke call", &revoke_latency),
        ("last event after the revoke call returned", &cut_after),
    ] {
        if !v.is_empty() {
            println!(
                "| {name} | {} | {} | {} |",
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(*v.last().unwrap())
            );
        }
    }
    println!(
        "\nbound: {} ms; trials within it and ending with -31001: {} of {trials}",
        bound.as_millis(),
        cut_after.len() - cut_after.iter().filter(|d| **d > bound).count()
    );
    if failures.is_empty() {
        0
    } else {
        for f in failures.iter().take(20) {
            eprintln!("FAILED: {f}");
        }
        1
    }
}
