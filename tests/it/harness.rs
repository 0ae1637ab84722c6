//! Test harness: starts the real gateway, the demo upstream and a recording
//! upstream on free loopback ports, and talks HTTP to them over real sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::app::{self, Running};
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::config::Config;
use portcullis::token::{TokenKind, now_unix};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An admin token created straight in the store, as `portcullis admin token
/// create` does on first start: the raw token.
pub async fn bootstrap_admin(state: &portcullis::state::AppState, name: &str) -> String {
    let req = NewTokenRequest {
        name: name.into(),
        kind: Some(TokenKind::Admin),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    lifecycle::create(Some(&state.verifier), &state.store, req, now_unix())
        .await
        .expect("admin token created")
        .0
}

pub const DEMO_KEY: &str = "upstream-secret-key";

/// A response read whole (tests only; the gateway itself never does this).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and reads the whole answer.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client().request(b.body(Full::new(body.into())).unwrap()).await.expect("request");
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// The body of a JSON-RPC request.
pub fn rpc(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn echo_call(id: i64, text: &str) -> String {
    rpc(json!(id), "tools/call", json!({"name": "echo", "arguments": {"text": text}}))
}

/// A started gateway with its own SQLite file, plus a global admin token.
pub struct Gateway {
    pub running: Option<Running>,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub admin_token: String,
    pub db: PathBuf,
    pub config_text: String,
    pub dir: Arc<tempfile::TempDir>,
}

impl Gateway {
    pub fn ws_url(&self, slug: &str) -> String {
        format!("http://{}/ws/{slug}", self.data)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// POST to `/ws/{slug}` as an MCP client would.
    pub async fn post(&self, slug: &str, token: Option<&str>, body: impl Into<Bytes>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(a) = &auth {
            h.push(("authorization", a.as_str()));
        }
        send(Method::POST, &self.ws_url(slug), &h, body).await
    }

    /// Admin API call with this gateway's admin token.
    pub async fn admin_call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.admin_call_as(&self.admin_token.clone(), method, path, body).await
    }

    pub async fn admin_call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        send(
            method,
            &self.admin_url(path),
            &[("authorization", &auth), ("content-type", "application/json")],
            body,
        )
        .await
    }

    /// Creates a workspace token through the admin API; returns (raw, id).
    pub async fn create_token(&self, slug: &str, extra: Value) -> (String, String) {
        let mut body = json!({"name": "test"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self
            .admin_call(Method::POST, &format!("/v1/workspaces/{slug}/tokens"), Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (
            v["token"].as_str().unwrap().to_string(),
            v["info"]["id"].as_str().unwrap().to_string(),
        )
    }

    pub async fn revoke(&self, slug: &str, id: &str) -> Resp {
        self.admin_call(Method::DELETE, &format!("/v1/workspaces/{slug}/tokens/{id}"), None)
            .await
    }

    /// Graceful stop (drains and flushes).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await;
        }
    }

    /// Stops and starts again on the same database and configuration.
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = start_running(&self.config_text).await;
        self.data = running.data_addr;
        self.admin = running.admin_addr;
        self.running = Some(running);
    }

    pub fn state(&self) -> &Arc<portcullis::state::AppState> {
        &self.running.as_ref().expect("running").state
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

async fn start_running(text: &str) -> Running {
    let config = Config::from_toml(Path::new("test.toml"), text, &|_| None).expect("test config is valid");
    app::start(config).await.expect("gateway starts")
}

/// Builder for a test configuration: one or more single-server workspaces.
pub struct Setup {
    /// (slug, upstream url, extra workspace keys, extra server keys)
    pub workspaces: Vec<(String, String, String, String)>,
    pub server_extra: String,
    pub limits_rpm: u32,
    /// Builds the store instead of the configured one (fault injection).
    pub store: Option<StoreFactory>,
    /// TOML appended as is (e.g. a workspace with several servers).
    pub raw: String,
}

pub type StoreFactory = Box<dyn FnOnce(&Config) -> Arc<dyn portcullis::store::TokenStore>>;

impl Setup {
    /// One workspace `demo` pointing at `upstream_url` with the demo key header.
    pub fn new(upstream_url: &str) -> Self {
        Setup {
            workspaces: vec![("demo".into(), upstream_url.into(), String::new(), String::new())],
            server_extra: String::new(),
            limits_rpm: 120,
            store: None,
            raw: String::new(),
        }
    }
    /// Another workspace; `server_extra` adds keys to its server table.
    pub fn workspace(mut self, slug: &str, url: &str, server_extra: &str) -> Self {
        self.workspaces.push((slug.into(), url.into(), String::new(), server_extra.into()));
        self
    }
    pub fn server(mut self, extra: &str) -> Self {
        self.server_extra.push_str(extra);
        self.server_extra.push('\n');
        self
    }
    /// TOML appended after the generated workspaces.
    pub fn raw(mut self, toml: &str) -> Self {
        self.raw.push_str(toml);
        self.raw.push('\n');
        self
    }
    /// Extra keys on the `demo` workspace table (e.g. requests_per_minute).
    pub fn demo_workspace_keys(mut self, extra: &str) -> Self {
        self.workspaces[0].2 = extra.into();
        self
    }

    pub async fn start(self) -> Gateway {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let db = dir.path().join("data/portcullis.db");
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"http://gateway.test\"\nshutdown_grace_ms = 2000\n{}\n[store]\npath = \"{}\"\n[limits]\nrequests_per_minute = {}\n",
            self.server_extra,
            db.display(),
            self.limits_rpm
        );
        for (slug, url, ws_extra, server_extra) in &self.workspaces {
            text.push_str(&format!(
                "[[workspaces]]\nslug = \"{slug}\"\n{ws_extra}\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{url}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\", X-Upstream-Extra = \"configured\" }}\n{server_extra}\n"
            ));
        }
        text.push_str(&self.raw);
        let running = match self.store {
            None => start_running(&text).await,
            Some(make) => {
                let config = Config::from_toml(Path::new("test.toml"), &text, &|_| None).expect("test config is valid");
                let store = make(&config);
                app::start_with_store(config, store).await.expect("gateway starts")
            }
        };
        let admin_token = bootstrap_admin(&running.state, "test-admin").await;
        Gateway {
            data: running.data_addr,
            admin: running.admin_addr,
            running: Some(running),
            admin_token,
            db,
            config_text: text,
            dir,
        }
    }
}

/// The bundled demo upstream on a free port, requiring [`DEMO_KEY`].
pub struct DemoUpstream {
    pub url: String,
    stop: CancellationToken,
}

impl DemoUpstream {
    pub async fn start() -> Self {
        Self::with_key(Some(DEMO_KEY.into())).await
    }

    /// Without an API key (for configurations that set no upstream headers).
    pub async fn start_open() -> Self {
        Self::with_key(None).await
    }

    async fn with_key(api_key: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(portcullis::demo::serve(
            listener,
            portcullis::demo::DemoOptions { api_key },
            stop.clone(),
        ));
        DemoUpstream { url, stop }
    }
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the recording upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP upstream that records every request and answers with a fixed
/// status after an optional delay; for checking exactly what is forwarded.
pub struct RecordingUpstream {
    pub url: String,
    pub authority: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

impl RecordingUpstream {
    pub async fn start(status: u16, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = CancellationToken::new();
        let s = Arc::clone(&seen);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let s = Arc::clone(&s);
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                s.lock().unwrap().push(Seen {
                    method: parts.method,
                    headers: parts.headers,
                    body: body.clone(),
                });
                tokio::time::sleep(delay).await;
                let id = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                let out = json!({"jsonrpc": "2.0", "id": id, "result": {"ok": true}}).to_string();
                let mut resp = http::Response::new(Full::new(Bytes::from(out)));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
                resp.headers_mut().insert("mcp-session-id", "upstream-session-1".parse().unwrap());
                resp.headers_mut()
                    .insert("x-request-id", "upstream-must-not-override".parse().unwrap());
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let opts = portcullis::server::ConnOptions {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1000,
            shutdown_grace: Duration::from_millis(100),
        };
        tokio::spawn(portcullis::server::serve("recording", listener, svc, opts, stop.clone()));
        RecordingUpstream {
            url: format!("http://{authority}/mcp"),
            authority,
            seen,
            stop,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A loopback address nothing listens on.
pub async fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}/mcp")
}

/// Asserts the contract's 401.
pub fn assert_unauthorized(r: &Resp, header_missing: bool) {
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let expected = if header_missing {
        r#"Bearer realm="portcullis""#
    } else {
        r#"Bearer realm="portcullis", error="invalid_token""#
    };
    assert_eq!(r.header("www-authenticate"), expected);
    assert_eq!(
        r.json(),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -31001, "message": "Unauthorized"}})
    );
}

/// The JSON-RPC error code and message of a response.
pub fn rpc_error(r: &Resp) -> (i64, String) {
    let v = r.json();
    (
        v["error"]["code"].as_i64().unwrap(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

/// A private `redis-server` on a free port with AOF (`appendfsync always`),
/// so that tests never touch the machine's shared Redis and can stop and
/// restart theirs.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = RedisServer { port, dir, child: None };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
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
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test-deps.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain connection for fault injection and inspection.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the server abruptly (no final save: only the AOF remains).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An upstream that answers every POST with an event stream: one progress
/// event at once, then nothing until the test releases it, then the result.
/// If the gateway buffered the stream, the client would never see the first
/// event before the release, and the test would wait for it in vain.
pub struct GatedSse {
    pub url: String,
    pub release: Arc<tokio::sync::Notify>,
}

impl GatedSse {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let release = Arc::new(tokio::sync::Notify::new());
        let r = Arc::clone(&release);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    // Read the head and its Content-Length body.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = tokio::io::AsyncReadExt::read(&mut s, &mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
                    let progress = r#"event: message
data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}

"#;
                    let result = r#"event: message
data: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"released"}]}}

"#;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    if tokio::io::AsyncWriteExt::write_all(&mut s, format!("{head}{}", chunk(progress)).as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    r.notified().await;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut s, format!("{}0\r\n\r\n", chunk(result)).as_bytes()).await;
                });
            }
        });
        GatedSse { url, release }
    }
}

/// Reads frames until `text` (accumulated) satisfies `done` (hang guard 10 s).
pub async fn read_until(body: &mut hyper::body::Incoming, text: &mut String, done: impl Fn(&str) -> bool) {
    while !done(text) {
        let frame = tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::frame(body))
            .await
            .unwrap_or_else(|_| panic!("stalled; received so far: {text:?}"))
            .expect("stream ended early")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}
