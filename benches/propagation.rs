//! Cluster figures (issue: scale-out): revocation propagation across
//! instances and the cost of the cluster-wide limiter.
//!
//! `cargo bench --bench propagation` starts a private redis-server, the demo
//! upstream and two gateway instances sharing Redis, puts background load on
//! both, and prints Markdown tables:
//! - revoke on instance A through the admin API; time until instance B
//!   refuses, measured from the revoke call's return (and the call's own
//!   latency, which includes waiting for every instance's acknowledgement);
//! - the same with every pub/sub subscription killed first (the push is lost
//!   and the log poll must catch up);
//! - per-request latency with `limits.scope = "cluster"` versus `"instance"`
//!   and the Redis commands each request costs (throughput of the two, and
//!   the cluster limiter's over-admission: `benches/cluster_limit.sh`).
//!
//! Every answer is checked, and the bench exits non-zero when one is wrong:
//! a figure measured on wrong answers is no figure. Wrong is: a revoke call
//! that does not return 200; anything but 200 before the refusal or 401 as
//! the refusal (a 503 is the store failing, not the token refused); no
//! refusal within `REFUSAL_DEADLINE`; any limiter or background request
//! that is not 200; a cluster-scope run that never reached the Redis limiter
//! script or reached it for more than one request in ten (it leases budget
//! ahead), or an instance-scope run whose requests each did.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::app::{self, Running};
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::config::Config;
use portcullis::token::{TokenKind, now_unix};
use tokio_util::sync::CancellationToken;

type Http = Client<HttpConnector, Full<Bytes>>;

async fn call(http: &Http, method: Method, url: &str, token: &str, body: &str) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = http.request(req).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

const ECHO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn row(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    format!(
        "| {name} | {} | {} | {} | {} |",
        v.len(),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().unwrap())
    )
}

async fn start_instance(text: &str) -> Running {
    let cfg = Config::from_toml(Path::new("bench.toml"), text, &|_| None).unwrap();
    app::start(cfg).await.unwrap()
}

fn config(redis_port: u16, upstream: &str, scope: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrevocation_poll_ms = 250\n\
         [store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{redis_port}/0\"\n\
         [limits]\nrequests_per_minute = 100000000\nscope = \"{scope}\"\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"{upstream}\"\n"
    )
}

async fn create(http: &Http, admin: &str, admin_token: &str) -> (String, String) {
    let (s, b) = call(
        http,
        Method::POST,
        &format!("http://{admin}/v1/workspaces/demo/tokens"),
        admin_token,
        r#"{"name":"bench"}"#,
    )
    .await;
    assert_eq!(s, 201);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    (v["token"].as_str().unwrap().into(), v["info"]["id"].as_str().unwrap().into())
}

/// How long a revoked token may go on being served before the trial counts
/// as a failure (the contract says "immediately"; this only bounds the loop).
const REFUSAL_DEADLINE: Duration = Duration::from_secs(5);

