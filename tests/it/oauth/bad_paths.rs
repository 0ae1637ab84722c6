//! Every bad path answers the right OAuth error, RFC 6749 JSON, no detail:
//! wrong PKCE verifier, reused code (and what it issued revoked), redirect
//! URI not the registered one, a resource of another gateway, a forged
//! state / altered consent form, oversized and bad registrations, unknown
//! clients and grant types, denial, cross-site consent.

use http::Method;
use serde_json::json;

use super::*;

#[tokio::test]
async fn wrong_verifier_and_reused_code() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let cookie = sign_in(&gw).await;
    let client_id = register_client(&gw).await;

    // Wrong verifier: invalid_grant, and the code is spent.
    let (code, verifier) = authorize(&gw, &cookie, &client_id, &["main"]).await;
    let (other, _) = pkce();
    assert_oauth_error(&exchange(&gw, &client_id, &code, &other).await, 400, "invalid_grant");
    assert_oauth_error(&exchange(&gw, &client_id, &code, &verifier).await, 400, "invalid_grant");

    // Reused code: the second exchange fails and revokes what the first issued.
    let (code, verifier) = authorize(&gw, &cookie, &client_id, &["main"]).await;
    let r = exchange(&gw, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200);
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    let refresh_token = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, &access).await.status, 200);
    let r = exchange(&gw, &client_id, &code, &verifier).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    assert!(!String::from_utf8_lossy(&r.body).contains(&code), "never echoed");
    assert_refused(&call(&gw, &access).await);
    assert_oauth_error(&refresh(&gw, &client_id, &refresh_token).await, 400, "invalid_grant");
    // Every step is in the workspace's audit trail, and no code, token or
    // verifier is.
    let trail = gw.admin_call(Method::GET, "/v1/workspaces/demo/audit?page_size=200", None).await;
    assert_eq!(trail.status, 200);
    let text = String::from_utf8_lossy(&trail.body).to_string();
    let events = trail.json()["events"].as_array().cloned().unwrap();
    let has = |kind: &str, method: &str| events.iter().any(|e| e["type"] == kind && e["method"] == method);
    assert!(
        has("grant_created", "Test client") || events.iter().any(|e| e["type"] == "grant_created"),
        "{text}"
    );
    assert!(has("oauth_tokens_issued", "authorization_code"), "{text}");
    assert!(has("grant_revoked", "code_reused"), "{text}");
    assert!(events.iter().any(|e| e["type"] == "token_revoked"), "{text}");
    for secret in [&code, &verifier, &access, &refresh_token] {
        assert!(!text.contains(secret.as_str()), "a secret in the audit trail: {text}");
    }

    // Another client's code, garbage codes.
    let (code, verifier) = authorize(&gw, &cookie, &client_id, &["main"]).await;
    let other_client = register_client(&gw).await;
    assert_eq!(other_client, client_id, "the same metadata makes the same stateless id");
    let r = register(&gw, json!({"client_name": "Other", "redirect_uris": [REDIRECT]})).await;
    let other_client = r.json()["client_id"].as_str().unwrap().to_string();
    assert_oauth_error(&exchange(&gw, &other_client, &code, &verifier).await, 400, "invalid_grant");
    assert_oauth_error(&exchange(&gw, &client_id, "mwc_garbage", &verifier).await, 400, "invalid_grant");
    // A redirect URI at the token endpoint other than the request's.
    let (code, verifier) = authorize(&gw, &cookie, &client_id, &["main"]).await;
    let r = token_call(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:1/other"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
}

