//! Refusing before reading, and framing strictly, on both HTTP/1.1 hops
//! (issue 11), over raw sockets: the data plane's fast path and hyper's
//! path answer alike, and what an upstream sends is framed as RFC 9112 says.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// A head announcing a 4 MiB body, sent without any of it.
fn big_head(auth: Option<&str>, extra: &str) -> String {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "POST /ws/demo HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: 4194304\r\n\r\n"
    )
}

fn post(token: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /ws/demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Everything until the gateway closes; a hang guard only (the body-read
/// timeout is set far beyond it, so an answer that waits for the body
/// never comes in time).
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answered and closed without the body being sent")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn body_of(wire: &str) -> serde_json::Value {
    let body = &wire[wire.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {wire}"))
}

async fn gateway(up: &DemoUpstream, rpm: u32) -> Gateway {
    let mut setup = Setup::new(&up.url).server("body_read_timeout_ms = 600000\nallowed_origins = [\"http://good.example\"]");
    setup.limits_rpm = rpm;
    setup.start().await
}

#[tokio::test]
async fn refusals_from_the_head_come_at_once_without_the_body_and_close() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, 1).await;
    let (t, _) = gw.create_token("demo", json!({})).await;

    // No token: 401 from the head alone.
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    s.write_all(big_head(None, "").as_bytes()).await.unwrap();
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("\r\nx-request-id: "), "{text}");
    assert_eq!(body_of(&text)["id"], json!(null));

    // A bad Origin: 403.
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    s.write_all(big_head(Some(&t), "Origin: http://evil.example\r\n").as_bytes())
        .await
        .unwrap();
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert_eq!(body_of(&text)["id"], json!(null));

    // Over the limit (1 per minute, spent here): 429 with `id: null`.
    assert_eq!(gw.post("demo", Some(&t), echo_call(1, "x")).await.status, 200);
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    s.write_all(big_head(Some(&t), "").as_bytes()).await.unwrap();
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
    assert!(text.contains("\r\nretry-after: "), "{text}");
    assert_eq!(body_of(&text)["id"], json!(null));
    // A small body still has its id echoed (contract: when it can be read).
    let r = gw.post("demo", Some(&t), echo_call(77, "x")).await;
    assert_eq!((r.status.as_u16(), r.json()["id"].clone()), (429, json!(77)));
}

#[tokio::test]
async fn a_refused_request_whose_body_is_here_keeps_the_connection_in_step() {
    let up = DemoUpstream::start().await;
    let gw = gateway(&up, 120).await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    // A 403 and a 401 whose bodies came along, then a good request, then one
    // that closes: the refused bodies are skipped, not read as requests.
    let wire = format!(
        "{}{}{}{}",
        post(&t, &echo_call(1, "a"), "Origin: http://evil.example\r\n"),
        post("mwt_bad", &echo_call(2, "b"), ""),
        post(&t, &echo_call(3, "c"), ""),
        post(&t, &echo_call(4, "d"), "Connection: close\r\n"),
    );
    s.write_all(wire.as_bytes()).await.unwrap();
    let text = read_to_close(&mut s).await;
    let statuses: Vec<&str> = text.match_indices("HTTP/1.1 ").map(|(i, _)| &text[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["403", "401", "200", "200"], "{text}");
    assert!(text.contains(r#""id":3"#) && text.contains(r#""id":4"#), "{text}");
}
