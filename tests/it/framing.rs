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

/// A hand-written upstream: answers every request on a connection with
/// `answer` and records each request head it read.
async fn raw_upstream(answer: &'static [u8]) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = std::sync::Arc::clone(&heads);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: head, then its content-length body.
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    seen.lock().unwrap().push(head);
                    // An answer that says `connection: close` is the last.
                    let last = answer.windows(17).any(|w| w == b"connection: close");
                    if s.write_all(answer).await.is_err() || last {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

/// The upstream's answer: a length beside chunked coding, and a header its
/// `Connection` names.
const SMUGGLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\nconnection: keep-alive, X-Hop-Secret\r\nx-hop-secret: s\r\ntransfer-encoding: chunked\r\n\r\n24\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n0\r\n\r\n";

#[tokio::test]
async fn a_length_beside_a_coding_and_connection_named_headers_stop_at_the_hop_on_both_paths() {
    let (url, heads) = raw_upstream(SMUGGLY).await;
    let gw = Setup::new(&url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let body = echo_call(1, "x");
    // hyper's path: a chunked request body; the fast path: the plain shape.
    // Both ask for `Mcp-Param-Hop` to stay on the first hop.
    let chunked = format!(
        "POST /ws/demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nConnection: keep-alive, Mcp-Param-Hop\r\nMcp-Param-Hop: 1\r\nMcp-Param-Kept: 2\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let plain = post(&t, &body, "Mcp-Param-Kept: 2\r\n");
    for (path, wire) in [("hyper", chunked), ("fast", plain)] {
        let mut s = TcpStream::connect(gw.data).await.unwrap();
        s.write_all(wire.as_bytes()).await.unwrap();
        // Read the whole answer; both paths keep the connection open, so
        // stop at the end of the chunked body.
        let mut buf = Vec::new();
        while !buf.ends_with(b"0\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("a whole answer")
                .unwrap();
            assert!(n > 0, "{path}: closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).to_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{path}: {text}");
        assert!(!text.contains("content-length: 5"), "{path}: {text}");
        assert!(!text.contains("x-hop-secret"), "{path}: {text}");
        assert!(text.contains(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#), "{path}: {text}");
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    assert!(!heads[0].contains("mcp-param-hop"), "{}", heads[0]);
    assert!(heads[0].contains("mcp-param-kept: 2"), "{}", heads[0]);
}

#[tokio::test]
async fn an_upstream_body_cut_short_is_counted_and_a_signed_length_is_hypers_400() {
    let (url, _) =
        raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"jso").await;
    let gw = Setup::new(&url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    // The upstream closes after 5 of 100 bytes: the client's answer is cut
    // short (the fast path ends the connection).
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    s.write_all(post(&t, &echo_call(1, "x"), "").as_bytes()).await.unwrap();
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("{\"jso"), "{text}");
    let m = send(http::Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    let m = String::from_utf8_lossy(&m.body).into_owned();
    assert!(m.contains("portcullis_upstream_body_aborts_total{workspace=\"demo\"} 1\n"), "{m}");

    // `+N` is not a length: the fast path leaves it to hyper, whose 400 it is.
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    let wire = post(&t, "{}", "").replace("Content-Length: 2", "Content-Length: +2");
    s.write_all(wire.as_bytes()).await.unwrap();
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
}