#[tokio::test]
async fn the_authorization_request_is_checked_before_any_redirect() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let cookie = sign_in(&gw).await;
    let client_id = register_client(&gw).await;
    let (_, challenge) = pkce();
    let get = |url: String| {
        let cookie = cookie.clone();
        async move { send(Method::GET, &url, &[("cookie", &cookie)], "").await }
    };

    // Unknown or forged client id: answered here, never redirected.
    let forged = format!("{}x", &client_id);
    let r = get(authorize_url(&gw, &forged, &challenge, "s", RESOURCE)).await;
    assert_oauth_error(&r, 401, "invalid_client");
    // A redirect URI not registered: answered here (no open redirector).
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE).replace(&enc(REDIRECT), &enc("https://evil.example/cb"));
    assert_oauth_error(&get(url).await, 400, "invalid_request");

    // From here, errors go back to the client with its state.
    let back = |r: &Resp, error: &str| {
        assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
        let loc = r.header("location");
        assert!(loc.starts_with(REDIRECT), "{loc}");
        assert_eq!(query_param(loc, "error").as_deref(), Some(error), "{loc}");
        assert_eq!(query_param(loc, "state").as_deref(), Some("s"));
    };
    // A resource of another gateway, an unknown workspace, none at all.
    for resource in [
        "https://other-gateway.example/ws/demo",
        "http://gateway.test/ws/nope",
        "http://gateway.test/ws/",
    ] {
        back(
            &get(authorize_url(&gw, &client_id, &challenge, "s", resource)).await,
            "invalid_target",
        );
    }
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE).replace(&format!("&resource={}", enc(RESOURCE)), "");
    back(&get(url).await, "invalid_target");
    // PKCE: required, S256 only.
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE).replace("S256", "plain");
    back(&get(url).await, "invalid_request");
    let url = authorize_url(&gw, &client_id, "short", "s", RESOURCE);
    back(&get(url).await, "invalid_request");
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE).replace("response_type=code", "response_type=token");
    back(&get(url).await, "unsupported_response_type");
    // A repeated parameter.
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE) + "&state=again";
    assert_oauth_error(&get(url).await, 400, "invalid_request");
}

