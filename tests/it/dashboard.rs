//! The web dashboard's server side (docs/dashboard.md, contract §9): sign-in
//! and sessions, cookie flags, expiry, sign-out, revocation, scope, CSRF and
//! the security headers, over real sockets, with the SQLite table read
//! directly and the Redis implementation against a private redis-server.
//! The browser side is tests/py/test_dashboard.py.

use std::path::Path;
use std::time::Duration;

use http::Method;
use portcullis::app;
use portcullis::auth::lifecycle::{self, NewTokenRequest};
use portcullis::config::Config;
use portcullis::store::sessions::{SessionRecord, SessionStore};
use portcullis::token::{TokenKind, now_unix};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::*;

/// A signed-in browser: its cookie and the CSRF token its pages carry.
struct Browser {
    cookie: String,
    csrf: String,
    origin: String,
}

async fn sign_in_resp(gw: &Gateway, token: &str, extra: &[(&str, &str)]) -> Resp {
    let body = format!("token={token}");
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(extra);
    send(Method::POST, &gw.admin_url("/signin"), &h, body).await
}

async fn sign_in(gw: &Gateway, token: &str) -> Browser {
    let r = sign_in_resp(gw, token, &[]).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), "/workspaces");
    let set = r.header("set-cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = send(Method::GET, &gw.admin_url("/workspaces"), &[("cookie", &cookie)], "").await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    let csrf = html
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries the CSRF token")
        .to_string();
    Browser {
        cookie,
        csrf,
        origin: format!("http://{}", gw.admin),
    }
}

