//! Responses still streaming for a token end when the token stops being
//! valid (revoked here or on another instance, expired) or when the shutdown
//! grace runs out: a last SSE event carrying the JSON-RPC error, then the end
//! of the stream. Every stream kind, on real sockets, in front of an upstream
//! whose streams the test feeds event by event.
//!
//! Each test makes the upstream send one more event *after* the cut (after
//! the revoke call returned, after the expiry was seen, after shutdown) and
//! then close its stream: without the feature the client would receive that
//! event and a plain end, so the assertion on "exactly the error event, then
//! the end" tells working from absent without any timing threshold.

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis::app::{self, Running};

use portcullis::config::Config;
use portcullis::token::now_unix;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";

type UpBody = BoxBody<Bytes, Infallible>;

/// An upstream MCP server whose event streams (a `tools/call` answer, a GET
/// stream) the test writes to: each one opened is handed over on `opened`.
struct StreamUpstream {
    url: String,
    opened: mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>,
    stop: CancellationToken,
}

impl StreamUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let (tx, opened) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move { Ok::<_, Infallible>(handle(req, tx).await) }
        });
        let opts = portcullis::server::ConnOptions {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 100,
            shutdown_grace: Duration::from_millis(50),
        };
        tokio::spawn(portcullis::server::serve("stream-upstream", listener, svc, opts, stop.clone()));
        StreamUpstream { url, opened, stop }
    }

    /// The next stream the gateway opened here.
    async fn next_stream(&mut self) -> mpsc::Sender<Bytes> {
        self.opened.recv().await.expect("upstream running")
    }
}

impl Drop for StreamUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn json_answer(v: Value) -> Response<UpBody> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("mcp-session-id", "up-session".parse().unwrap());
    r
}

fn event_stream(opened: &mpsc::UnboundedSender<mpsc::Sender<Bytes>>) -> Response<UpBody> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let _ = opened.send(tx);
    let (mut out, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(8);
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if out.send_data(b).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(body.boxed());
    r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    r
}

async fn handle(req: Request<Incoming>, opened: mpsc::UnboundedSender<mpsc::Sender<Bytes>>) -> Response<UpBody> {
    match *req.method() {
        Method::GET => return event_stream(&opened),
        Method::POST => {}
        _ => return json_answer(json!({})),
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = msg.get("id").cloned();
    let Some(id) = id else {
        let mut r = json_answer(json!({}));
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    };
    let result = match msg["method"].as_str().unwrap_or_default() {
        "initialize" => json!({"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
            "serverInfo": {"name": "streams", "version": "1"}}),
        "tools/list" => json!({"tools": [{"name": "watch", "inputSchema": {"type": "object"}}]}),
        "tools/call" => return event_stream(&opened),
        _ => json!({}),
    };
    json_answer(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

fn progress(n: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p", "progress": n}})
}

/// A client's view of an event stream: the JSON messages of its events, one
/// at a time (comment-only events such as keep-alives skipped).
struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    async fn open(method: Method, url: &str, headers: &[(&str, &str)], body: String) -> Self {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = client()
            .request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        assert!(ct.as_deref().is_some_and(|c| c.starts_with("text/event-stream")), "{ct:?}");
        Events {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next message; `None` at the end of the stream (or if the
    /// connection broke: either way, nothing more arrives).
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = raw.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if raw.lines().any(|l| l == "event: cut") {
                    continue;
                }
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data.join("\n")).expect("JSON data"));
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.push_str(std::str::from_utf8(&d).unwrap());
                    }
                }
                _ => return None,
            }
        }
    }

    /// Everything left until the stream ends.
    async fn rest(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.next().await {
            out.push(v);
        }
        out
    }
}

fn unauthorized(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -31001, "message": "Unauthorized"}})
}

/// The upstream speaks once more after the cut, then ends its stream: the
/// client must see the error event and the end, not that message.
async fn after_the_cut(upstream: mpsc::Sender<Bytes>, stream: &mut Events, expected_last: Value) {
    let _ = upstream.send(event(&progress(99))).await;
    drop(upstream);
    assert_eq!(stream.next().await, Some(expected_last));
    assert_eq!(stream.rest().await, Vec::<Value>::new(), "nothing after the last event");
}

fn post_headers(auth: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("accept", "application/json, text/event-stream".into()),
        ("authorization", format!("Bearer {auth}")),
    ]
}

fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn call(id: i64, tool: &str) -> String {
    rpc(
        json!(id),
        "tools/call",
        json!({"name": tool, "arguments": {}, "_meta": {"progressToken": "p"}}),
    )
}

