//! Members of a workspace (docs/members.md): the admin API's bad paths,
//! sign-in links (single use, expiry, hashed at rest, GET never uses one),
//! member sessions on the public listener, roles on `/me`, and removal
//! revoking tokens and ending sessions at once; on SQLite (file read
//! directly) and on Redis with two instances. The Redis
//! variant and the store contract: members_redis.rs. Browser side:
//! tests/py/test_members.py.

use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// A member's browser on the public (data) listener.
pub(crate) struct Member {
    pub(crate) base: String,
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

impl Member {
    pub(crate) async fn get(&self, path: &str) -> Resp {
        send(Method::GET, &format!("{}{path}", self.base), &[("cookie", &self.cookie)], "").await
    }
    /// A state-changing call as the page's script makes it.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let h = [
            ("cookie", self.cookie.as_str()),
            ("x-csrf-token", self.csrf.as_str()),
            ("origin", self.base.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ];
        send(
            method,
            &format!("{}{path}", self.base),
            &h,
            body.map(|b| b.to_string()).unwrap_or_default(),
        )
        .await
    }
    pub(crate) async fn new_token(&self, name: &str) -> (String, String) {
        let r = self.call(Method::POST, "/me/api/tokens", Some(json!({"name": name}))).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (v["token"].as_str().unwrap().into(), v["info"]["id"].as_str().unwrap().into())
    }
    async fn token_ids(&self) -> Vec<String> {
        let r = self.get("/me/api/tokens").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Invites `email` through the admin API at `admin`; returns the link's path.
pub(crate) async fn invite_at(admin: &str, token: &str, ws: &str, email: &str, role: &str) -> (String, Value) {
    let r = send(
        Method::POST,
        &format!("http://{admin}/v1/workspaces/{ws}/members/invite"),
        &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
        json!({"email": email, "role": role}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let url = v["url"].as_str().unwrap();
    let path = url.strip_prefix("http://gateway.test").unwrap_or(url).to_string();
    assert!(path.starts_with("/signin/link/"), "{url}");
    (path, v)
}

async fn invite(gw: &Gateway, email: &str, role: &str) -> (String, Value) {
    invite_at(&gw.admin.to_string(), &gw.admin_token, "demo", email, role).await
}

pub(crate) fn origin(data: &str) -> String {
    format!("http://{data}")
}

/// Opens the link and presses Continue, as a browser does.
pub(crate) async fn follow_at(data: &str, link: &str) -> Member {
    let base = origin(data);
    let page = send(Method::GET, &format!("{base}{link}"), &[], "").await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert!(String::from_utf8_lossy(&page.body).contains("data-testid=\"signin-link-continue\""));
    let h = [("origin", base.as_str()), ("sec-fetch-site", "same-origin")];
    let r = send(Method::POST, &format!("{base}{link}"), &h, "").await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), "/me");
    let set = r.header("set-cookie");
    assert!(set.starts_with("portcullis_member="), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let me = send(Method::GET, &format!("{base}/me"), &[("cookie", &cookie)], "").await;
    assert_eq!(me.status, 200, "{}", String::from_utf8_lossy(&me.body));
    let html = String::from_utf8_lossy(&me.body).to_string();
    let csrf = html
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries the CSRF token")
        .to_string();
    Member { base, cookie, csrf }
}

async fn follow(gw: &Gateway, link: &str) -> Member {
    follow_at(&gw.data.to_string(), link).await
}

async fn signed_in(gw: &Gateway, email: &str, role: &str) -> (Member, String) {
    let (link, v) = invite(gw, email, role).await;
    (follow(gw, &link).await, v["member"]["id"].as_str().unwrap().to_string())
}

fn code_of(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_members_api_validates_and_answers_contract_errors() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let path = "/v1/workspaces/demo/members";
    let add = |body: Value| gw.admin_call(Method::POST, path, Some(body));
    let r = add(json!({"email": " Alice@Example.COM ", "name": "Alice", "role": "owner"})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let alice = r.json();
    assert_eq!(alice["email"], "alice@example.com", "normalized");
    assert_eq!(alice["role"], "owner");
    assert!(alice["id"].as_str().unwrap().starts_with("mem_"));
    // The same address again, in other letters: 409.
    let r = add(json!({"email": "ALICE@example.com", "role": "member"})).await;
    assert_eq!((r.status.as_u16(), code_of(&r)), (409, "member_exists".into()));
    for (body, code) in [
        (json!({"email": "not-an-email", "role": "member"}), "invalid_email"),
        (json!({"email": "a@b", "role": "member"}), "invalid_email"),
        (json!({"email": "a@@b.com", "role": "member"}), "invalid_email"),
        (json!({"email": "bob@example.com", "role": "admin"}), "invalid_role"),
        (json!({"email": "bob@example.com"}), "invalid_role"),
        (json!({"email": "bob@example.com", "role": "member", "extra": 1}), "bad_request"),
    ] {
        let r = add(body.clone()).await;
        assert_eq!((r.status.as_u16(), code_of(&r)), (400, code.to_string()), "{body}");
    }
    let r = send(
        Method::POST,
        &gw.admin_url(path),
        &[("authorization", &format!("Bearer {}", gw.admin_token))],
        "{",
    )
    .await;
    assert_eq!(r.status, 400);
    // Unknown workspace, no token, a workspace token: refused.
    let r = gw.admin_call(Method::GET, "/v1/workspaces/nope/members", None).await;
    assert_eq!((r.status.as_u16(), code_of(&r)), (404, "workspace_not_found".into()));
    assert_eq!(send(Method::GET, &gw.admin_url(path), &[], "").await.status, 401);
    let (wt, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.admin_call_as(&wt, Method::GET, path, None).await.status, 401);
    // Listed; an unknown member cannot be removed.
    let r = gw.admin_call(Method::GET, path, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 1);
    let r = gw.admin_call(Method::DELETE, &format!("{path}/mem_nope"), None).await;
    assert_eq!((r.status.as_u16(), code_of(&r)), (404, "member_not_found".into()));
    let r = gw
        .admin_call(Method::DELETE, &format!("{path}/{}", alice["id"].as_str().unwrap()), None)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["member"]["email"], "alice@example.com");
    let r = gw.admin_call(Method::GET, path, None).await;
    assert!(r.json()["members"].as_array().unwrap().is_empty());
    // Inviting an unknown address creates the member (role defaults to member).
    let (_, v) = invite(&gw, "Carol@Example.com", "member").await;
    assert_eq!(
        (v["created"].as_bool(), v["member"]["email"].as_str()),
        (Some(true), Some("carol@example.com"))
    );
    let (_, v) = invite(&gw, "carol@example.com", "owner").await;
    assert_eq!(v["created"], false, "an existing member is invited as is");
    assert_eq!(v["member"]["role"], "member");
    let r = gw
        .admin_call(Method::POST, "/v1/workspaces/demo/members/invite", Some(json!({"email": "x"})))
        .await;
    assert_eq!((r.status.as_u16(), code_of(&r)), (400, "invalid_email".into()));
}

#[tokio::test]
async fn a_sign_in_link_works_once_by_post_only_and_is_hashed_at_rest() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (link, v) = invite(&gw, "dana@example.com", "member").await;
    assert!(v["expires_at"].is_string());
    let url = format!("http://{}{link}", gw.data);
    // GET shows the page and uses nothing (link scanners prefetch).
    for _ in 0..3 {
        let r = send(Method::GET, &url, &[], "").await;
        assert_eq!(r.status, 200);
        for (h, want) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(r.header(h), want);
        }
        let csp = r.header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!String::from_utf8_lossy(&r.body).contains("<script>"), "no inline script");
    }
    // Another site cannot make the browser use it.
    let base = origin(&gw.data.to_string());
    let r = send(Method::POST, &url, &[("origin", "http://evil.test")], "").await;
    assert_eq!(r.status, 403);
    let r = send(Method::POST, &url, &[("sec-fetch-site", "cross-site")], "").await;
    assert_eq!(r.status, 403);
    // The code is kept as its SHA-256 only.
    let code_hex = link.rsplit('/').next().unwrap().to_string();
    let code: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&code_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    {
        let db = rusqlite::Connection::open(&gw.db).unwrap();
        let hashes: Vec<Vec<u8>> = db
            .prepare("SELECT code_hash FROM signin_links")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(hashes, vec![Sha256::digest(&code).to_vec()]);
    }
    for f in ["portcullis.db", "portcullis.db-wal"] {
        if let Ok(bytes) = std::fs::read(gw.db.with_file_name(f)) {
            assert!(!String::from_utf8_lossy(&bytes).contains(&code_hex), "raw code in {f}");
            assert!(!bytes.windows(32).any(|w| w == code.as_slice()), "raw code bytes in {f}");
        }
    }
    let m = follow(&gw, &link).await;
    let page = String::from_utf8_lossy(&m.get("/me").await.body).to_string();
    assert!(page.contains("dana@example.com") && page.contains("data-testid=\"tab-apps\""));
    // Used: 410 on GET and POST, with a page that says so and names no one.
    for method in [Method::GET, Method::POST] {
        let r = send(method.clone(), &url, &[("origin", base.as_str())], "").await;
        assert_eq!(r.status, 410, "{method}");
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(body.contains("has been used") && !body.contains("dana"), "{body}");
        assert!(r.headers.get("set-cookie").is_none());
    }
    // Unknown and malformed codes: 404.
    for bad in ["0".repeat(64), "zz".into(), "A".repeat(64)] {
        let r = send(Method::GET, &format!("{base}/signin/link/{bad}"), &[], "").await;
        assert_eq!(r.status, 404, "{bad}");
        let r = send(Method::POST, &format!("{base}/signin/link/{bad}"), &[("origin", base.as_str())], "").await;
        assert_eq!(r.status, 404, "{bad}");
    }
}

