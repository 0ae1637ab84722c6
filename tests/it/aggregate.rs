//! Workspaces with several servers (contract §7): the gateway as the MCP
//! server, on real sockets, in front of session-keeping upstreams that record
//! what they receive. The official SDKs are exercised in tests/py.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis::config::Config;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

type UpBody = BoxBody<Bytes, Infallible>;

/// What an upstream received: the message and the session header it came with.
#[derive(Debug, Clone)]
struct Received {
    msg: Value,
    session: Option<String>,
    authorization: Option<String>,
    configured: Option<String>,
    /// `Mcp-Name`, set by the gateway on stateless-revision requests.
    mcp_name: Option<String>,
}

#[derive(Default)]
struct UpState {
    sessions: HashSet<String>,
    received: Vec<Received>,
    /// The `ask` tool waits here for the client's answer to its sampling request.
    pending: Option<oneshot::Sender<Value>>,
    /// Open GET streams, to push notifications on.
    streams: Vec<mpsc::Sender<Bytes>>,
    next: u64,
}

/// A small stateful MCP server: sessions (404 for unknown ones), a paginated
/// tool list with a name that must be shortened, a tool that asks the client
/// for sampling mid-call, resources (one URI shared with its twin), a GET
/// stream.
struct McpUpstream {
    url: String,
    state: Arc<Mutex<UpState>>,
    stop: CancellationToken,
    /// The accept loop; it returns once the server has closed its listener
    /// and every connection (the event a test waits for after `stop`).
    served: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl McpUpstream {
    async fn start(label: &str) -> Self {
        Self::start_on(label, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    async fn start_on(label: &str, listener: TcpListener) -> Self {
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let state: Arc<Mutex<UpState>> = Arc::default();
        let stop = CancellationToken::new();
        let (st, lb) = (Arc::clone(&state), label.to_owned());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (st, lb) = (Arc::clone(&st), lb.clone());
            async move { Ok::<_, Infallible>(upstream_handle(&lb, &st, req).await) }
        });
        let opts = portcullis::server::ConnOptions {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1000,
            shutdown_grace: Duration::from_millis(50),
        };
        let served = tokio::spawn(portcullis::server::serve("mcp-upstream", listener, svc, opts, stop.clone()));
        McpUpstream {
            url,
            state,
            stop,
            served: Mutex::new(Some(served)),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
    fn calls(&self, method: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.msg["method"] == method).collect()
    }
    fn forget_sessions(&self) {
        self.state.lock().unwrap().sessions.clear();
    }
    async fn notify_streams(&self, msg: Value) {
        let streams = self.state.lock().unwrap().streams.clone();
        for s in streams {
            let _ = s.send(sse(&msg)).await;
        }
    }
    /// Stops the server and waits until it is gone: listener and connections closed.
    async fn stop(&self) {
        self.stop.cancel();
        let served = self.served.lock().unwrap().take();
        if let Some(h) = served {
            h.await.unwrap();
        }
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

fn up_json(status: StatusCode, v: Value, session: Option<&str>) -> Response<UpBody> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    if let Some(s) = session {
        r.headers_mut().insert("mcp-session-id", s.parse().unwrap());
    }
    r
}

fn up_stream(rx: mpsc::Receiver<Bytes>) -> Response<UpBody> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(8);
    tokio::spawn(async move {
        let mut rx = rx;
        while let Some(b) = rx.recv().await {
            if tx.send_data(b).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(body.boxed());
    r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    r
}

async fn upstream_handle(label: &str, st: &Arc<Mutex<UpState>>, req: Request<Incoming>) -> Response<UpBody> {
    let h = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let (session, authorization, configured) = (h("mcp-session-id"), h("authorization"), h("x-configured"));
    let mcp_name = h("mcp-name");
    let method = req.method().clone();
    let known = session.as_ref().is_some_and(|s| st.lock().unwrap().sessions.contains(s));
    if method == Method::GET {
        if !known {
            return up_json(StatusCode::NOT_FOUND, json!({}), None);
        }
        let (tx, rx) = mpsc::channel(8);
        st.lock().unwrap().streams.push(tx);
        return up_stream(rx);
    }
    if method == Method::DELETE {
        st.lock().unwrap().sessions.remove(session.as_deref().unwrap_or_default());
        return up_json(StatusCode::OK, json!({}), None);
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.lock().unwrap().received.push(Received {
        msg: msg.clone(),
        session: session.clone(),
        authorization,
        configured,
        mcp_name,
    });
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let m = msg.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    if m == "initialize" {
        let sid = {
            let mut s = st.lock().unwrap();
            s.next += 1;
            let sid = format!("{label}-session-{}", s.next);
            s.sessions.insert(sid.clone());
            sid
        };
        let result = json!({"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}, "resources": {"subscribe": true}, "prompts": {}},
            "serverInfo": {"name": label, "version": "1"}});
        return up_json(StatusCode::OK, json!({"jsonrpc": "2.0", "id": id, "result": result}), Some(&sid));
    }
    if !known {
        return up_json(
            StatusCode::NOT_FOUND,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": "Session not found"}}),
            None,
        );
    }
    if msg.get("method").is_none() {
        // The client's answer to our sampling request.
        if let Some(tx) = st.lock().unwrap().pending.take() {
            let _ = tx.send(msg.clone());
        }
        return up_json(StatusCode::ACCEPTED, json!({}), None);
    }
    if msg.get("id").is_none() {
        return up_json(StatusCode::ACCEPTED, json!({}), None);
    }
    let ok = |result: Value| up_json(StatusCode::OK, json!({"jsonrpc": "2.0", "id": id, "result": result}), None);
    let text = |t: String| json!({"content": [{"type": "text", "text": t}]});
    let long_name = format!("tool.with.dots.{}", "x".repeat(60));
    match m.as_str() {
        "tools/list" => match msg.pointer("/params/cursor").and_then(Value::as_str) {
            None => ok(json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}], "nextCursor": "page2"})),
            Some("page2") => ok(
                json!({"tools": [{"name": "ask", "inputSchema": {"type": "object"}}, {"name": long_name, "inputSchema": {"type": "object"}}]}),
            ),
            Some(_) => up_json(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "bad cursor"}}),
                None,
            ),
        },
        "tools/call" => {
            let name = msg["params"]["name"].as_str().unwrap_or_default().to_owned();
            if name == "ask" {
                let (tx, rx) = mpsc::channel(8);
                let (answer_tx, answer_rx) = oneshot::channel();
                st.lock().unwrap().pending = Some(answer_tx);
                tokio::spawn(async move {
                    let q =
                        json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 5}});
                    tx.send(sse(&q)).await.unwrap();
                    let answer = answer_rx.await.unwrap();
                    let a = answer["result"]["content"]["text"].as_str().unwrap_or("?").to_owned();
                    let r = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": format!("client said {a} (id {})", answer["id"])}]}});
                    tx.send(sse(&r)).await.unwrap();
                });
                return up_stream(rx);
            }
            let args = msg["params"]["arguments"]["text"].as_str().unwrap_or_default();
            ok(text(format!("{label}:{name}:{args}")))
        }
        "resources/list" => ok(
            json!({"resources": [{"uri": "file:///shared.txt", "name": "shared"}, {"uri": format!("mem://{label}/only"), "name": "only"}]}),
        ),
        "resources/templates/list" => ok(json!({"resourceTemplates": [{"uriTemplate": format!("tmpl://{label}/{{id}}"), "name": "t"}]})),
        "resources/read" => {
            let uri = msg["params"]["uri"].as_str().unwrap_or_default();
            ok(json!({"contents": [{"uri": uri, "text": format!("{label} has {uri}")}]}))
        }
        "prompts/list" => ok(json!({"prompts": [{"name": "greet"}]})),
        "prompts/get" => ok(json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("hello from {label}")}}]})),
        "ping" => ok(json!({})),
        _ => up_json(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            None,
        ),
    }
}

