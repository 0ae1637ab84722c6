//! Isolation between tokens and input hygiene (issue 17): what one token
//! can and cannot affect for another, and what the admin API accepts.
//! Real gateway, real SQLite, real sockets.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::token::{TokenKind, now_unix};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";

/// A small MCP server for aggregating workspaces: every instance lists the
/// same resource `file:///shared.txt` and answers reads with its label.
/// No resource templates (-32601), sessions issued but not checked.
struct LabelUpstream {
    url: String,
    reads: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl LabelUpstream {
    async fn start(label: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let reads: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = CancellationToken::new();
        let r = Arc::clone(&reads);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let r = Arc::clone(&r);
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                let method = msg["method"].as_str().unwrap_or_default().to_owned();
                let result = match method.as_str() {
                    _ if msg.get("id").is_none() => None,
                    "initialize" => Some(json!({"protocolVersion": msg["params"]["protocolVersion"],
                        "capabilities": {"resources": {}}, "serverInfo": {"name": label, "version": "1"}})),
                    "resources/list" => Some(json!({"resources": [{"uri": "file:///shared.txt", "name": "shared"}]})),
                    "resources/read" => {
                        let uri = msg["params"]["uri"].as_str().unwrap_or_default().to_owned();
                        r.lock().unwrap().push(uri.clone());
                        Some(json!({"contents": [{"uri": uri, "text": format!("{label} has {uri}")}]}))
                    }
                    _ => None,
                };
                let (status, out) = match (msg.get("id").is_some(), result) {
                    (false, _) => (StatusCode::ACCEPTED, String::new()),
                    (true, Some(result)) => (StatusCode::OK, json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()),
                    (true, None) => (
                        StatusCode::OK,
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}).to_string(),
                    ),
                };
                let mut resp = Response::new(Full::new(Bytes::from(out)));
                *resp.status_mut() = status;
                resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
                if method == "initialize" {
                    resp.headers_mut()
                        .insert("mcp-session-id", format!("{label}-session").parse().unwrap());
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let opts = portcullis::server::ConnOptions {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 100,
            shutdown_grace: Duration::from_millis(50),
        };
        tokio::spawn(portcullis::server::serve("label-upstream", listener, svc, opts, stop.clone()));
        LabelUpstream { url, reads, stop }
    }

    fn reads(&self) -> Vec<String> {
        self.reads.lock().unwrap().clone()
    }
}

impl Drop for LabelUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// POST to `/ws/{slug}` with a token and an optional session; the answer.
async fn mcp(gw: &Gateway, slug: &str, token: &str, session: Option<&str>, body: Value) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", auth.as_str()),
    ];
    if let Some(s) = session {
        h.push(("mcp-session-id", s));
    }
    send(Method::POST, &gw.ws_url(slug), &h, body.to_string()).await
}

async fn open_session(gw: &Gateway, slug: &str, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}});
    let r = mcp(gw, slug, token, None, init).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("mcp-session-id").to_owned()
}

// ------------------------------------------------------------ point 1

#[tokio::test]
async fn one_tokens_listing_never_redirects_another_tokens_resource_reads() {
    let (a, c) = (LabelUpstream::start("a").await, LabelUpstream::start("c").await);
    let demo = DemoUpstream::start().await;
    let gw = Setup::new(&demo.url)
        .server(&format!("session_keys = [\"{KEY}\"]"))
        .raw(&format!(
            "[[workspaces]]\nslug = \"team\"\n[[workspaces.servers]]\nname = \"a\"\nurl = \"{}\"\n[[workspaces.servers]]\nname = \"c\"\nurl = \"{}\"\n",
            a.url, c.url
        ))
        .start()
        .await;
    let (all, _) = gw.create_token("team", json!({})).await;
    let (only_c, _) = gw.create_token("team", json!({"allowed_servers": ["c"]})).await;
    let sa = open_session(&gw, "team", &all).await;
    let sc = open_session(&gw, "team", &only_c).await;
    async fn list(gw: &Gateway, t: &str, s: &str) -> Resp {
        mcp(
            gw,
            "team",
            t,
            Some(s),
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list"}),
        )
        .await
    }
    async fn read_as(gw: &Gateway, t: &str, s: &str, uri: &str) -> Resp {
        mcp(
            gw,
            "team",
            t,
            Some(s),
            json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}}),
        )
        .await
    }
    let text = |r: Resp| r.json()["result"]["contents"][0]["text"].as_str().unwrap_or_default().to_owned();

    // A lists first (the URI is a's for it), then the token limited to c
    // lists (the same URI is c's for it): each reads its own.
    assert_eq!(list(&gw, &all, &sa).await.status, 200);
    assert_eq!(list(&gw, &only_c, &sc).await.status, 200);
    assert_eq!(
        text(read_as(&gw, &all, &sa, "file:///shared.txt").await),
        "a has file:///shared.txt"
    );
    assert_eq!(
        text(read_as(&gw, &only_c, &sc, "file:///shared.txt").await),
        "c has file:///shared.txt"
    );
    // In the other order too, and again after the other token listed.
    assert_eq!(list(&gw, &all, &sa).await.status, 200);
    assert_eq!(
        text(read_as(&gw, &only_c, &sc, "file:///shared.txt").await),
        "c has file:///shared.txt"
    );
    assert_eq!(list(&gw, &only_c, &sc).await.status, 200);
    assert_eq!(
        text(read_as(&gw, &all, &sa, "file:///shared.txt").await),
        "a has file:///shared.txt"
    );
    assert_eq!(a.reads().len(), 2);
    assert_eq!(c.reads().len(), 2);

    // A URI nobody lists and no template matches: -32602, no guess.
    let r = read_as(&gw, &all, &sa, "file:///nobody.txt").await;
    assert_eq!((r.status.as_u16(), rpc_error(&r).0), (400, -32602));
    assert!(!a.reads().iter().chain(c.reads().iter()).any(|u| u.contains("nobody")));
}

