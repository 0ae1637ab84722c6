//! Client ID Metadata Documents: a client whose id is the URL of its
//! metadata completes the flow without registering; the fetch refuses
//! loopback addresses (by address, also behind a name) unless the test
//! switch is on, follows no redirect, and caps the document's size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A tiny HTTP server answering every request with `status` and `body`;
/// counts the requests it gets.
async fn doc_server(status: u16, extra: &'static str, body: impl Fn(&str) -> String + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, b) = (Arc::clone(&hits), base.clone());
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let text = body(&b);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (base, hits)
}

fn document(base: &str) -> String {
    json!({
        "client_id": format!("{base}/client.json"),
        "client_name": "Metadata App",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    })
    .to_string()
}

#[tokio::test]
async fn a_metadata_document_client_completes_the_flow() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, "allow_private_client_metadata = true").await;
    let r = send(Method::GET, &data_url(&gw, "/.well-known/oauth-authorization-server"), &[], "").await;
    assert_eq!(r.json()["client_id_metadata_document_supported"], true);
    let (base, hits) = doc_server(200, "", document).await;
    let client_id = format!("{base}/client.json");
    let cookie = sign_in(&gw).await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(&gw, &client_id, &challenge, "m", RESOURCE);
    let (html, request, sig) = consent_page(&gw, &cookie, &url).await;
    assert!(html.contains(r#"data-testid="consent-client">Metadata App<"#), "{html}");
    let r = consent_post(
        &gw,
        &cookie,
        &[("request", &request), ("sig", &sig), ("decision", "allow"), ("server_main", "on")],
    )
    .await;
    let code = query_param(r.header("location"), "code").unwrap();
    let r = exchange(&gw, &client_id, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(call(&gw, r.json()["access_token"].as_str().unwrap()).await.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then cached");
}

#[tokio::test]
async fn the_fetch_refuses_private_addresses_redirects_and_large_documents() {
    let up = DemoUpstream::start().await;
    let strict = gateway(&up, "").await;
    let cookie = sign_in(&strict).await;
    let (base, hits) = doc_server(200, "", document).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let (_, challenge) = pkce();
    // Loopback by address, and behind a name that resolves to it.
    for id in [
        format!("https://127.0.0.1:{port}/client.json"),
        format!("https://localhost:{port}/client.json"),
        format!("{base}/client.json"),
    ] {
        let r = send(
            Method::GET,
            &authorize_url(&strict, &id, &challenge, "s", RESOURCE),
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_oauth_error(&r, 401, "invalid_client");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection to a private address");

    let lax = gateway(&up, "allow_private_client_metadata = true").await;
    let cookie = sign_in(&lax).await;
    let (to, _) = doc_server(200, "", document).await;
    let location: &'static str = Box::leak(format!("location: {to}/client.json\r\n").into_boxed_str());
    let (redirecting, _) = doc_server(302, location, |_| String::new()).await;
    let (large, _) = doc_server(200, "", |b| {
        json!({"client_id": format!("{b}/client.json"), "redirect_uris": [REDIRECT], "pad": "x".repeat(40_000)}).to_string()
    })
    .await;
    let (other_id, _) = doc_server(200, "", |_| document("https://elsewhere.example")).await;
    for base in [redirecting, large, other_id] {
        let id = format!("{base}/client.json");
        let r = send(
            Method::GET,
            &authorize_url(&lax, &id, &challenge, "s", RESOURCE),
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_oauth_error(&r, 401, "invalid_client");
    }
}