/// A gateway with a `team` workspace of the given servers, plus extra TOML.
async fn team(servers: &[(&str, &str)], ws_extra: &str, server_extra: &str) -> Gateway {
    let demo = DemoUpstream::start().await;
    let mut setup = Setup::new(&demo.url).server(&format!("session_keys = [\"{KEY_A}\"]\n{server_extra}"));
    std::mem::forget(demo); // lives for the test process; only the `demo` workspace uses it
    let mut ws = format!("[[workspaces]]\nslug = \"team\"\n{ws_extra}\n");
    for (name, url) in servers {
        ws.push_str(&format!(
            "[[workspaces.servers]]\nname = \"{name}\"\nurl = \"{url}\"\nheaders = {{ X-Configured = \"yes\" }}\ntimeout_ms = 3000\nconnect_timeout_ms = 500\n"
        ));
    }
    setup = setup.raw(&ws);
    setup.start().await
}

struct Client<'a> {
    gw: &'a Gateway,
    token: String,
    session: Option<String>,
}

impl Client<'_> {
    async fn post(&self, body: Value) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let mut h = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", auth.as_str()),
        ];
        if let Some(s) = &self.session {
            h.push(("mcp-session-id", s.as_str()));
        }
        send(Method::POST, &self.gw.ws_url("team"), &h, body.to_string()).await
    }

    async fn initialize(&mut self) -> Value {
        let r = self
            .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}, "clientInfo": {"name": "it", "version": "1"}}}))
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        self.session = Some(r.header("mcp-session-id").to_owned());
        r.json()
    }

    async fn request(&self, id: i64, method: &str, params: Value) -> Resp {
        self.post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    async fn result(&self, method: &str, params: Value) -> Value {
        let r = self.request(1, method, params).await;
        assert_eq!(r.status, 200, "{method}: {}", String::from_utf8_lossy(&r.body));
        let v = answer(&r);
        assert!(v.get("result").is_some(), "{method}: {v}");
        v["result"].clone()
    }
}

