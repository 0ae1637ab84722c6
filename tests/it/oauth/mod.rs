//! The OAuth 2.1 authorization server (docs/oauth.md, contract §11) over
//! real sockets with raw HTTP: discovery, registration, the consent page,
//! the code and refresh grants, revocation reaching the data plane, and
//! every bad path answered with the right RFC 6749 error. The person who
//! consents is a member of the workspace signed in with a sign-in link
//! (the seam of `oauth::member`). The Python SDK's own OAuth client is driven through
//! the whole flow by tests/py/test_oauth.py.

mod bad_paths;
mod cimd;
mod cluster;
mod flow;
mod store;

use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::*;

pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";
pub const RESOURCE: &str = "http://gateway.test/ws/demo";

/// A gateway with OAuth on (and whatever `oauth_extra` adds to `[oauth]`).
pub async fn gateway(up: &DemoUpstream, oauth_extra: &str) -> Gateway {
    Setup::new(&up.url)
        .workspace("other", &up.url, "")
        .raw(&format!("[oauth]\nenabled = true\n{oauth_extra}"))
        .start()
        .await
}

pub fn data_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.data)
}

/// Invites `email` to `ws` as a member; the sign-in link's path.
pub async fn invite(gw: &Gateway, ws: &str, email: &str) -> String {
    let r = gw
        .admin_call(
            Method::POST,
            &format!("/v1/workspaces/{ws}/members/invite"),
            Some(json!({"email": email, "role": "member"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let url = r.json()["url"].as_str().unwrap().to_string();
    url.strip_prefix("http://gateway.test").unwrap().to_string()
}

/// Presses Continue on a sign-in link's page (with `cookie`, if any): the
/// answer (303 with the member's cookie).
pub async fn follow_link(gw: &Gateway, link: &str, cookie: Option<&str>) -> Resp {
    let origin = format!("http://{}", gw.data);
    let mut h = vec![("origin", origin.as_str()), ("sec-fetch-site", "same-origin")];
    if let Some(c) = cookie {
        h.push(("cookie", c));
    }
    let r = send(Method::POST, &data_url(gw, link), &h, "").await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    r
}

/// The member cookie of a sign-in answer.
pub fn member_cookie(r: &Resp) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("portcullis_member="))
        .expect("a member cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// A member of `demo` signs in with a link; their cookie.
pub async fn sign_in(gw: &Gateway) -> String {
    let link = invite(gw, "demo", "ann@example.com").await;
    member_cookie(&follow_link(gw, &link, None).await)
}

pub async fn register(gw: &Gateway, body: Value) -> Resp {
    send(
        Method::POST,
        &data_url(gw, "/oauth/register"),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

pub async fn register_client(gw: &Gateway) -> String {
    let r = register(gw, json!({"client_name": "Test App", "redirect_uris": [REDIRECT]})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["client_id"].as_str().unwrap().to_string()
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    use base64::Engine;
    let verifier = format!("v{}", "x".repeat(42)) + &portcullis::token::generate_id()[4..];
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The authorization request's URL.
pub fn authorize_url(gw: &Gateway, client_id: &str, challenge: &str, state: &str, resource: &str) -> String {
    data_url(
        gw,
        &format!(
            "/oauth/authorize?{}",
            form(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("state", state),
                ("resource", resource),
                ("scope", "mcp"),
            ])
        ),
    )
}

/// The consent page for an authorization request (200), and its hidden fields.
pub async fn consent_page(_gw: &Gateway, cookie: &str, url: &str) -> (String, String, String) {
    let r = send(Method::GET, url, &[("cookie", cookie)], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let html = String::from_utf8_lossy(&r.body).to_string();
    let field = |name: &str| {
        html.split(&format!(r#"name="{name}" value=""#))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {html}"))
            .to_string()
    };
    (html.clone(), field("request"), field("sig"))
}

/// Posts the consent form as the page's browser would.
pub async fn consent_post(gw: &Gateway, cookie: &str, fields: &[(&str, &str)]) -> Resp {
    let origin = format!("http://{}", gw.data);
    send(
        Method::POST,
        &data_url(gw, "/oauth/authorize"),
        &[
            ("cookie", cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
        ],
        form(fields),
    )
    .await
}

/// A query parameter of a redirect's `Location`.
pub fn query_param(location: &str, key: &str) -> Option<String> {
    let q = location.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            let bytes = v.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

/// Registration, authorization and consent: the code and the PKCE verifier.
pub async fn authorize(gw: &Gateway, cookie: &str, client_id: &str, servers: &[&str]) -> (String, String) {
    let (verifier, challenge) = pkce();
    let (_, request, sig) = consent_page(gw, cookie, &authorize_url(gw, client_id, &challenge, "st-1", RESOURCE)).await;
    let names: Vec<String> = servers.iter().map(|s| format!("server_{s}")).collect();
    let mut fields = vec![("request", request.as_str()), ("sig", sig.as_str()), ("decision", "allow")];
    for n in &names {
        fields.push((n.as_str(), "on"));
    }
    let r = consent_post(gw, cookie, &fields).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").to_string();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some("http://gateway.test"));
    (query_param(&loc, "code").expect("a code"), verifier)
}

pub async fn token_call(gw: &Gateway, fields: &[(&str, &str)]) -> Resp {
    send(
        Method::POST,
        &data_url(gw, "/oauth/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        form(fields),
    )
    .await
}

pub async fn exchange(gw: &Gateway, client_id: &str, code: &str, verifier: &str) -> Resp {
    token_call(
        gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("resource", RESOURCE),
        ],
    )
    .await
}

pub async fn refresh(gw: &Gateway, client_id: &str, refresh_token: &str) -> Resp {
    token_call(
        gw,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Asserts an RFC 6749 error answer: status, `error`, a description, and
/// nothing else (no detail, no stack).
pub fn assert_oauth_error(r: &Resp, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert!(v["error_description"].is_string());
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    assert_eq!(r.header("cache-control"), "no-store");
}

/// A full sign-in-and-consent flow: (client id, access token, refresh token).
pub async fn tokens(gw: &Gateway) -> (String, String, String) {
    let cookie = sign_in(gw).await;
    let client_id = register_client(gw).await;
    let (code, verifier) = authorize(gw, &cookie, &client_id, &["main"]).await;
    let r = exchange(gw, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        client_id,
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// A tools/call through `/ws/demo` with `token`.
pub async fn call(gw: &Gateway, token: &str) -> Resp {
    gw.post("demo", Some(token), echo_call(1, "hi")).await
}

/// The data plane's 401 with OAuth on: the contract's body, and the
/// header pointing at the workspace's metadata.
pub fn assert_refused(r: &Resp) {
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="portcullis", error="invalid_token", resource_metadata="http://gateway.test/.well-known/oauth-protected-resource/ws/demo""#
    );
    assert_eq!(rpc_error(r), (-31001, "Unauthorized".into()));
}