#[tokio::test]
async fn forged_state_altered_forms_denial_and_cross_site_posts() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let cookie = sign_in(&gw).await;
    let client_id = register_client(&gw).await;
    let (_, challenge) = pkce();
    let url = authorize_url(&gw, &client_id, &challenge, "real-state", RESOURCE);
    let (_, request, sig) = consent_page(&gw, &cookie, &url).await;

    // The signed request altered (another state, or redirect URI): refused.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut checked: serde_json::Value = serde_json::from_slice(&b64.decode(&request).unwrap()).unwrap();
    checked["state"] = json!("forged-state");
    let forged = b64.encode(checked.to_string());
    let r = consent_post(
        &gw,
        &cookie,
        &[("request", &forged), ("sig", &sig), ("decision", "allow"), ("server_main", "on")],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    checked["state"] = json!("real-state");
    checked["redirect_uri"] = json!("https://evil.example/cb");
    let forged = b64.encode(checked.to_string());
    let r = consent_post(
        &gw,
        &cookie,
        &[("request", &forged), ("sig", &sig), ("decision", "allow"), ("server_main", "on")],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(r.headers.get("location").is_none());
    // No signature, or signed for someone else (no session at all).
    let r = consent_post(&gw, &cookie, &[("request", &request), ("decision", "allow")]).await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = consent_post(
        &gw,
        "portcullis_session=00",
        &[("request", &request), ("sig", &sig), ("decision", "allow")],
    )
    .await;
    assert_oauth_error(&r, 403, "access_denied");

    // Cross-site: refused whatever the form says.
    let r = send(
        Method::POST,
        &data_url(&gw, "/oauth/authorize"),
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "https://evil.example"),
        ],
        form(&[("request", &request), ("sig", &sig), ("decision", "allow"), ("server_main", "on")]),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = send(
        Method::POST,
        &data_url(&gw, "/oauth/authorize"),
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("sec-fetch-site", "cross-site"),
        ],
        form(&[("request", &request), ("sig", &sig), ("decision", "allow"), ("server_main", "on")]),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");

    // Deny: access_denied to the client, with its state; no grant made.
    let r = consent_post(&gw, &cookie, &[("request", &request), ("sig", &sig), ("decision", "deny")]).await;
    assert_eq!(r.status, 303);
    let loc = r.header("location");
    assert_eq!(query_param(loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(loc, "state").as_deref(), Some("real-state"));
    assert!(query_param(loc, "code").is_none());
    // Allow with every server unticked: nothing to grant, access_denied too.
    let r = consent_post(&gw, &cookie, &[("request", &request), ("sig", &sig), ("decision", "allow")]).await;
    assert_eq!(query_param(r.header("location"), "error").as_deref(), Some("access_denied"));
    let grants = gw.state().store.grants().unwrap().list_grants(None, Some("demo")).await.unwrap();
    assert!(grants.is_empty(), "{grants:?}");
}

#[tokio::test]
async fn registration_is_checked_and_capped() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let r = register(
        &gw,
        json!({"client_name": "Big", "redirect_uris": [REDIRECT], "pad": "x".repeat(40_000)}),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_client_metadata");
    let r = register(
        &gw,
        json!({"client_name": "Big", "redirect_uris": [REDIRECT], "pad": "x".repeat(10_000)}),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_client_metadata");
    for (body, error) in [
        (json!({"redirect_uris": ["http://app.example/cb"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://app.example/cb#x"]}), "invalid_redirect_uri"),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
    ] {
        assert_oauth_error(&register(&gw, body.clone()).await, 400, error);
    }
    let r = register(
        &gw,
        json!({"client_name": "Ok", "redirect_uris": ["https://app.example/cb", "http://localhost:1234/cb"]}),
    )
    .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(v["token_endpoint_auth_method"], "none");
    assert!(v.get("client_secret").is_none(), "public clients only");
    assert!(v["client_id"].as_str().unwrap().starts_with("mcc_"));
    let r = send(Method::GET, &data_url(&gw, "/oauth/register"), &[], "").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn token_endpoint_errors() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let client_id = register_client(&gw).await;
    assert_oauth_error(
        &token_call(&gw, &[("grant_type", "password"), ("client_id", &client_id)]).await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(&token_call(&gw, &[("client_id", &client_id)]).await, 400, "invalid_request");
    assert_oauth_error(
        &token_call(&gw, &[("grant_type", "authorization_code")]).await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &token_call(&gw, &[("grant_type", "authorization_code"), ("client_id", &client_id)]).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(&refresh(&gw, &client_id, "mwr_garbage").await, 400, "invalid_grant");
    assert_oauth_error(
        &refresh(&gw, &client_id, &portcullis::token::generate_refresh().raw).await,
        400,
        "invalid_grant",
    );
    // A workspace token presented as a refresh token.
    let (raw, _) = gw.create_token("demo", json!({})).await;
    assert_oauth_error(&refresh(&gw, &client_id, &raw).await, 400, "invalid_grant");
    // Repeated parameters, bodies too large.
    let r = send(
        Method::POST,
        &data_url(&gw, "/oauth/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "grant_type=refresh_token&grant_type=authorization_code&client_id=x",
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = send(
        Method::POST,
        &data_url(&gw, "/oauth/token"),
        &[],
        "a=".to_string() + &"x".repeat(100_000),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    // A refresh token presented by another client: refused, and the grant
    // (whose token has leaked) ended.
    let (client_id, access, refresh_token) = tokens(&gw).await;
    let r = register(&gw, json!({"client_name": "Thief", "redirect_uris": [REDIRECT]})).await;
    let thief = r.json()["client_id"].as_str().unwrap().to_string();
    assert_oauth_error(&refresh(&gw, &thief, &refresh_token).await, 400, "invalid_grant");
    assert_refused(&call(&gw, &access).await);
    let _ = client_id;
}

#[tokio::test]
async fn endpoints_are_rate_limited_per_address() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let mut limited = None;
    for i in 0..80 {
        let r = send(Method::GET, &data_url(&gw, "/.well-known/oauth-authorization-server"), &[], "").await;
        if r.status == 429 {
            limited = Some(i);
            assert_oauth_error(&r, 429, "slow_down");
            assert_eq!(r.header("retry-after"), "1");
            break;
        }
    }
    let i = limited.expect("limited within 80 requests");
    assert!(i >= 59, "not before the 60 per minute: {i}");
    // The data plane is not affected.
    let (raw, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(call(&gw, &raw).await.status, 200);
}