#[tokio::test]
async fn an_expired_link_answers_410_and_signs_no_one_in() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (link, _) = invite(&gw, "erin@example.com", "member").await;
    rusqlite::Connection::open(&gw.db)
        .unwrap()
        .execute("UPDATE signin_links SET expires_at = created_at - 1", [])
        .unwrap();
    let url = format!("http://{}{link}", gw.data);
    let r = send(Method::GET, &url, &[], "").await;
    assert_eq!(r.status, 410);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
    let r = send(Method::POST, &url, &[], "").await;
    assert_eq!(r.status, 410);
    assert!(r.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn members_see_and_revoke_only_their_own_tokens_and_owners_all() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (a, a_id) = signed_in(&gw, "ann@example.com", "member").await;
    let (b, _) = signed_in(&gw, "ben@example.com", "member").await;
    let (o, _) = signed_in(&gw, "olga@example.com", "owner").await;
    // CSRF: a state change without the header, or from elsewhere, is refused.
    let no_csrf = send(
        Method::POST,
        &format!("{}/me/api/tokens", a.base),
        &[("cookie", a.cookie.as_str()), ("content-type", "application/json")],
        r#"{"name":"x"}"#,
    )
    .await;
    assert_eq!((no_csrf.status.as_u16(), code_of(&no_csrf)), (403, "csrf_failed".into()));
    let (a_raw, a_tok) = a.new_token("ann laptop").await;
    let (_, b_tok) = b.new_token("ben laptop").await;
    let (_, admin_tok) = gw.create_token("demo", json!({})).await;
    // The token carries the member and works on the data plane.
    let rec = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{a_tok}"), None)
        .await
        .json();
    assert_eq!(
        (rec["member_id"].as_str(), rec["email"].as_str()),
        (Some(a_id.as_str()), Some("ann@example.com"))
    );
    assert_eq!(gw.post("demo", Some(&a_raw), echo_call(1, "hi")).await.status, 200);
    assert_eq!(a.token_ids().await, vec![a_tok.clone()]);
    assert_eq!(b.token_ids().await, vec![b_tok.clone()]);
    let all = o.token_ids().await;
    for t in [&a_tok, &b_tok, &admin_tok] {
        assert!(all.contains(t), "the owner sees {t}");
    }
    // Another member's token (or the admin's) is not there for B: 404.
    for t in [&a_tok, &admin_tok] {
        let r = b.call(Method::DELETE, &format!("/me/api/tokens/{t}"), None).await;
        assert_eq!((r.status.as_u16(), code_of(&r)), (404, "token_not_found".into()));
    }
    assert_eq!(gw.post("demo", Some(&a_raw), echo_call(2, "still")).await.status, 200);
    // A revokes their own; the owner revokes B's.
    let r = a.call(Method::DELETE, &format!("/me/api/tokens/{a_tok}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(gw.post("demo", Some(&a_raw), echo_call(3, "gone")).await.status, 401);
    assert_eq!(o.call(Method::DELETE, &format!("/me/api/tokens/{b_tok}"), None).await.status, 200);
    // Bad bodies: contract-shaped errors.
    let r = a.call(Method::POST, "/me/api/tokens", Some(json!({"name": " "}))).await;
    assert_eq!(r.status, 422);
    let r = a
        .call(Method::POST, "/me/api/tokens", Some(json!({"name": "x", "member_id": "mem_other"})))
        .await;
    assert_eq!(r.status, 400, "a member cannot pick whose token it is");
    // Signed out: the session is gone.
    let form = format!("csrf={}", a.csrf);
    let h = [
        ("cookie", a.cookie.as_str()),
        ("origin", a.base.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let r = send(Method::POST, &format!("{}/me/signout", a.base), &h, form).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(a.get("/me/api/tokens").await.status, 401);
    assert_eq!(a.get("/me").await.status, 401);
}

#[tokio::test]
async fn removing_a_member_revokes_their_tokens_and_ends_their_sessions_at_once() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (m, id) = signed_in(&gw, "fay@example.com", "member").await;
    let (own, _) = m.new_token("fay's").await;
    // Issued by an admin by email (before or after the member existed).
    let (by_email, _) = gw.create_token("demo", json!({"email": "Fay@Example.com"})).await;
    let (other, _) = gw.create_token("demo", json!({"email": "gus@example.com"})).await;
    for t in [&own, &by_email, &other] {
        assert_eq!(gw.post("demo", Some(t), echo_call(1, "x")).await.status, 200);
    }
    let r = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/demo/members/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["revoked_tokens"], 2);
    for t in [&own, &by_email] {
        assert_unauthorized(&gw.post("demo", Some(t), echo_call(2, "x")).await, false);
    }
    assert_eq!(gw.post("demo", Some(&other), echo_call(3, "x")).await.status, 200);
    assert_eq!(m.get("/me").await.status, 401);
    assert_eq!(m.get("/me/api/tokens").await.status, 401);
    let sessions: i64 = rusqlite::Connection::open(&gw.db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM member_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 0);
    // The whole story is in the workspace's audit trail, the member named,
    // the admin token as actor of what an admin did.
    let trail = gw.admin_call(Method::GET, "/v1/workspaces/demo/audit?page_size=100", None).await;
    assert_eq!(trail.status, 200);
    let events = trail.json()["events"].as_array().cloned().unwrap();
    for kind in ["member_added", "invite_created", "signin", "member_removed"] {
        let e = events
            .iter()
            .find(|e| e["type"] == kind && e["member_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no {kind} event for {id}: {events:#?}"));
        let by_admin = kind != "signin";
        assert_eq!(e["actor"].as_str().unwrap().starts_with("tkn_"), by_admin, "{e}");
    }
}

#[tokio::test]
async fn the_public_listener_keeps_its_other_answers() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let base = origin(&gw.data.to_string());
    // OAuth metadata probes: still the quick JSON 404.
    let r = send(Method::GET, &format!("{base}/.well-known/oauth-protected-resource"), &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), "application/json");
    // Reserved for the OAuth server: a page 404 with the security headers.
    let r = send(Method::GET, &format!("{base}/oauth/authorize"), &[], "").await;
    assert_eq!(r.status, 404);
    assert!(r.header("content-security-policy").contains("frame-ancestors 'none'"));
    // /me without a session: 401 page; the admin listener has no /me.
    assert_eq!(send(Method::GET, &format!("{base}/me"), &[], "").await.status, 401);
    let r = send(Method::GET, &format!("{base}/me/"), &[], "").await;
    assert_eq!((r.status.as_u16(), r.header("location")), (303, "/me"));
    let r = send(Method::GET, &gw.admin_url("/signin/link/00"), &[], "").await;
    assert_ne!(r.status, 200);
    // A dashboard cookie means nothing here.
    let r = send(
        Method::GET,
        &format!("{base}/me"),
        &[("cookie", &format!("portcullis_session={}", "ab".repeat(32)))],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
}

/// `portcullis member …` end to end, through the admin API.
#[tokio::test]
async fn the_member_commands_add_list_invite_and_remove() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let admin_url = format!("http://{}", gw.admin);
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        c.args(args)
            .env_remove("PORTCULLIS_CONFIG")
            .env("PORTCULLIS_LOG", "warn")
            .env("PORTCULLIS_ADMIN_URL", &admin_url)
            .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token);
        async move { tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap() }
    };
    let out = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let o = cli(&[
        "member",
        "add",
        "demo",
        "--email",
        "Ivy@Example.com",
        "--role",
        "owner",
        "--name",
        "Ivy",
        "--json",
    ])
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ivy: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (ivy["email"].as_str(), ivy["role"].as_str()),
        (Some("ivy@example.com"), Some("owner"))
    );
    // A duplicate: exit 1, the API's error object on stdout.
    let o = cli(&["member", "add", "demo", "--email", "ivy@example.com", "--json"]).await;
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["code"], "member_exists");
    let o = cli(&["member", "add", "demo", "--email", "nope", "--role", "member"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("error:"));
    // Invite prints the link on the public URL, once.
    let o = cli(&["member", "invite", "demo", "--email", "jay@example.com"]).await;
    assert!(o.status.success());
    let text = out(&o);
    assert!(
        text.contains("http://gateway.test/signin/link/") && text.contains("jay@example.com"),
        "{text}"
    );
    let o = cli(&["member", "invite", "demo", "--email", "jay@example.com", "--json"]).await;
    let inv: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inv["created"], false);
    let link = inv["url"]
        .as_str()
        .unwrap()
        .strip_prefix("http://gateway.test")
        .unwrap()
        .to_string();
    follow(&gw, &link).await;
    let o = cli(&["member", "list", "demo"]).await;
    let text = out(&o);
    assert!(
        text.contains("ivy@example.com") && text.contains("jay@example.com") && text.contains("EMAIL"),
        "{text}"
    );
    let o = cli(&["member", "list", "demo", "--json"]).await;
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["members"].as_array().unwrap().len(), 2);
    let jay = inv["member"]["id"].as_str().unwrap();
    let o = cli(&["member", "remove", "demo", jay]).await;
    assert!(o.status.success());
    assert!(out(&o).contains("revoked"), "{}", out(&o));
    let o = cli(&["member", "remove", "demo", jay, "--json"]).await;
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["code"], "member_not_found");
    let o = cli(&["member", "remove", "demo", "../tokens"]).await;
    assert_eq!(o.status.code(), Some(2), "a path in an id is a usage error");
}