/// The JSON-RPC answer of a response, JSON or event stream.
fn answer(r: &Resp) -> Value {
    let text = String::from_utf8_lossy(&r.body);
    if r.headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"))
    {
        let last = text.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().expect("an event");
        serde_json::from_str(last).unwrap()
    } else {
        r.json()
    }
}

fn names(v: &Value, key: &str, field: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_str().unwrap().to_owned())
        .collect()
}

fn as_client<'a>(gw: &'a Gateway, token: &str, session: Option<&str>) -> Client<'a> {
    Client {
        gw,
        token: token.to_owned(),
        session: session.map(str::to_owned),
    }
}

async fn client<'a>(gw: &'a Gateway, extra: Value) -> Client<'a> {
    let (token, _) = gw.create_token("team", extra).await;
    Client { gw, token, session: None }
}

#[tokio::test]
async fn one_server_per_prefix_every_page_merged_and_calls_routed_with_the_upstream_session() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let mut c = client(&gw, json!({})).await;
    let init = c.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "portcullis");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(init["result"]["capabilities"]["resources"]["subscribe"], true);
    // Each upstream was initialised with the client's capabilities and got its
    // own session; the client's token went nowhere.
    for up in [&a, &b] {
        let inits = up.calls("initialize");
        assert_eq!(inits.len(), 1);
        assert_eq!(inits[0].msg["params"]["capabilities"], json!({"sampling": {}}));
        assert_eq!(up.calls("notifications/initialized").len(), 1);
        assert!(
            up.received()
                .iter()
                .all(|r| r.authorization.is_none() && r.configured.as_deref() == Some("yes"))
        );
    }

    let tools = c.result("tools/list", json!({})).await;
    let listed = names(&tools, "tools", "name");
    assert_eq!(listed.len(), 6, "{listed:?}");
    for n in &listed {
        assert!(
            n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{n}"
        );
    }
    assert!(listed.contains(&"a__echo".into()) && listed.contains(&"b__echo".into()) && listed.contains(&"b__ask".into()));
    let mangled = listed
        .iter()
        .find(|n| n.starts_with("b__tool_with_dots"))
        .expect("shortened name")
        .clone();

    let r = c
        .result("tools/call", json!({"name": "b__echo", "arguments": {"text": "hi"}}))
        .await;
    assert_eq!(r["content"][0]["text"], "b:echo:hi");
    let r = c.result("tools/call", json!({"name": mangled, "arguments": {"text": "x"}})).await;
    assert_eq!(r["content"][0]["text"], format!("b:tool.with.dots.{}:x", "x".repeat(60)));
    let call = b.calls("tools/call").pop().unwrap();
    assert_eq!(call.session.as_deref(), Some("b-session-1"));
    assert!(a.calls("tools/call").is_empty());

    // Prompts carry the prefix too; completion of a prompt argument is routed.
    let prompts = c.result("prompts/list", json!({})).await;
    assert_eq!(names(&prompts, "prompts", "name"), vec!["a__greet", "b__greet"]);
    let p = c.result("prompts/get", json!({"name": "a__greet"})).await;
    assert_eq!(p["messages"][0]["content"]["text"], "hello from a");
    assert_eq!(a.calls("prompts/get")[0].msg["params"]["name"], "greet");

    // Bad requests get JSON-RPC errors with a 4xx, never a crash.
    for (params, method, code) in [
        (json!({"name": "c__echo"}), "tools/call", -32602),
        (json!({"name": "echo"}), "tools/call", -32602),
        (json!({}), "tools/call", -32602),
        (json!({"cursor": "abc"}), "tools/list", -32602),
        (json!({}), "server/discover", -32601),
    ] {
        let r = c.request(9, method, params.clone()).await;
        assert_eq!(r.status, 400, "{method} {params}");
        assert_eq!(rpc_error(&r).0, code, "{method} {params}");
        assert_eq!(r.json()["id"], 9);
    }
    let r = c.request(9, "tools/call", json!({"name": "c__echo"})).await;
    assert_eq!(r.json()["error"]["data"]["detail"], "Unknown tool: c__echo");
    assert_eq!(c.result("ping", json!({})).await, json!({}));
}