impl Browser {
    fn id_hex(&self) -> &str {
        self.cookie.split_once('=').unwrap().1
    }
    async fn get(&self, gw: &Gateway, path: &str) -> Resp {
        send(Method::GET, &gw.admin_url(path), &[("cookie", &self.cookie)], "").await
    }
    /// A state-changing call as the dashboard's script makes it.
    async fn call(&self, gw: &Gateway, method: Method, path: &str, body: Option<serde_json::Value>) -> Resp {
        let h = [
            ("cookie", self.cookie.as_str()),
            ("x-csrf-token", self.csrf.as_str()),
            ("origin", self.origin.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ];
        send(method, &gw.admin_url(path), &h, body.map(|b| b.to_string()).unwrap_or_default()).await
    }
}

async fn admin_token(gw: &Gateway, workspace: Option<&str>) -> (String, String) {
    let state = gw.state();
    let req = NewTokenRequest {
        name: "dash-admin".into(),
        kind: Some(TokenKind::Admin),
        workspace: workspace.map(Into::into),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (raw, rec) = lifecycle::create(Some(&state.verifier), &state.store, req, now_unix())
        .await
        .unwrap();
    (raw, rec.id)
}

/// Whether `html` has an attribute like ` onclick=`.
fn has_event_attribute(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.chars().take_while(|c| c.is_ascii_lowercase()).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

fn assert_session_ended(r: &Resp) {
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "session_expired");
}

#[tokio::test]
async fn sign_in_sets_a_strict_httponly_cookie_and_pages_carry_the_security_headers() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let r = sign_in_resp(&gw, &gw.admin_token, &[]).await;
    let set = r.header("set-cookie");
    assert!(set.starts_with("portcullis_session="), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: no Secure ({set})");
    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = sign_in_resp(&gw, &gw.admin_token, &[("x-forwarded-proto", "https")]).await;
    assert!(r.header("set-cookie").contains("; Secure"));

    for path in ["/", "/assets/app.js", "/v1/workspaces", "/healthz"] {
        let r = send(Method::GET, &gw.admin_url(path), &[], "").await;
        let csp = r.header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(r.header("referrer-policy"), "no-referrer");
    }
    // The pages themselves have no inline script or style.
    let b = sign_in(&gw, &gw.admin_token).await;
    for path in [
        "/",
        "/workspaces",
        "/workspaces/demo/tokens",
        "/workspaces/demo/usage",
        "/workspaces/demo/audit",
        "/workspaces/demo/servers",
    ] {
        let page = String::from_utf8_lossy(&b.get(&gw, path).await.body).to_string();
        assert!(
            !page.contains("<script>") && !page.contains(" style=") && !page.contains("<style"),
            "{path}"
        );
        assert!(!has_event_attribute(&page), "{path} has an inline event handler");
    }
}

#[tokio::test]
async fn a_secure_cookie_when_the_public_url_is_https() {
    let up = DemoUpstream::start().await;
    let mut gw = Setup::new(&up.url).start().await;
    gw.stop().await;
    gw.config_text = gw
        .config_text
        .replace("public_url = \"http://gateway.test\"", "public_url = \"https://gateway.test\"");
    gw.restart().await;
    let r = sign_in_resp(&gw, &gw.admin_token, &[]).await;
    assert!(r.header("set-cookie").contains("; Secure"));
}

#[tokio::test]
async fn the_session_id_is_hashed_at_rest_and_the_admin_token_is_not_kept() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let b = sign_in(&gw, &gw.admin_token).await;
    let id: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&b.id_hex()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let expected: [u8; 32] = Sha256::digest(&id).into();
    let db = rusqlite::Connection::open(&gw.db).unwrap();
    let (hash, admin_id, admin_hash): (Vec<u8>, String, Vec<u8>) = db
        .query_row(
            "SELECT id_hash, admin_token_id, admin_token_hash FROM dashboard_sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(hash, expected);
    assert!(admin_id.starts_with("tkn_"));
    assert_eq!(admin_hash, Sha256::digest(gw.admin_token.as_bytes()).to_vec());
    drop(db);
    // Neither the session id nor the admin token is anywhere in the files.
    let files = [
        std::fs::read(&gw.db).unwrap(),
        std::fs::read(format!("{}-wal", gw.db.display())).unwrap_or_default(),
    ];
    for bytes in files {
        assert!(!bytes.windows(32).any(|w| w == &id[..]), "raw session id stored");
        assert!(!bytes.windows(64).any(|w| w == b.id_hex().as_bytes()), "session id (hex) stored");
        assert!(
            !bytes.windows(36).any(|w| w == &gw.admin_token.as_bytes()[4..]),
            "admin token stored"
        );
    }
}

#[tokio::test]
async fn an_idle_session_ends() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url)
        .raw("[dashboard]\nidle_timeout = \"2s\"\nabsolute_timeout = \"1h\"")
        .start()
        .await;
    let b = sign_in(&gw, &gw.admin_token).await;
    assert_eq!(b.get(&gw, "/v1/workspaces").await.status, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_session_ended(&b.get(&gw, "/v1/workspaces").await);
    // The page sends the browser back to sign-in and clears the cookie.
    let page = b.get(&gw, "/workspaces").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), "/");
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_timeout_even_when_used() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url)
        .raw("[dashboard]\nidle_timeout = \"3s\"\nabsolute_timeout = \"4s\"")
        .start()
        .await;
    let b = sign_in(&gw, &gw.admin_token).await;
    // Used at 0, 1.3 and 2.6 s (never idle for 3 s), then at 4.1 s: past the
    // absolute end (whole seconds: 4.1 s after sign-in is past it however
    // the second boundaries fall), 1.5 s after the last use.
    for i in 0..3 {
        assert_eq!(b.get(&gw, "/v1/workspaces").await.status, 200, "use {i}");
        tokio::time::sleep(Duration::from_millis(if i < 2 { 1300 } else { 1500 })).await;
    }
    assert_session_ended(&b.get(&gw, "/v1/workspaces").await);
}

