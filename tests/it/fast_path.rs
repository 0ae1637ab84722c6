//! The data plane's HTTP/1.1 fast path (`server::fast`) and its hand-over
//! to hyper, over raw sockets: what a client sees must not depend on which
//! of the two served it.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn init_body(id: i64) -> String {
    rpc(
        json!(id),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    )
}

fn post(token: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /ws/demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The status codes of the responses in `wire`, in order.
fn statuses(wire: &str) -> Vec<u16> {
    wire.match_indices("HTTP/1.1 ")
        .filter(|(i, _)| *i == 0 || wire[..*i].ends_with('\n') || wire[..*i].ends_with('}'))
        .map(|(i, _)| wire[i + 9..i + 12].parse().unwrap())
        .collect()
}

async fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    // Two fast-path requests, a bad token (fast path, 401), then one only
    // hyper serves (another path), which closes: all in one write.
    let wire = format!(
        "{}{}{}GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        post(&t, &init_body(1), ""),
        post(&t, &init_body(2), ""),
        post("mwt_bad", &init_body(3), ""),
    );
    s.write_all(wire.as_bytes()).await.unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(statuses(&text), [200, 200, 401, 404], "{text}");
    assert!(text.contains(r#""id":1"#) && text.contains(r#""id":2"#), "{text}");
    // Every answer carries its own request id and a date, whichever side
    // wrote it.
    assert_eq!(text.matches("x-request-id: ").count(), 4, "{text}");
    assert_eq!(text.matches("date: ").count(), 4, "{text}");
}

#[tokio::test]
async fn connection_close_is_honoured_and_said() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    s.write_all(post(&t, &init_body(1), "Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
}

#[tokio::test]
async fn a_body_sent_after_its_head_is_waited_for() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = post(&t, &init_body(7), "Connection: close\r\n");
    let (head, body) = req.split_at(req.find("\r\n\r\n").unwrap() + 4);
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(&body.as_bytes()[10..]).await.unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(text.contains(r#""id":7"#), "{text}");
}

#[tokio::test]
async fn event_stream_answers_are_chunked_as_they_come() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    // The demo's `progress` tool streams notifications, then its result.
    let call = rpc(
        json!(5),
        "tools/call",
        json!({"name": "progress", "arguments": {"steps": 3, "interval_ms": 100}, "_meta": {"progressToken": "p"}}),
    );
    s.write_all(post(&t, &call, "Connection: close\r\n").as_bytes()).await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let rest = read_all(&mut s).await;
    let text = head + &rest;
    assert!(text.contains(r#""id":5"#), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_still_served_by_hyper() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    let s = TcpStream::connect(gw.data).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(gw.ws_url("demo"))
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(init_body(9))))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(r#""id":9"#));
}