#[tokio::test]
async fn resources_keep_their_uris_unless_two_servers_collide() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let mut c = client(&gw, json!({})).await;
    c.initialize().await;
    let list = c.result("resources/list", json!({})).await;
    assert_eq!(
        names(&list, "resources", "uri"),
        vec![
            "file:///shared.txt",
            "mem://a/only",
            "portcullis://b/file:///shared.txt",
            "mem://b/only"
        ]
    );
    for (uri, want, server) in [
        ("file:///shared.txt", "a has file:///shared.txt", &a),
        ("portcullis://b/file:///shared.txt", "b has file:///shared.txt", &b),
        ("mem://b/only", "b has mem://b/only", &b),
        ("tmpl://b/42", "b has tmpl://b/42", &b),
    ] {
        let r = c.result("resources/read", json!({"uri": uri})).await;
        assert_eq!(r["contents"][0]["text"], want, "{uri}");
        assert_eq!(r["contents"][0]["uri"], uri, "read back under the URI the client asked for");
        let original = uri.strip_prefix("portcullis://b/").unwrap_or(uri);
        assert_eq!(
            server.calls("resources/read").pop().unwrap().msg["params"]["uri"],
            original,
            "{uri}"
        );
    }
    let t = c.result("resources/templates/list", json!({})).await;
    assert_eq!(
        names(&t, "resourceTemplates", "uriTemplate"),
        vec!["tmpl://a/{id}", "tmpl://b/{id}"]
    );
}