/// A pass-through `tools/call` answered as an event stream.
async fn open_post(url: &str, token: &str, upstream: &mut StreamUpstream, id: i64) -> (Events, mpsc::Sender<Bytes>) {
    let h = post_headers(token);
    let mut events = Events::open(Method::POST, url, &refs(&h), call(id, "watch")).await;
    let up = upstream.next_stream().await;
    up.send(event(&progress(1))).await.unwrap();
    assert_eq!(events.next().await, Some(progress(1)), "streaming before the cut");
    (events, up)
}

/// A pass-through GET event stream.
async fn open_get(url: &str, token: &str, upstream: &mut StreamUpstream) -> (Events, mpsc::Sender<Bytes>) {
    let auth = format!("Bearer {token}");
    let h = [("accept", "text/event-stream"), ("authorization", auth.as_str())];
    let mut events = Events::open(Method::GET, url, &h, String::new()).await;
    let up = upstream.next_stream().await;
    up.send(event(&progress(1))).await.unwrap();
    assert_eq!(events.next().await, Some(progress(1)), "streaming before the cut");
    (events, up)
}

#[tokio::test]
async fn revoking_a_token_ends_its_pass_through_post_stream() {
    let mut upstream = StreamUpstream::start().await;
    let gw = Setup::new(&upstream.url).start().await;
    let (token, id) = gw.create_token("demo", json!({})).await;
    let (mut events, up) = open_post(&gw.ws_url("demo"), &token, &mut upstream, 42).await;
    assert_eq!(gw.revoke("demo", &id).await.status, 200);
    after_the_cut(up, &mut events, unauthorized(json!(42))).await;
    // And the client's reconnection is refused.
    assert_unauthorized(&gw.post("demo", Some(&token), call(43, "watch")).await, false);
}

#[tokio::test]
async fn revoking_a_token_ends_its_pass_through_get_stream() {
    let mut upstream = StreamUpstream::start().await;
    let gw = Setup::new(&upstream.url).start().await;
    let (token, id) = gw.create_token("demo", json!({})).await;
    let (mut events, up) = open_get(&gw.ws_url("demo"), &token, &mut upstream).await;
    // Another token's stream on the same workspace is not touched.
    let (other, _) = gw.create_token("demo", json!({})).await;
    let (mut other_events, other_up) = open_get(&gw.ws_url("demo"), &other, &mut upstream).await;
    assert_eq!(gw.revoke("demo", &id).await.status, 200);
    after_the_cut(up, &mut events, unauthorized(Value::Null)).await;
    other_up.send(event(&progress(2))).await.unwrap();
    assert_eq!(other_events.next().await, Some(progress(2)));
}

#[tokio::test]
async fn an_expiring_token_has_its_stream_ended_at_the_expiry() {
    let mut upstream = StreamUpstream::start().await;
    let gw = Setup::new(&upstream.url).start().await;
    let (token, id) = gw.create_token("demo", json!({"expires_in": 1})).await;
    let record = gw.state().store.get(&id).await.unwrap().unwrap();
    let expires_at = record.expires_at.expect("expires");
    let (mut events, up) = open_post(&gw.ws_url("demo"), &token, &mut upstream, 7).await;
    // The next thing to arrive is the cut, and not before the expiry. (A
    // guard against hanging when the feature is absent, not a threshold.)
    let last = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("the stream is never cut at the expiry");
    assert!(now_unix() >= expires_at, "cut before the token expired");
    assert_eq!(last, Some(unauthorized(json!(7))));
    let _ = up.send(event(&progress(99))).await;
    drop(up);
    assert_eq!(events.rest().await, Vec::<Value>::new(), "nothing after the last event");
}

/// A gateway with an aggregating workspace `team` of two stream upstreams.
async fn team(a: &StreamUpstream, b: &StreamUpstream) -> Gateway {
    Setup::new(&a.url)
        .server(&format!("session_keys = [\"{KEY}\"]"))
        .raw(&format!(
            "[[workspaces]]\nslug = \"team\"\n[[workspaces.servers]]\nname = \"a\"\nurl = \"{}\"\n[[workspaces.servers]]\nname = \"b\"\nurl = \"{}\"\n",
            a.url, b.url
        ))
        .start()
        .await
}

async fn team_session(gw: &Gateway, token: &str) -> String {
    let h = post_headers(token);
    let init = rpc(
        json!(0),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}),
    );
    let r = send(Method::POST, &gw.ws_url("team"), &refs(&h), init).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("mcp-session-id").to_owned()
}