#[tokio::test]
async fn sign_out_deletes_the_session_and_clears_the_cookie() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let b = sign_in(&gw, &gw.admin_token).await;
    // Without the CSRF field, sign-out is refused (no forced sign-out).
    let r = send(Method::POST, &gw.admin_url("/signout"), &[("cookie", &b.cookie)], "").await;
    assert_eq!(r.status, 403);
    let form = format!("csrf={}", b.csrf);
    let r = send(
        Method::POST,
        &gw.admin_url("/signout"),
        &[("cookie", &b.cookie), ("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    assert_session_ended(&b.get(&gw, "/v1/workspaces").await);
    let db = rusqlite::Connection::open(&gw.db).unwrap();
    let n: i64 = db.query_row("SELECT COUNT(*) FROM dashboard_sessions", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    // Both ends of the session are in the audit trail (control-plane
    // events are written before the call returns), with the admin token as
    // actor and neither the token nor the session id in them.
    let trail = gw.admin_call(Method::GET, "/v1/audit?page_size=50", None).await;
    assert_eq!(trail.status, 200);
    let text = String::from_utf8_lossy(&trail.body).to_string();
    let events = trail.json()["events"].as_array().cloned().unwrap();
    for kind in ["signin", "signout"] {
        let e = events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {text}"));
        assert!(e["actor"].as_str().is_some_and(|a| a.starts_with("tkn_")), "{e}");
    }
    assert!(!text.contains(&gw.admin_token) && !text.contains(b.id_hex()), "{text}");
}

#[tokio::test]
async fn revoking_the_admin_token_ends_its_sessions_at_once() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (raw, id) = admin_token(&gw, None).await;
    let b = sign_in(&gw, &raw).await;
    assert_eq!(b.get(&gw, "/v1/workspaces").await.status, 200);
    let state = gw.state();
    lifecycle::revoke(Some(&state.verifier), &state.store, &id, now_unix())
        .await
        .unwrap();
    assert_session_ended(&b.get(&gw, "/v1/workspaces").await);
    assert_eq!(b.get(&gw, "/workspaces").await.status, 303);
    // Signing in again with it fails.
    assert_eq!(sign_in_resp(&gw, &raw, &[]).await.status, 401);
}

#[tokio::test]
async fn revoking_the_admin_token_on_one_instance_ends_its_sessions_on_another() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 500\n\
         [store]\nbackend = \"redis\"\nurl = \"{}\"\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{}\"\n",
        redis.url(),
        up.url
    );
    let start = || async {
        app::start(Config::from_toml(Path::new("c.toml"), &text, &|_| None).unwrap())
            .await
            .unwrap()
    };
    let (a, b) = (start().await, start().await);
    let req = NewTokenRequest {
        name: "cluster-admin".into(),
        kind: Some(TokenKind::Admin),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (raw, rec) = lifecycle::create(Some(&a.state.verifier), &a.state.store, req, now_unix())
        .await
        .unwrap();
    let login = send(
        Method::POST,
        &format!("http://{}/signin", a.admin_addr),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={raw}"),
    )
    .await;
    assert_eq!(login.status, 303);
    let cookie = login.header("set-cookie").split(';').next().unwrap().to_string();
    // The session lives in Redis: instance B serves it too.
    let url_b = format!("http://{}/v1/workspaces", b.admin_addr);
    let headers = [("cookie", cookie.as_str())];
    let on_b = || send(Method::GET, &url_b, &headers, "");
    assert_eq!(on_b().await.status, 200);
    // Redis holds the session under the hash of its id, not the id.
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("portcullis:session:*").query_async(&mut c).await.unwrap();
    let id_hex = cookie.split_once('=').unwrap().1;
    let id: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&id_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let hashed: String = Sha256::digest(&id).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(keys, vec![format!("portcullis:session:{hashed}")]);
    lifecycle::revoke(Some(&a.state.verifier), &a.state.store, &rec.id, now_unix())
        .await
        .unwrap();
    assert_eq!(
        on_b().await.status,
        401,
        "instance B still honours a session of a revoked admin token"
    );
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn a_scoped_admin_sees_only_its_workspace() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let (raw, _) = admin_token(&gw, Some("other")).await;
    let b = sign_in(&gw, &raw).await;
    let list = b.get(&gw, "/v1/workspaces").await.json();
    let slugs: Vec<_> = list["workspaces"].as_array().unwrap().iter().map(|w| w["slug"].clone()).collect();
    assert_eq!(slugs, vec![json!("other")]);
    let page = String::from_utf8_lossy(&b.get(&gw, "/workspaces").await.body).to_string();
    assert!(page.contains("nav-workspace-other") && !page.contains("nav-workspace-demo"));
    assert_eq!(b.get(&gw, "/v1/workspaces/demo/tokens").await.status, 403);
    assert_eq!(b.get(&gw, "/v1/workspaces/demo/servers").await.status, 403);
    assert_eq!(b.get(&gw, "/workspaces/demo/tokens").await.status, 403);
    assert_eq!(
        b.call(&gw, Method::POST, "/v1/workspaces/demo/tokens", Some(json!({"name": "x"})))
            .await
            .status,
        403
    );
    assert_eq!(
        b.call(&gw, Method::POST, "/v1/workspaces/other/tokens", Some(json!({"name": "x"})))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_the_csrf_token_and_our_origin() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let b = sign_in(&gw, &gw.admin_token).await;
    let url = gw.admin_url("/v1/workspaces/demo/tokens");
    let body = json!({"name": "csrf"}).to_string();
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("no header", vec![]),
        ("wrong token", vec![("x-csrf-token", "0000")]),
        ("right length, wrong token", vec![("x-csrf-token", "a".repeat(64).leak())]),
        ("another origin", vec![("x-csrf-token", &b.csrf), ("origin", "http://127.0.0.1:1")]),
        ("another site", vec![("x-csrf-token", &b.csrf), ("sec-fetch-site", "same-site")]),
    ];
    for (what, extra) in cases {
        let mut h = vec![("cookie", b.cookie.as_str()), ("content-type", "application/json")];
        h.extend(extra);
        let r = send(Method::POST, &url, &h, body.clone()).await;
        assert_eq!(r.status, 403, "{what}");
        assert_eq!(r.json()["error"]["code"], "csrf_failed", "{what}");
    }
    let (_, id) = gw.create_token("demo", json!({})).await;
    let r = send(Method::DELETE, &format!("{url}/{id}"), &[("cookie", &b.cookie)], "").await;
    assert_eq!(r.status, 403, "DELETE needs it too");
    let listed = gw.admin_call(Method::GET, "/v1/workspaces/demo/tokens", None).await.json();
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1, "a refused request created a token");
    // With it, from our own page: accepted.
    assert_eq!(
        b.call(&gw, Method::POST, "/v1/workspaces/demo/tokens", Some(json!({"name": "ok"})))
            .await
            .status,
        201
    );
    assert_eq!(
        b.call(&gw, Method::DELETE, &format!("/v1/workspaces/demo/tokens/{id}"), None)
            .await
            .status,
        200
    );
    // Bearer-token calls are unaffected, whatever Origin they carry.
    let auth = format!("Bearer {}", gw.admin_token);
    let r = send(
        Method::POST,
        &url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("origin", "http://elsewhere.test"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 201);
    // Sign-in from another origin is refused (no login CSRF).
    let r = sign_in_resp(
        &gw,
        &gw.admin_token,
        &[("origin", "http://evil.test"), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_bad_sign_in_token_gets_a_clear_error_and_no_cookie() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (workspace_token, _) = gw.create_token("demo", json!({})).await;
    for (token, words) in [
        ("mwa_notatoken", "not accepted"),
        (&*format!("mwa_{}", "A".repeat(36)), "not accepted"),
        (workspace_token.as_str(), "workspace token"),
        ("", "not accepted"),
    ] {
        let r = sign_in_resp(&gw, token, &[]).await;
        assert_eq!(r.status, 401, "{token}");
        assert!(r.headers.get("set-cookie").is_none());
        let page = String::from_utf8_lossy(&r.body).to_string();
        assert!(page.contains(words), "{token}: {page}");
        assert!(token.is_empty() || !page.contains(token), "the token is echoed");
    }
    // A forged or unknown cookie is no session.
    for cookie in ["portcullis_session=zz", &format!("portcullis_session={}", "ab".repeat(32))] {
        let r = send(Method::GET, &gw.admin_url("/v1/workspaces"), &[("cookie", cookie)], "").await;
        assert_session_ended(&r);
    }
}

#[tokio::test]
async fn no_response_but_the_create_response_carries_a_raw_token() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let b = sign_in(&gw, &gw.admin_token).await;
    let created = b
        .call(&gw, Method::POST, "/v1/workspaces/demo/tokens", Some(json!({"name": "once"})))
        .await;
    assert_eq!(created.status, 201);
    let raw = created.json()["token"].as_str().unwrap().to_string();
    assert!(gw.post("demo", Some(&raw), echo_call(1, "x")).await.status.is_success());
    let id = created.json()["info"]["id"].as_str().unwrap().to_string();
    for path in [
        "/".to_string(),
        "/workspaces".into(),
        "/workspaces/demo/tokens".into(),
        "/workspaces/demo/servers".into(),
        "/v1/workspaces".into(),
        "/v1/workspaces/demo/tokens".into(),
        format!("/v1/workspaces/demo/tokens/{id}"),
        "/v1/workspaces/demo/servers".into(),
        "/assets/app.js".into(),
    ] {
        let r = b.get(&gw, &path).await;
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains(&raw[4..]), "{path} shows the raw token");
        assert!(!text.contains(&gw.admin_token[4..]), "{path} shows the admin token");
        assert!(!text.contains(DEMO_KEY), "{path} shows an upstream header value");
    }
}

#[tokio::test]
async fn the_servers_endpoint_reports_health_without_secrets() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/servers", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["servers"][0]["health"], "unknown");
    assert_eq!(r.json()["servers"][0]["tools"], serde_json::Value::Null);
    let (t, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&t), echo_call(1, "x")).await.status, 200);
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/servers", None).await;
    let s = &r.json()["servers"][0];
    assert_eq!(s["name"], "main");
    assert_eq!(s["health"], "up");
    assert!(s["since"].as_str().unwrap().ends_with('Z'));
    assert!(!String::from_utf8_lossy(&r.body).contains(DEMO_KEY));
    assert_eq!(gw.admin_call(Method::GET, "/v1/workspaces/nope/servers", None).await.status, 404);
    let r = send(Method::GET, &gw.admin_url("/v1/workspaces/demo/servers"), &[], "").await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_disabled_dashboard_serves_no_page_and_honours_no_cookie() {
    let up = DemoUpstream::start().await;
    let mut gw = Setup::new(&up.url).start().await;
    let b = sign_in(&gw, &gw.admin_token).await;
    gw.stop().await;
    gw.config_text.push_str("\n[dashboard]\nenabled = false\n");
    gw.restart().await;
    let r = send(Method::GET, &gw.admin_url("/"), &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert_eq!(b.get(&gw, "/v1/workspaces").await.status, 401);
}

/// The session store contract, on both backends.
async fn session_store_contract(s: &dyn SessionStore) {
    let now = now_unix();
    let rec = SessionRecord {
        admin_token_id: "tkn_abc".into(),
        admin_token_hash: [7; 32],
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
    };
    let id = [1u8; 32];
    assert!(s.get_session(&id).await.unwrap().is_none());
    s.create_session(&id, &rec, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.get_session(&id).await.unwrap(), Some(rec.clone()));
    s.touch_session(&id, now + 5, Duration::from_secs(60)).await.unwrap();
    s.touch_session(&id, now + 2, Duration::from_secs(60)).await.unwrap(); // never backwards
    assert_eq!(s.get_session(&id).await.unwrap().unwrap().last_seen_at, now + 5);
    s.delete_session(&id).await.unwrap();
    assert!(s.get_session(&id).await.unwrap().is_none());
    s.delete_session(&id).await.unwrap(); // idempotent
    s.touch_session(&id, now + 9, Duration::from_secs(60)).await.unwrap(); // no resurrection
    assert!(s.get_session(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn session_stores_keep_the_contract_on_sqlite_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = portcullis::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
    session_store_contract(&sqlite).await;
    // SQLite keeps at most MAX_SESSIONS_PER_TOKEN sessions per admin token.
    let now = now_unix();
    for i in 0..40u8 {
        let rec = SessionRecord {
            admin_token_id: "tkn_many".into(),
            admin_token_hash: [1; 32],
            created_at: now,
            last_seen_at: now,
            expires_at: now + 60,
        };
        sqlite.create_session(&[i; 32], &rec, Duration::from_secs(60)).await.unwrap();
    }
    assert!(sqlite.get_session(&[39; 32]).await.unwrap().is_some());
    assert!(sqlite.get_session(&[0; 32]).await.unwrap().is_none());

    let redis = RedisServer::start().await;
    let store = portcullis::store::redis::RedisStore::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    session_store_contract(&store).await;
    // Redis forgets a session after its idle timeout by itself (key TTL).
    let rec = SessionRecord {
        admin_token_id: "tkn_ttl".into(),
        admin_token_hash: [2; 32],
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
    };
    store.create_session(&[9; 32], &rec, Duration::from_secs(30)).await.unwrap();
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("portcullis:session:*").query_async(&mut c).await.unwrap();
    assert_eq!(keys.len(), 1);
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query_async(&mut c).await.unwrap();
    assert!((1..=30).contains(&ttl), "ttl {ttl}");
}