#[tokio::test]
async fn session_ids_are_sealed_bound_to_the_token_and_survive_restarts_and_other_instances() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let mut gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let (token, sid) = {
        let mut c = client(&gw, json!({})).await;
        c.initialize().await;
        (c.token.clone(), c.session.clone().unwrap())
    };
    assert!(
        !sid.contains("a-session") && !sid.contains("b-session"),
        "upstream ids are sealed: {sid}"
    );

    // Without a session, with junk, with someone else's token.
    {
        // A client that never sends session ids is served anyway (on
        // upstream sessions kept for its token); a GET needs a session.
        let r = as_client(&gw, &token, None).request(1, "tools/list", json!({})).await;
        assert_eq!(names(&r.json()["result"], "tools", "name").len(), 6);
        let auth = format!("Bearer {token}");
        let r = send(
            Method::GET,
            &gw.ws_url("team"),
            &[("accept", "text/event-stream"), ("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!((r.status.as_u16(), rpc_error(&r).0), (400, -32600));
        let junk = as_client(
            &gw,
            &token,
            Some("pcs1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        );
        let r = junk.request(1, "tools/list", json!({})).await;
        assert_eq!((r.status.as_u16(), rpc_error(&r).0), (404, -32600));
        let (other, _) = gw.create_token("team", json!({})).await;
        let thief = Client {
            gw: &gw,
            token: other,
            session: Some(sid.clone()),
        };
        let r = thief.request(1, "tools/list", json!({})).await;
        assert_eq!(
            (r.status.as_u16(), rpc_error(&r).0, r.json()["id"].clone()),
            (401, -31001, json!(1))
        );
        assert!(r.header("www-authenticate").contains("invalid_token"));
    }

    // Restart: same keys, same session, same upstream sessions.
    let inits = a.calls("initialize").len();
    gw.restart().await;
    let r = as_client(&gw, &token, Some(&sid))
        .result("tools/call", json!({"name": "a__echo", "arguments": {"text": "after restart"}}))
        .await;
    assert_eq!(r["content"][0]["text"], "a:echo:after restart");
    assert_eq!(a.calls("tools/call").pop().unwrap().session.as_deref(), Some("a-session-1"));
    assert_eq!(a.calls("initialize").len(), inits, "no re-initialisation was needed");

    // A second instance on the same store and keys continues the session.
    let second = portcullis::app::start(Config::from_toml(std::path::Path::new("t.toml"), &gw.config_text, &|_| None).unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/ws/team", second.data_addr);
    let auth = format!("Bearer {token}");
    let r = send(
        Method::POST,
        &url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("authorization", &auth),
            ("mcp-session-id", &sid),
        ],
        rpc(
            json!(5),
            "tools/call",
            json!({"name": "b__echo", "arguments": {"text": "elsewhere"}}),
        ),
    )
    .await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "b:echo:elsewhere");
    second.shutdown();

    // Key rotation: a new key first, the old one still listed, opens it; once
    // the old key is dropped the session is unknown (404: the client starts over).
    gw.config_text = gw
        .config_text
        .replace(&format!("[\"{KEY_A}\"]"), &format!("[\"{KEY_B}\", \"{KEY_A}\"]"));
    gw.restart().await;
    as_client(&gw, &token, Some(&sid)).result("tools/list", json!({})).await;
    gw.config_text = gw.config_text.replace(&format!(", \"{KEY_A}\""), "");
    gw.restart().await;
    let r = as_client(&gw, &token, Some(&sid)).request(1, "tools/list", json!({})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn an_upstream_that_forgets_its_session_is_initialised_again_unseen() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let mut c = client(&gw, json!({})).await;
    c.initialize().await;
    a.forget_sessions();
    let r = c
        .result("tools/call", json!({"name": "a__echo", "arguments": {"text": "again"}}))
        .await;
    assert_eq!(r["content"][0]["text"], "a:echo:again");
    assert_eq!(a.calls("initialize").len(), 2);
    assert_eq!(a.calls("tools/call").pop().unwrap().session.as_deref(), Some("a-session-2"));
    // And the renewed session is reused, not renewed per request.
    c.result("tools/list", json!({})).await;
    assert_eq!(a.calls("initialize").len(), 2);
}

#[tokio::test]
async fn a_scoped_token_sees_and_calls_only_its_servers() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let mut c = client(&gw, json!({"allowed_servers": ["a"]})).await;
    c.initialize().await;
    assert!(b.calls("initialize").is_empty(), "no session is opened where the token may not go");
    let tools = c.result("tools/list", json!({})).await;
    assert!(names(&tools, "tools", "name").iter().all(|n| n.starts_with("a__")));
    let res = c.result("resources/list", json!({})).await;
    assert_eq!(names(&res, "resources", "uri"), vec!["file:///shared.txt", "mem://a/only"]);
    for (method, params) in [
        ("tools/call", json!({"name": "b__echo", "arguments": {"text": "x"}})),
        ("prompts/get", json!({"name": "b__greet"})),
        ("resources/read", json!({"uri": "portcullis://b/file:///shared.txt"})),
    ] {
        let r = c.request(3, method, params).await;
        assert_eq!((r.status.as_u16(), rpc_error(&r).0), (403, -31003), "{method}");
    }
    assert!(b.calls("tools/call").is_empty() && b.calls("prompts/get").is_empty());
}

#[tokio::test]
async fn server_requests_are_relayed_and_the_answer_routed_back() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let mut c = client(&gw, json!({})).await;
    c.initialize().await;
    // Start the call and read its stream as it arrives.
    let auth = format!("Bearer {}", c.token);
    let req = Request::post(gw.ws_url("team"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", &auth)
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .body(Full::new(Bytes::from(rpc(
            json!(40),
            "tools/call",
            json!({"name": "b__ask", "arguments": {}}),
        ))))
        .unwrap();
    let resp = crate::harness::client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let question = loop {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(f.data_ref().unwrap()));
        if let Some(l) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
            break serde_json::from_str::<Value>(l).unwrap();
        }
    };
    assert_eq!(question["method"], "sampling/createMessage");
    assert_eq!(question["id"], "b__7", "the upstream's id, prefixed with its server");
    let r = c
        .post(json!({"jsonrpc": "2.0", "id": question["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "forty-two"}, "model": "m"}}))
        .await;
    assert_eq!(r.status, 202);
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let last = String::from_utf8_lossy(&rest)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_owned))
        .next_back()
        .unwrap();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["id"], 40);
    assert_eq!(v["result"]["content"][0]["text"], "client said forty-two (id 7)");
    // An answer naming no server of this session is refused.
    let r = c.post(json!({"jsonrpc": "2.0", "id": "zz__1", "result": {}})).await;
    assert_eq!(r.status, 400);
    // Routed by its prefix: the other server never saw a call.
    assert!(a.calls("tools/call").is_empty());
}

// A routed call's stream that the upstream closes before answering (SEP-1699
// polling) and the gateway resuming it with GET + Last-Event-ID is tested with
// the real Python SDK server, which does this on demand (`ctx.close_sse_stream()`
// with an event store): tests/py/test_multi_server.py,
// test_call_stream_closed_by_the_upstream_is_resumed_by_the_gateway.

#[tokio::test]
async fn the_get_stream_merges_upstream_notifications_and_reports_a_dead_upstream() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let mut c = client(&gw, json!({})).await;
    c.initialize().await;
    let auth = format!("Bearer {}", c.token);
    let req = Request::get(gw.ws_url("team"))
        .header("accept", "text/event-stream")
        .header("authorization", &auth)
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = crate::harness::client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut next_message = async || -> Value {
        let mut text = String::new();
        loop {
            let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("an event in time")
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(f.data_ref().unwrap()));
            if let Some(l) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(l).unwrap();
            }
        }
    };
    // Wait until both upstream streams are attached, then push on one.
    let attached = || a.state.lock().unwrap().streams.len() == 1 && b.state.lock().unwrap().streams.len() == 1;
    for _ in 0..500 {
        if attached() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(attached(), "the gateway never opened both upstream streams");
    a.notify_streams(json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "mem://a/only"}}))
        .await;
    assert_eq!(next_message().await["params"]["uri"], "mem://a/only");
    b.notify_streams(json!({"jsonrpc": "2.0", "id": 3, "method": "roots/list"})).await;
    assert_eq!(next_message().await["id"], "b__3");

    // b dies: lists leave it out (fail_open), its calls fail clearly, and the
    // open stream is told the tool set changed.
    b.stop().await;
    let tools = c.result("tools/list", json!({})).await;
    assert!(names(&tools, "tools", "name").iter().all(|n| n.starts_with("a__")), "{tools}");
    assert_eq!(next_message().await["method"], "notifications/tools/list_changed");
    let r = c
        .request(4, "tools/call", json!({"name": "b__echo", "arguments": {"text": "x"}}))
        .await;
    assert_eq!(
        (r.status.as_u16(), rpc_error(&r).0, r.json()["id"].clone()),
        (502, -32603, json!(4))
    );
    let r = c
        .result("tools/call", json!({"name": "a__echo", "arguments": {"text": "still"}}))
        .await;
    assert_eq!(r["content"][0]["text"], "a:echo:still");
}