#[tokio::test]
async fn revoking_a_token_ends_its_aggregated_relayed_stream() {
    let (mut a, b) = (StreamUpstream::start().await, StreamUpstream::start().await);
    let gw = team(&a, &b).await;
    let (token, id) = gw.create_token("team", json!({})).await;
    let session = team_session(&gw, &token).await;
    let mut h = post_headers(&token);
    h.push(("mcp-session-id", session));
    let mut events = Events::open(Method::POST, &gw.ws_url("team"), &refs(&h), call(5, "a__watch")).await;
    let up = a.next_stream().await;
    up.send(event(&progress(1))).await.unwrap();
    assert_eq!(events.next().await, Some(progress(1)));
    assert_eq!(gw.revoke("team", &id).await.status, 200);
    after_the_cut(up, &mut events, unauthorized(json!(5))).await;
}

#[tokio::test]
async fn revoking_a_token_ends_its_aggregated_get_stream() {
    let (mut a, mut b) = (StreamUpstream::start().await, StreamUpstream::start().await);
    let gw = team(&a, &b).await;
    let (token, id) = gw.create_token("team", json!({})).await;
    let session = team_session(&gw, &token).await;
    let auth = format!("Bearer {token}");
    let h = [
        ("accept", "text/event-stream"),
        ("authorization", auth.as_str()),
        ("mcp-session-id", session.as_str()),
    ];
    let mut events = Events::open(Method::GET, &gw.ws_url("team"), &h, String::new()).await;
    let (up_a, up_b) = (a.next_stream().await, b.next_stream().await);
    up_a.send(event(&progress(1))).await.unwrap();
    assert_eq!(events.next().await, Some(progress(1)));
    assert_eq!(gw.revoke("team", &id).await.status, 200);
    drop(up_b);
    after_the_cut(up_a, &mut events, unauthorized(Value::Null)).await;
}

#[tokio::test]
async fn a_stream_outliving_the_shutdown_grace_ends_with_an_error_event() {
    let mut upstream = StreamUpstream::start().await;
    let mut gw = Setup::new(&upstream.url).start().await;
    let (token, _) = gw.create_token("demo", json!({})).await;
    // An endless GET stream: the upstream never ends it.
    let (mut events, _up) = open_get(&gw.ws_url("demo"), &token, &mut upstream).await;
    let (_, rest) = tokio::join!(gw.stop(), events.rest());
    assert_eq!(
        rest,
        vec![json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": "Service unavailable", "data": {"retryAfter": 1}}})]
    );
}

fn cluster_config(redis_url: &str, upstream_url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 1000\nrevocation_poll_ms = 250\n\
         [store]\nbackend = \"redis\"\nurl = \"{redis_url}\"\ntimeout_ms = 500\n\
         [limits]\nrequests_per_minute = 120\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{upstream_url}\"\n"
    )
}

async fn instance(text: &str) -> Running {
    let config = Config::from_toml(Path::new("cluster.toml"), text, &|_| None).expect("valid");
    let r = app::start(config).await.expect("instance starts");
    // Subscribed to revocations (the same wait as tests/it/cluster.rs).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !r.state.verifier.is_trusted() {
        assert!(std::time::Instant::now() < deadline, "instance never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r
}

#[tokio::test]
async fn cluster_a_revocation_on_one_instance_ends_streams_on_another() {
    let redis = RedisServer::start().await;
    let mut upstream = StreamUpstream::start().await;
    let text = cluster_config(&redis.url(), &upstream.url);
    let (a, b) = (instance(&text).await, instance(&text).await);
    let admin = crate::harness::bootstrap_admin(&a.state, "admin").await;
    let admin_auth = format!("Bearer {admin}");
    let admin_h = [("authorization", admin_auth.as_str()), ("content-type", "application/json")];
    let created = send(
        Method::POST,
        &format!("http://{}/v1/workspaces/demo/tokens", a.admin_addr),
        &admin_h,
        json!({"name": "t"}).to_string(),
    )
    .await;
    assert_eq!(created.status, 201);
    let (token, id) = (
        created.json()["token"].as_str().unwrap().to_owned(),
        created.json()["info"]["id"].as_str().unwrap().to_owned(),
    );
    // A POST stream and a GET stream on B.
    let on_b = format!("http://{}/ws/demo", b.data_addr);
    let (mut post, post_up) = open_post(&on_b, &token, &mut upstream, 9).await;
    let (mut get, get_up) = open_get(&on_b, &token, &mut upstream).await;
    // Revoked through A.
    let r = send(
        Method::DELETE,
        &format!("http://{}/v1/workspaces/demo/tokens/{id}", a.admin_addr),
        &admin_h,
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    after_the_cut(post_up, &mut post, unauthorized(json!(9))).await;
    after_the_cut(get_up, &mut get, unauthorized(Value::Null)).await;
    for r in [a, b] {
        r.shutdown();
        r.wait().await;
    }
}