/// Polls `url` with the revoked `token` until it is refused. `Ok(first)`:
/// refused with 401, `first` when the first poll was; `Err`: a wrong answer
/// (anything but 200 while still served, or a refusal other than 401) or no
/// refusal in time.
async fn await_refusal(http: &Http, url: &str, token: &str) -> Result<bool, String> {
    let deadline = Instant::now() + REFUSAL_DEADLINE;
    let mut first = true;
    while Instant::now() < deadline {
        match call(http, Method::POST, url, token, ECHO).await.0 {
            401 => return Ok(first),
            200 => first = false,
            s => return Err(format!("status {s} after revocation (only 200 before the refusal or 401 is right)")),
        }
    }
    Err(format!("still served {} s after revocation", REFUSAL_DEADLINE.as_secs()))
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let redis_client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/0")).unwrap();
    let mut rc = loop {
        if let Ok(c) = redis_client.get_multiplexed_async_connection().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/mcp", upstream_listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(portcullis::demo::serve(
        upstream_listener,
        portcullis::demo::DemoOptions { api_key: None },
        stop.clone(),
    ));

    let text = config(redis_port, &upstream, "instance");
    let a = start_instance(&text).await;
    let b = start_instance(&text).await;
    for r in [&a, &b] {
        while !r.state.verifier.is_trusted() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let req = NewTokenRequest {
        name: "bench-admin".into(),
        kind: Some(TokenKind::Admin),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (admin_token, _) = lifecycle::create(Some(&a.state.verifier), &a.state.store, req, now_unix())
        .await
        .unwrap();
    let http: Http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (a_data, a_admin, b_data) = (
        format!("http://{}/ws/demo", a.data_addr),
        a.admin_addr.to_string(),
        format!("http://{}/ws/demo", b.data_addr),
    );

    // Background load: 4 clients on each instance with a long-lived token.
    let (bg_token, _) = create(&http, &a_admin, &admin_token).await;
    let load_on = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for url in [a_data.clone(), b_data.clone()] {
        for _ in 0..4 {
            let (http, url, t, on) = (http.clone(), url.clone(), bg_token.clone(), Arc::clone(&load_on));
            load.push(tokio::spawn(async move {
                let (mut n, mut wrong) = (0u64, 0u64);
                while on.load(Ordering::Relaxed) {
                    if call(&http, Method::POST, &url, &t, ECHO).await.0 != 200 {
                        wrong += 1;
                    }
                    n += 1;
                }
                (n, wrong)
            }));
        }
    }

    let trials: usize = std::env::var("TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut call_latency = Vec::new();
    let mut after_return = Vec::new();
    let mut refused_first = 0;
    let mut failures: Vec<String> = Vec::new();
    for _ in 0..trials {
        let (t, id) = create(&http, &a_admin, &admin_token).await;
        assert_eq!(call(&http, Method::POST, &b_data, &t, ECHO).await.0, 200);
        let started = Instant::now();
        let (s, _) = call(
            &http,
            Method::DELETE,
            &format!("http://{a_admin}/v1/workspaces/demo/tokens/{id}"),
            &admin_token,
            "",
        )
        .await;
        assert_eq!(s, 200);
        let returned = Instant::now();
        call_latency.push(returned - started);
        match await_refusal(&http, &b_data, &t).await {
            Ok(first) => {
                after_return.push(returned.elapsed());
                refused_first += usize::from(first);
            }
            Err(e) => failures.push(format!("propagation trial: {e}")),
        }
    }

    let dropped_trials = trials.min(50);
    let mut dropped_total = Vec::new();
    let mut dropped_call = Vec::new();
    for _ in 0..dropped_trials {
        let (t, id) = create(&http, &a_admin, &admin_token).await;
        assert_eq!(call(&http, Method::POST, &b_data, &t, ECHO).await.0, 200);
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut rc)
            .await
            .unwrap();
        let started = Instant::now();
        let (s, _) = call(
            &http,
            Method::DELETE,
            &format!("http://{a_admin}/v1/workspaces/demo/tokens/{id}"),
            &admin_token,
            "",
        )
        .await;
        if s != 200 {
            failures.push(format!("pub/sub killed: revoke call answered {s}"));
        }
        dropped_call.push(started.elapsed());
        match await_refusal(&http, &b_data, &t).await {
            Ok(_) => dropped_total.push(started.elapsed()),
            Err(e) => failures.push(format!("pub/sub killed: {e}")),
        }
        for r in [&a, &b] {
            while !r.state.verifier.is_trusted() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    load_on.store(false, Ordering::Relaxed);
    let mut bg = 0;
    for l in load {
        let (n, wrong) = l.await.unwrap();
        bg += n;
        if wrong > 0 {
            failures.push(format!("background load: {wrong} of {n} requests not 200"));
        }
    }

    println!("## Revocation propagation ({trials} trials, 2 instances, background load: 8 clients, {bg} requests)\n");
    println!("| measure | n | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|");
    println!(
        "{}",
        row("revoke call on A (includes every instance's acknowledgement)", call_latency)
    );
    println!("{}", row("from revoke return to first refusal on B", after_return));
    println!("{}", row("pub/sub killed: revoke call on A (waits for the log poll)", dropped_call));
    println!("{}", row("pub/sub killed: from revoke start to refusal on B", dropped_total));
    println!("\nFirst request to B after the revoke call returned was refused in {refused_first} of {trials} trials.\n");

    // Cluster limiter cost: same instance config with scope = cluster.
    let c = start_instance(&config(redis_port, &upstream, "cluster")).await;
    while !c.state.verifier.is_trusted() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c_data = format!("http://{}/ws/demo", c.data_addr);
    let n = 2000;
    let mut results = Vec::new();
    for (name, url) in [("scope = instance", &a_data), ("scope = cluster", &c_data)] {
        for _ in 0..200 {
            let s = call(&http, Method::POST, url, &bg_token, ECHO).await.0;
            if s != 200 {
                failures.push(format!("{name}: warm-up request answered {s}"));
            }
        }
        let before: String = redis::cmd("INFO").arg("commandstats").query_async(&mut rc).await.unwrap();
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            let (s, body) = call(&http, Method::POST, url, &bg_token, ECHO).await;
            lat.push(t0.elapsed());
            if s != 200 || !body.windows(10).any(|w| w == br#""text":"x""#) {
                failures.push(format!("{name}: request answered {s} {:?}", String::from_utf8_lossy(&body)));
            }
        }
        let after: String = redis::cmd("INFO").arg("commandstats").query_async(&mut rc).await.unwrap();
        let scripts = calls(&after, "cmdstat_evalsha") + calls(&after, "cmdstat_eval:")
            - calls(&before, "cmdstat_evalsha")
            - calls(&before, "cmdstat_eval:");
        // The figure is the cluster limiter's only if it consulted Redis
        // (leases: a few calls a second, not one per request; issue 15), and
        // the instance limiter's only if no request ran a script.
        let cluster = name.ends_with("cluster");
        if cluster && (scripts == 0 || scripts * 10 > n as u64) || !cluster && scripts >= n as u64 {
            failures.push(format!("{name}: {scripts} limiter script calls for {n} requests"));
        }
        results.push((name, lat, scripts, total_calls(&after) - total_calls(&before)));
    }
    println!("## Cluster limiter cost ({n} sequential requests, one token, same machine)\n");
    println!(
        "| limiter | n | p50 ms | p99 ms | max ms | round trips (script calls) per request | commands per request, incl. inside scripts |\n|---|---|---|---|---|---|---|"
    );
    for (name, lat, scripts, all) in results {
        let r = row(name, lat);
        println!("{r} {:.2} | {:.2} |", scripts as f64 / n as f64, all as f64 / n as f64);
    }
    for r in [a, b, c] {
        r.shutdown();
        r.wait().await;
    }
    stop.cancel();
    let _ = redis.kill();
    let _ = redis.wait();
    if !failures.is_empty() {
        failures.truncate(20);
        eprintln!("WRONG ANSWERS: the figures above are not valid:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
}

/// `calls=` of one `INFO commandstats` line, by prefix.
fn calls(info: &str, prefix: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Sum of `calls=` over all commands in `INFO commandstats`, excluding INFO,
/// the background heartbeat/poll traffic is included (it is small).
fn total_calls(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}