#[tokio::test]
async fn fail_open_serves_the_living_and_fail_closed_refuses() {
    let a = McpUpstream::start("a").await;
    let dead = dead_address().await;
    let gw = team(&[("a", &a.url), ("gone", &dead)], "", "").await;
    let mut c = client(&gw, json!({})).await;
    c.initialize().await;
    let tools = c.result("tools/list", json!({})).await;
    assert_eq!(names(&tools, "tools", "name").len(), 3);
    let r = c.request(2, "tools/call", json!({"name": "gone__echo", "arguments": {}})).await;
    assert_eq!((r.status.as_u16(), rpc_error(&r).0), (502, -32603));

    // The dead server comes up later: the same session starts using it.
    let listener = TcpListener::bind(dead.trim_start_matches("http://").trim_end_matches("/mcp"))
        .await
        .unwrap();
    let revived = McpUpstream::start_on("gone", listener).await;
    let mut listed = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        listed = names(&c.result("tools/list", json!({})).await, "tools", "name").len();
        if listed == 6 {
            break;
        }
    }
    assert_eq!(listed, 6, "the health probe brought the server back");
    let r = c
        .result("tools/call", json!({"name": "gone__echo", "arguments": {"text": "back"}}))
        .await;
    assert_eq!(r["content"][0]["text"], "gone:echo:back");
    assert_eq!(revived.calls("initialize").len(), 1, "initialised lazily for this session");

    let closed = team(
        &[("a", &a.url), ("gone", &dead_address().await)],
        "failure_mode = \"fail_closed\"",
        "",
    )
    .await;
    let c = client(&closed, json!({})).await;
    let r = c
        .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}}))
        .await;
    assert_eq!((r.status.as_u16(), rpc_error(&r).0), (502, -32603));
    assert!(!r.headers.contains_key("mcp-session-id"), "a refused handshake opens no session");
}

