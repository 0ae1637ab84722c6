//! The happy path and what follows it: discovery, register → authorize →
//! consent → code → token → `/ws/` → refresh (rotated) → reuse of the old
//! refresh token revokes the grant → 401; expiry; RFC 7009 revocation
//! reaching the data plane at once; narrowing the servers; OAuth off.

use std::time::Duration;

use http::Method;
use portcullis::token::TokenKind;
use serde_json::json;

use super::*;

#[tokio::test]
async fn oauth_off_keeps_the_404s_and_the_plain_401() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    for path in [
        "/.well-known/oauth-protected-resource/ws/demo",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = send(Method::GET, &data_url(&gw, path), &[], "").await;
        assert_eq!(r.status, 404, "{path}");
    }
    for path in ["/oauth/register", "/oauth/token", "/oauth/revoke"] {
        let r = send(Method::POST, &data_url(&gw, path), &[], "{}").await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_unauthorized(&gw.post("demo", None, echo_call(1, "x")).await, true);
    assert_unauthorized(&gw.post("demo", Some("mwt_nope"), echo_call(1, "x")).await, false);
}

#[tokio::test]
async fn discovery_documents_and_the_401_point_at_each_other() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let r = send(
        Method::GET,
        &data_url(&gw, "/.well-known/oauth-protected-resource/ws/demo"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["resource"], RESOURCE);
    assert_eq!(v["authorization_servers"], json!(["http://gateway.test"]));
    assert_eq!(v["bearer_methods_supported"], json!(["header"]));
    assert!(v["scopes_supported"].is_array());
    // An unknown slug: 404 (docs/oauth.md says why that is acceptable).
    let r = send(
        Method::GET,
        &data_url(&gw, "/.well-known/oauth-protected-resource/ws/nope"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 404);

    let r = send(Method::GET, &data_url(&gw, "/.well-known/oauth-authorization-server"), &[], "").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["issuer"], "http://gateway.test");
    assert_eq!(v["authorization_endpoint"], "http://gateway.test/oauth/authorize");
    assert_eq!(v["token_endpoint"], "http://gateway.test/oauth/token");
    assert_eq!(v["registration_endpoint"], "http://gateway.test/oauth/register");
    assert_eq!(v["revocation_endpoint"], "http://gateway.test/oauth/revoke");
    assert_eq!(v["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(v["token_endpoint_auth_methods_supported"], json!(["none"]));
    assert_eq!(v["grant_types_supported"], json!(["authorization_code", "refresh_token"]));

    // The 401 names the metadata, for a known and an unknown slug alike,
    // with and without a presented token.
    let r = gw.post("demo", None, echo_call(1, "x")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="portcullis", resource_metadata="http://gateway.test/.well-known/oauth-protected-resource/ws/demo""#
    );
    let r = gw.post("nope", Some("mwt_bad"), echo_call(1, "x")).await;
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="portcullis", error="invalid_token", resource_metadata="http://gateway.test/.well-known/oauth-protected-resource/ws/nope""#
    );
    assert_eq!(rpc_error(&r), (-31001, "Unauthorized".into()));
}

#[tokio::test]
async fn the_whole_flow_with_rotation_and_reuse_detection() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let cookie = sign_in(&gw).await;
    let client_id = register_client(&gw).await;

    let (_, challenge) = pkce();
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE);

    // The consent page: what it shows, and its strict headers.
    let (html, _, _) = consent_page(&gw, &cookie, &url).await;
    assert!(html.contains(r#"data-testid="consent-workspace">demo<"#), "{html}");
    assert!(html.contains(r#"data-testid="consent-client">Test App<"#));
    assert!(html.contains(r#"data-testid="consent-redirect-host">127.0.0.1<"#));
    assert!(html.contains(r#"data-testid="consent-server-main""#));
    assert!(html.contains(r#"data-testid="consent-allow""#) && html.contains(r#"data-testid="consent-deny""#));
    let r = send(Method::GET, &url, &[("cookie", &cookie)], "").await;
    let csp = r.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(csp.contains("form-action 'self' http://127.0.0.1:53682"), "{csp}");
    assert!(!csp.contains("script-src"), "no script at all");

    let (code, verifier) = authorize(&gw, &cookie, &client_id, &["main"]).await;
    let r = exchange(&gw, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), "no-store");
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let access = v["access_token"].as_str().unwrap().to_string();
    let refresh1 = v["refresh_token"].as_str().unwrap().to_string();
    assert!(access.starts_with("mwt_") && refresh1.starts_with("mwr_"));

    // The access token works on the data plane, and is a token of kind oauth.
    let r = call(&gw, &access).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rec = gw
        .state()
        .store
        .find_by_hash(&portcullis::token::hash(&access))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.kind, TokenKind::Oauth);
    assert_eq!(rec.workspace.as_deref(), Some("demo"));
    assert_eq!(rec.name, "Test App");
    assert!(rec.created_by.starts_with("grt_"), "the grant made it");
    assert!(rec.member_id.as_deref().unwrap().starts_with("mem_"));
    assert_eq!(rec.email.as_deref(), Some("ann@example.com"));
    assert!(rec.expires_at.is_some());
    // Bound to its workspace: another workspace refuses it.
    assert_eq!(gw.post("other", Some(&access), echo_call(1, "x")).await.status, 401);
    // A refresh token is never a bearer credential.
    assert_eq!(call(&gw, &refresh1).await.status, 401);

    // Refresh: a new pair, the refresh token rotated.
    let r = refresh(&gw, &client_id, &refresh1).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let access2 = v["access_token"].as_str().unwrap().to_string();
    let refresh2 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh1);
    assert_ne!(access2, access);
    assert_eq!(call(&gw, &access2).await.status, 200);

    // The old refresh token again: reuse, the whole grant goes.
    assert_oauth_error(&refresh(&gw, &client_id, &refresh1).await, 400, "invalid_grant");
    assert_refused(&call(&gw, &access).await);
    let r = call(&gw, &access2).await;
    assert_eq!(r.status, 401, "revoked at once");
    assert!(r.header("www-authenticate").contains("resource_metadata="));
    assert_oauth_error(&refresh(&gw, &client_id, &refresh2).await, 400, "invalid_grant");
    // The grant is recorded revoked.
    let grants = gw.state().store.grants().unwrap();
    let g = grants.get_grant(&rec.created_by).await.unwrap().unwrap();
    assert!(g.revoked_at.is_some());
    assert!(g.last_used_at.is_some());
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_brings_a_new_one() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "access_token_ttl = \"2s\"").await;
    let (client_id, access, refresh_token) = tokens(&gw).await;
    assert_eq!(call(&gw, &access).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_refused(&call(&gw, &access).await);
    let r = refresh(&gw, &client_id, &refresh_token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["expires_in"], 2);
    assert_eq!(call(&gw, r.json()["access_token"].as_str().unwrap()).await.status, 200);
}

#[tokio::test]
async fn revocation_endpoint_reaches_the_data_plane_at_once() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    // An access token revokes itself only.
    let (client_id, access, refresh_token) = tokens(&gw).await;
    let revoke = |t: String| {
        let url = data_url(&gw, "/oauth/revoke");
        async move {
            send(
                Method::POST,
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                form(&[("token", &t), ("client_id", "x")]),
            )
            .await
        }
    };
    assert_eq!(revoke(access.clone()).await.status, 200);
    assert_refused(&call(&gw, &access).await);
    let r = refresh(&gw, &client_id, &refresh_token).await;
    assert_eq!(r.status, 200, "the grant lives on");
    let access2 = r.json()["access_token"].as_str().unwrap().to_string();
    let refresh2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    // A refresh token revokes its grant, access tokens included.
    assert_eq!(call(&gw, &access2).await.status, 200);
    assert_eq!(revoke(refresh2.clone()).await.status, 200);
    assert_refused(&call(&gw, &access2).await);
    assert_oauth_error(&refresh(&gw, &client_id, &refresh2).await, 400, "invalid_grant");
    // Unknown and garbage tokens: 200 all the same (RFC 7009 §2.2).
    assert_eq!(revoke("mwr_nothing".into()).await.status, 200);
    assert_eq!(revoke(portcullis::token::generate_refresh().raw).await.status, 200);
}

#[tokio::test]
async fn consent_can_narrow_the_servers() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url)
        .server("session_keys = [\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]")
        .raw(&format!(
            "[oauth]\nenabled = true\n[[workspaces]]\nslug = \"multi\"\n[[workspaces.servers]]\nname = \"a\"\nurl = \"{0}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n[[workspaces.servers]]\nname = \"b\"\nurl = \"{0}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
            up.url
        ))
        .start()
        .await;
    let link = invite(&gw, "multi", "ann@example.com").await;
    let cookie = member_cookie(&follow_link(&gw, &link, None).await);
    let client_id = register_client(&gw).await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(&gw, &client_id, &challenge, "n", "http://gateway.test/ws/multi");
    let (html, request, sig) = consent_page(&gw, &cookie, &url).await;
    assert!(html.contains(r#"data-testid="consent-server-a""#) && html.contains(r#"data-testid="consent-server-b""#));
    let r = consent_post(
        &gw,
        &cookie,
        &[
            ("request", &request),
            ("sig", &sig),
            ("decision", "allow"),
            ("server_b", "on"),
            ("server_zzz", "on"),
        ],
    )
    .await;
    assert_eq!(r.status, 303);
    let code = query_param(r.header("location"), "code").unwrap();
    let r = token_call(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    let rec = gw
        .state()
        .store
        .find_by_hash(&portcullis::token::hash(&access))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.allowed_servers, Some(vec!["b".to_string()]));
    assert_eq!(rec.workspace.as_deref(), Some("multi"));
}

#[tokio::test]
async fn connected_apps_are_listed_and_revoked_through_the_admin_api() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let (client_id, access, refresh_token) = tokens(&gw).await;
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/grants", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let grants = r.json()["grants"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(g["client_name"], "Test App");
    assert_eq!(g["client_id"], client_id.as_str());
    assert_eq!(g["status"], "active");
    assert_eq!(g["servers"], json!(null), "all servers ticked = all");
    assert!(!r.body.windows(4).any(|w| w == b"mwt_" || w == b"mwr_"), "never a token");
    let id = g["id"].as_str().unwrap().to_string();
    let member = g["member_id"].as_str().unwrap().to_string();
    let r = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/demo/grants?member_id={}", enc(&member)), None)
        .await;
    assert_eq!(r.json()["grants"].as_array().unwrap().len(), 1);
    let r = gw
        .admin_call(Method::GET, "/v1/workspaces/demo/grants?member_id=someone", None)
        .await;
    assert_eq!(r.json()["grants"].as_array().unwrap().len(), 0);
    // Another workspace does not see it, and cannot revoke it.
    let r = gw.admin_call(Method::GET, "/v1/workspaces/other/grants", None).await;
    assert_eq!(r.json()["grants"].as_array().unwrap().len(), 0);
    let r = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/other/grants/{id}"), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "grant_not_found");
    assert_eq!(call(&gw, &access).await.status, 200);

    let r = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/demo/grants/{id}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "revoked");
    assert_refused(&call(&gw, &access).await);
    assert_oauth_error(&refresh(&gw, &client_id, &refresh_token).await, 400, "invalid_grant");
    let again = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/demo/grants/{id}"), None)
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["revoked_at"], r.json()["revoked_at"]);
    // The access token shows in the token listing as kind oauth, revoked.
    let token_id = gw
        .state()
        .store
        .find_by_hash(&portcullis::token::hash(&access))
        .await
        .unwrap()
        .unwrap()
        .id;
    let r = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{token_id}"), None)
        .await;
    assert_eq!(r.json()["kind"], "oauth");
    assert_eq!(r.json()["status"], "revoked");
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/grants/x", None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn signed_out_people_sign_in_and_come_back_to_the_request() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let client_id = register_client(&gw).await;
    let (_, challenge) = pkce();
    let url = authorize_url(&gw, &client_id, &challenge, "s", RESOURCE);
    let path = url.strip_prefix(&format!("http://{}", gw.data)).unwrap().to_string();
    // Not signed in: a page that says how, and the way back in a cookie.
    let r = send(Method::GET, &url, &[], "").await;
    assert_eq!(r.status, 401);
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert!(html.contains("Sign in to continue") && html.contains(r#"data-testid="consent-client">Test App<"#));
    assert!(!html.contains("consent-allow"));
    let set = r.header("set-cookie").to_string();
    assert!(
        set.starts_with("portcullis_next=") && set.contains("HttpOnly") && set.contains("Max-Age=600"),
        "{set}"
    );
    let next = set.split(';').next().unwrap().to_string();
    // The sign-in link, with that cookie, comes back to the request.
    let link = invite(&gw, "demo", "bo@example.com").await;
    let r = follow_link(&gw, &link, Some(&next)).await;
    assert_eq!(r.header("location"), path);
    let cleared = r
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("portcullis_next=;"));
    assert!(cleared, "the way back is used once");
    let cookie = member_cookie(&r);
    let (html, _, _) = consent_page(&gw, &cookie, &url).await;
    assert!(html.contains("consent-allow"));
    // A cookie naming anything but an authorization request is ignored.
    let link = invite(&gw, "demo", "cy@example.com").await;
    let r = follow_link(&gw, &link, Some("portcullis_next=https%3A%2F%2Fevil.example%2F")).await;
    assert_eq!(r.header("location"), "/me");
    // A member of another workspace is not signed in for this one.
    let link = invite(&gw, "other", "dee@example.com").await;
    let other = member_cookie(&follow_link(&gw, &link, None).await);
    let r = send(Method::GET, &url, &[("cookie", &other)], "").await;
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("another workspace"));
}

#[tokio::test]
async fn removing_a_member_revokes_their_grants() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let (client_id, access, refresh_token) = tokens(&gw).await;
    assert_eq!(call(&gw, &access).await.status, 200);
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/members", None).await;
    let id = r.json()["members"][0]["id"].as_str().unwrap().to_string();
    let r = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/demo/members/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_refused(&call(&gw, &access).await);
    assert_oauth_error(&refresh(&gw, &client_id, &refresh_token).await, 400, "invalid_grant");
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/grants", None).await;
    assert_eq!(r.json()["grants"][0]["status"], "revoked");
}

#[tokio::test]
async fn members_see_and_disconnect_their_apps_on_their_page() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "").await;
    let cookie = sign_in(&gw).await;
    let client_id = register_client(&gw).await;
    let (code, verifier) = authorize(&gw, &cookie, &client_id, &["main"]).await;
    let v = exchange(&gw, &client_id, &code, &verifier).await.json();
    let access = v["access_token"].as_str().unwrap().to_string();
    let me = send(Method::GET, &data_url(&gw, "/me"), &[("cookie", &cookie)], "").await;
    assert_eq!(me.status, 200);
    let html = String::from_utf8_lossy(&me.body).to_string();
    let csrf = html
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = send(Method::GET, &data_url(&gw, "/me/api/apps"), &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, 200);
    let apps = r.json()["apps"].as_array().unwrap().clone();
    assert_eq!(apps.len(), 1);
    let id = apps[0]["id"].as_str().unwrap().to_string();
    assert!(html.contains(&format!(r#"data-testid="app-row-{id}""#)), "{html}");
    assert!(html.contains(&format!(r#"data-testid="app-name-{id}">Test App<"#)));
    assert!(!html.contains("apps-empty"));

    // Another member of the workspace cannot see or disconnect it.
    let link = invite(&gw, "demo", "eve@example.com").await;
    let eve = member_cookie(&follow_link(&gw, &link, None).await);
    let r = send(Method::GET, &data_url(&gw, "/me/api/apps"), &[("cookie", &eve)], "").await;
    assert_eq!(r.json()["apps"], json!([]));
    let origin = format!("http://{}", gw.data);
    let eve_page = send(Method::GET, &data_url(&gw, "/me"), &[("cookie", &eve)], "").await;
    let eve_csrf = String::from_utf8_lossy(&eve_page.body)
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = send(
        Method::DELETE,
        &data_url(&gw, &format!("/me/api/apps/{id}")),
        &[("cookie", &eve), ("x-csrf-token", &eve_csrf), ("origin", &origin)],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(call(&gw, &access).await.status, 200);
    // Without the CSRF field: refused.
    let r = send(
        Method::POST,
        &data_url(&gw, &format!("/me/apps/{id}/revoke")),
        &[
            ("cookie", &cookie),
            ("origin", &origin),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(call(&gw, &access).await.status, 200);

    // The page's Disconnect form: revoked at once.
    let r = send(
        Method::POST,
        &data_url(&gw, &format!("/me/apps/{id}/revoke")),
        &[
            ("cookie", &cookie),
            ("origin", &origin),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_refused(&call(&gw, &access).await);
    let me = send(Method::GET, &data_url(&gw, "/me"), &[("cookie", &cookie)], "").await;
    assert!(String::from_utf8_lossy(&me.body).contains("apps-empty"));
}