// ------------------------------------------------------------ point 2

/// A random token with a valid checksum: passes the shape check, misses the
/// index and the negative cache, exists nowhere.
fn random_token() -> String {
    portcullis::token::generate(TokenKind::Workspace).raw
}

#[tokio::test]
async fn a_flood_of_unknown_tokens_does_not_lock_out_real_cold_tokens() {
    let up = DemoUpstream::start().await;
    let mut gw = Setup::new(&up.url).server("store_miss_reads_per_second = 6").start().await;
    let (before_restart, _) = gw.create_token("demo", json!({})).await;
    // Cold after a restart: loaded into the filter of existing hashes, not
    // into the index.
    gw.restart().await;
    let (created_after, _) = gw.create_token("demo", json!({})).await;
    // Flood until the store-read budget for unknown hashes is spent.
    let mut refused = 0;
    for _ in 0..500 {
        let r = gw.post("demo", Some(&random_token()), echo_call(1, "x")).await;
        match r.status.as_u16() {
            401 => {}
            503 => {
                refused += 1;
                break;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(refused, 1, "the flood is held back");
    // Real tokens, not in the index, are still read and served.
    for t in [&before_restart, &created_after] {
        let r = gw.post("demo", Some(t), echo_call(2, "real")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}

// ------------------------------------------------------------ point 3

#[tokio::test]
async fn a_pass_through_session_belongs_to_the_token_that_opened_it() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url).start().await;
    let (s1, _) = gw.create_token("demo", json!({})).await;
    let (s2, _) = gw.create_token("demo", json!({})).await;
    let opened = mcp(&gw, "demo", &s1, None, json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    let sid = opened.header("mcp-session-id").to_owned();
    assert_ne!(sid, "upstream-session-1", "the upstream's id is never shown");
    // The opener continues its session: the upstream gets its own id.
    let r = mcp(&gw, "demo", &s1, Some(&sid), json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[1].headers["mcp-session-id"], "upstream-session-1");
    // Another token with that session id, or with the upstream's own: 404,
    // and nothing reaches the upstream.
    for foreign in [sid.as_str(), "upstream-session-1"] {
        for method in [Method::POST, Method::GET, Method::DELETE] {
            let auth = format!("Bearer {s2}");
            let body = if method == Method::POST {
                json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}).to_string()
            } else {
                String::new()
            };
            let r = send(
                method.clone(),
                &gw.ws_url("demo"),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-session-id", foreign),
                ],
                body,
            )
            .await;
            assert_eq!(r.status, 404, "{method} {foreign}");
            assert_eq!(rpc_error(&r), (-32600, "Session not found".into()));
        }
    }
    assert_eq!(up.requests().len(), 2);
    // The binding key lives in the store: the session survives a restart
    // (and opens on every instance sharing the store).
    let mut gw = gw;
    gw.restart().await;
    let r = mcp(&gw, "demo", &s1, Some(&sid), json!({"jsonrpc": "2.0", "id": 4, "method": "ping"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(up.requests()[2].headers["mcp-session-id"], "upstream-session-1");
}

// ------------------------------------------------------------ point 4

#[tokio::test]
async fn control_and_format_characters_are_refused_in_every_string_field() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let create = |body: Value| gw.admin_call(Method::POST, "/v1/workspaces/demo/tokens", Some(body));
    for (field, bad) in [
        ("name", "a\u{1b}[31mb"),
        ("name", "evil\u{202e}txt.exe"),
        ("name", "line\u{2028}two"),
        ("name", "zero\u{200b}width"),
        ("name", "bom\u{feff}"),
        ("name", "iso\u{2066}late"),
        ("name", "c1\u{85}"),
        ("member_id", "m\u{7}"),
        ("member_id", "m\nforged: line"),
        ("member_id", "nul\u{0}"),
        ("member_id", "del\u{7f}"),
        ("email", "a\u{1b}]0;x\u{7}@example.com"),
        ("email", "a\u{200d}@example.com"),
    ] {
        let mut body = json!({"name": "ok"});
        body[field] = json!(bad);
        let r = create(body).await;
        assert_eq!(r.status, 422, "{field} {bad:?}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "invalid_field");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("`{field}`")), "{msg}");
        assert!(
            !msg.chars()
                .any(|c| c.is_control() || ('\u{200b}'..='\u{2069}').contains(&c) || c == '\u{feff}'),
            "the message echoes nothing raw: {msg:?}"
        );
    }
    let r = create(json!({"name": "ok", "allowed_servers": ["main\u{1b}"]})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`allowed_servers`"));
    // Ordinary text outside ASCII is fine.
    assert_eq!(create(json!({"name": "Zoë's läptop ✓", "member_id": "ü-1"})).await.status, 201);
}

#[tokio::test]
async fn allowed_servers_are_de_duplicated_and_capped() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let create = |body: Value| gw.admin_call(Method::POST, "/v1/workspaces/demo/tokens", Some(body));
    let many: Vec<&str> = vec!["main"; 1000];
    let r = create(json!({"name": "x", "allowed_servers": many})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`allowed_servers`"));
    let r = create(json!({"name": "x", "allowed_servers": ["main"]})).await;
    assert_eq!(r.json()["info"]["allowed_servers"], json!(["main"]));
    // Unknown names were already refused.
    assert_eq!(create(json!({"name": "x", "allowed_servers": ["nope"]})).await.status, 422);
}

#[tokio::test]
async fn duplicate_allowed_servers_are_stored_once() {
    let (a, b) = (LabelUpstream::start("a").await, LabelUpstream::start("b").await);
    let demo = DemoUpstream::start().await;
    let gw = Setup::new(&demo.url)
        .server(&format!("session_keys = [\"{KEY}\"]"))
        .raw(&format!(
            "[[workspaces]]\nslug = \"team\"\n[[workspaces.servers]]\nname = \"a\"\nurl = \"{}\"\n[[workspaces.servers]]\nname = \"b\"\nurl = \"{}\"\n",
            a.url, b.url
        ))
        .start()
        .await;
    let r = gw
        .admin_call(
            Method::POST,
            "/v1/workspaces/team/tokens",
            Some(json!({"name": "x", "allowed_servers": ["b", "b"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["info"]["allowed_servers"], json!(["b"]));
}

// ------------------------------------------------------------ point 5

#[cfg(unix)]
#[tokio::test]
async fn the_store_directory_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    gw.create_token("demo", json!({})).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(gw.db.parent().unwrap()), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", gw.db.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

// ------------------------------------------------------------ point 8

#[tokio::test]
async fn a_forged_request_id_is_replaced_not_forwarded_or_echoed() {
    let up = RecordingUpstream::start(200, Duration::ZERO).await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let auth = format!("Bearer {t}");
    let forged = r#"r1"}token_id="tkn_FORGED""#;
    let r = send(
        Method::POST,
        &gw.ws_url("demo"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x-request-id", forged),
        ],
        echo_call(1, "x"),
    )
    .await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").to_owned();
    assert_ne!(id, forged);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()) && id.len() == 32, "{id}");
    assert_eq!(up.requests()[0].headers["x-request-id"], id.as_str());
}

// ------------------------------------------------------------ point 9

#[tokio::test]
async fn the_data_listener_self_check_takes_workspace_tokens_only_and_counts_them() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).demo_workspace_keys("requests_per_minute = 2").start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let data_self = |token: String| {
        let url = format!("http://{}/v1/tokens/self", gw.data);
        async move { send(Method::GET, &url, &[("authorization", &format!("Bearer {token}"))], "").await }
    };
    // An admin token: refused on the data listener, accepted on the admin one.
    let r = data_self(gw.admin_token.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    assert_eq!(gw.admin_call(Method::GET, "/v1/tokens/self", None).await.status, 200);
    // A workspace token: counted against its limit, shared with /ws/.
    assert_eq!(data_self(t.clone()).await.status, 200);
    assert_eq!(data_self(t.clone()).await.status, 200);
    let r = data_self(t.clone()).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(gw.post("demo", Some(&t), echo_call(1, "x")).await.status, 429);
    // The admin listener keeps answering workspace tokens.
    let r = send(
        Method::GET,
        &gw.admin_url("/v1/tokens/self"),
        &[("authorization", &format!("Bearer {t}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
}

// ------------------------------------------------------------ point 10

#[tokio::test]
async fn a_scoped_admin_cannot_tell_configured_workspaces_from_unknown_ones() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let state = gw.state();
    let req = NewTokenRequest {
        name: "scoped".into(),
        kind: Some(TokenKind::Admin),
        workspace: Some("demo".into()),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (scoped, _) = lifecycle::create(Some(&state.verifier), &state.store, req, now_unix())
        .await
        .unwrap();
    for ws in ["other", "no-such-workspace"] {
        for (m, path) in [
            (Method::GET, format!("/v1/workspaces/{ws}/tokens")),
            (Method::GET, format!("/v1/workspaces/{ws}/tokens/tkn_aaaaaaaaaaaaaaaaaaaaaaaaaa")),
        ] {
            let r = gw.admin_call_as(&scoped, m, &path, None).await;
            assert_eq!(r.status, 403, "{path}");
            assert_eq!(r.json()["error"]["code"], "forbidden");
        }
    }
    // A global admin still learns that a slug is unknown.
    assert_eq!(
        gw.admin_call(Method::GET, "/v1/workspaces/no-such-workspace/tokens", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn pagination_cursors_are_opaque_and_bound_to_their_workspace() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    for _ in 0..3 {
        gw.create_token("demo", json!({})).await;
        gw.create_token("other", json!({})).await;
    }
    let page = gw
        .admin_call(Method::GET, "/v1/workspaces/demo/tokens?page_size=1", None)
        .await
        .json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert!(cursor.parse::<i64>().is_err(), "not a sequence number: {cursor}");
    let next = gw
        .admin_call(
            Method::GET,
            &format!("/v1/workspaces/demo/tokens?page_size=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(next.status, 200);
    assert_ne!(next.json()["tokens"][0]["id"], page["tokens"][0]["id"]);
    for (ws, c) in [
        ("other", cursor.as_str()),
        ("demo", "5"),
        ("demo", "12"),
        ("demo", "tkn_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("demo", "garbage"),
    ] {
        let r = gw
            .admin_call(Method::GET, &format!("/v1/workspaces/{ws}/tokens?page_size=1&cursor={c}"), None)
            .await;
        assert_eq!(r.status, 400, "{ws} {c}");
        assert_eq!(r.json()["error"]["code"], "bad_request");
        assert!(r.json()["error"]["message"].is_string());
    }
}

// ------------------------------------------------------------ the filter's source

/// Both stores list every stored hash, which the index's filter of existing
/// hashes is built from at start, and keep one shared secret (pass-through
/// session binding).
#[tokio::test]
async fn both_stores_list_their_hashes_and_share_one_secret() {
    use portcullis::store::TokenStore;
    use portcullis::store::redis::RedisStore;
    use portcullis::store::sqlite::SqliteStore;
    use portcullis::token::{self, TokenRecord};

    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().await;
    // The shared secret: made once, the same for every process and connection.
    let sqlite_path = dir.path().join("k.db");
    let a = SqliteStore::open(&sqlite_path).unwrap().shared_key().await.unwrap();
    assert!(a.is_some());
    assert_eq!(SqliteStore::open(&sqlite_path).unwrap().shared_key().await.unwrap(), a);
    let url = redis.url();
    let connect = || RedisStore::connect(&url, Duration::from_secs(2));
    let r = connect().await.unwrap().shared_key().await.unwrap();
    assert!(r.is_some() && r != a);
    assert_eq!(connect().await.unwrap().shared_key().await.unwrap(), r);
    let stores: Vec<Arc<dyn TokenStore>> = vec![
        Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap()),
        Arc::new(RedisStore::connect(&redis.url(), Duration::from_secs(2)).await.unwrap()),
    ];
    for store in stores {
        assert_eq!(store.all_hashes().await.unwrap(), Some(vec![]));
        let mut want = Vec::new();
        for i in 0..3 {
            let t = token::generate(TokenKind::Workspace);
            let record = TokenRecord {
                id: token::generate_id(),
                name: format!("t{i}"),
                workspace: Some("demo".into()),
                kind: TokenKind::Workspace,
                hint: t.hint,
                member_id: None,
                email: None,
                created_at: 1000,
                created_by: "bootstrap".into(),
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
                allowed_servers: None,
                requests_per_minute: None,
            };
            store.insert(&record, &t.hash).await.unwrap();
            want.push(t.hash);
        }
        let mut got = store.all_hashes().await.unwrap().unwrap();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}