#[tokio::test]
async fn the_stateless_revision_is_served_without_a_session_and_its_headers_are_checked() {
    let (a, b) = (McpUpstream::start("a").await, McpUpstream::start("b").await);
    let gw = team(&[("a", &a.url), ("b", &b.url)], "", "").await;
    let (token, _) = gw.create_token("team", json!({})).await;
    let (scoped, _) = gw.create_token("team", json!({"allowed_servers": ["a"]})).await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "1"}, "io.modelcontextprotocol/clientCapabilities": {}});
    let post = async |token: &str, method_header: Option<&str>, name_header: Option<&str>, body: Value| {
        let auth = format!("Bearer {token}");
        let mut h = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("authorization", auth.as_str()),
            ("mcp-protocol-version", "2026-07-28"),
        ];
        if let Some(m) = method_header {
            h.push(("mcp-method", m));
        }
        if let Some(n) = name_header {
            h.push(("mcp-name", n));
        }
        send(Method::POST, &gw.ws_url("team"), &h, body.to_string()).await
    };
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}});
    let r = post(&token, Some("server/discover"), None, discover.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let d = r.json()["result"].clone();
    assert_eq!(d["supportedVersions"][0], "2026-07-28");
    assert_eq!(d["cacheScope"], "private");
    assert_eq!(d["resultType"], "complete");
    assert_eq!(d["capabilities"]["resources"]["subscribe"], true);
    assert!(r.headers.get("mcp-session-id").is_none());

    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "b__echo", "arguments": {"text": "s"}, "_meta": meta}});
    for _ in 0..2 {
        let r = post(&token, Some("tools/call"), Some("b__echo"), call.clone()).await;
        assert_eq!(answer(&r)["result"]["content"][0]["text"], "b:echo:s");
    }
    let seen = b.calls("tools/call").pop().unwrap();
    assert_eq!(
        (seen.msg["params"]["name"].as_str(), seen.mcp_name.as_deref()),
        (Some("echo"), Some("echo")),
        "rewritten in body and header"
    );
    assert_eq!(
        b.calls("initialize").len(),
        1,
        "one upstream session serves the token's stateless requests"
    );
    let r = post(
        &token,
        Some("tools/list"),
        None,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": meta}}),
    )
    .await;
    assert_eq!(names(&r.json()["result"], "tools", "name").len(), 6);

    for (m, n) in [
        (Some("tools/call"), Some("a__echo")),
        (Some("tools/list"), Some("b__echo")),
        (None, Some("b__echo")),
        (Some("tools/call"), None),
    ] {
        let r = post(&token, m, n, call.clone()).await;
        assert_eq!(
            (r.status.as_u16(), rpc_error(&r).0, r.json()["id"].clone()),
            (400, -32020, json!(2)),
            "{m:?} {n:?}"
        );
    }
    let r = post(&scoped, Some("tools/call"), Some("b__echo"), call.clone()).await;
    assert_eq!((r.status.as_u16(), rpc_error(&r).0), (403, -31003));
}

#[test]
fn config_requires_valid_session_keys_and_failure_mode() {
    let base = "[[workspaces]]\nslug = \"t\"\n%WS%\n[[workspaces.servers]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\n[[workspaces.servers]]\nname = \"b\"\nurl = \"http://127.0.0.1:2/mcp\"\n";
    let load = |server: &str, ws: &str| {
        let text = format!("[server]\n{server}\n{}", base.replace("%WS%", ws));
        Config::from_toml(std::path::Path::new("t.toml"), &text, &|_| None).map_err(|e| e.to_string())
    };
    let e = load("", "").unwrap_err();
    assert!(e.contains("server.session_keys") && e.contains("openssl rand -hex 32"), "{e}");
    let e = load("session_keys = [\"abc\"]", "").unwrap_err();
    assert!(e.contains("server.session_keys[0]"), "{e}");
    let e = load(&format!("session_keys = [\"{KEY_A}\"]"), "failure_mode = \"maybe\"").unwrap_err();
    assert!(e.contains("failure_mode"), "{e}");
    assert!(load(&format!("session_keys = [\"{KEY_A}\"]"), "failure_mode = \"fail_closed\"").is_ok());
}
