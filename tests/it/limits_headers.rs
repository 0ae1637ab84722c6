//! Request heads beyond the data plane's bounds (more than 64 KiB, or more
//! than 100 header fields) get 431, whichever server reads them: the fast
//! path's shape (`POST /ws/{slug}` with a `Content-Length` body) and the
//! shapes hyper serves (here GET, and a chunked POST). Heads just inside the
//! bounds are served, so a bound that shrank would be seen too.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Sends one raw request and returns what the gateway wrote back before
/// closing (or the first complete answer, for a kept-alive connection).
async fn raw(gw: &Gateway, head: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.data).await.unwrap();
    // The gateway may answer 431 and close before it has read all of an
    // oversized head or its body; the answer is what counts, so a write
    // that fails on the closed connection is not a failure.
    if s.write_all(head.as_bytes()).await.is_ok() {
        let _ = s.write_all(body.as_bytes()).await;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A hang guard, not a timing claim.
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the gateway answered")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| buf.len() >= end + 4 + n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// `n` filler header fields, `size` bytes of value in all.
fn filler(n: usize, size: usize) -> String {
    let each = size / n.max(1);
    (0..n).map(|i| format!("X-Fill-{i}: {}\r\n", "a".repeat(each))).collect()
}

struct Case {
    gw: Gateway,
    _up: DemoUpstream,
    auth: String,
    body: String,
}

async fn start() -> Case {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (t, _) = gw.create_token("demo", json!({})).await;
    Case {
        gw,
        _up: up,
        auth: format!("Authorization: Bearer {t}\r\n"),
        body: echo_call(1, "x"),
    }
}

impl Case {
    /// The fast path's shape: POST with a Content-Length body; `extra` adds
    /// fields after the 4 this always sends.
    async fn fast(&self, extra: &str) -> String {
        let head = format!(
            "POST /ws/demo HTTP/1.1\r\nHost: gw\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            self.auth,
            self.body.len()
        );
        raw(&self.gw, &head, &self.body).await
    }

    /// A shape only hyper serves: chunked POST.
    async fn chunked(&self, extra: &str) -> String {
        let head = format!(
            "POST /ws/demo HTTP/1.1\r\nHost: gw\r\n{}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n{extra}\r\n",
            self.auth
        );
        let body = format!("{:x}\r\n{}\r\n0\r\n\r\n", self.body.len(), self.body);
        raw(&self.gw, &head, &body).await
    }

    /// Another: GET (the event stream), answered by the demo upstream with 405.
    async fn get(&self, extra: &str) -> String {
        let head = format!("GET /ws/demo HTTP/1.1\r\nHost: gw\r\n{}{extra}\r\n", self.auth);
        raw(&self.gw, &head, "").await
    }
}

#[tokio::test]
async fn more_than_100_header_fields_get_431_on_every_path() {
    let c = start().await;
    // 4 fields of its own + 96 = 100: served.
    let a = c.fast(&filler(96, 96 * 8)).await;
    assert_eq!(status(&a), "200", "{a}");
    let a = c.chunked(&filler(96, 96 * 8)).await;
    assert_eq!(status(&a), "200", "{a}");
    // One more: 431.
    let a = c.fast(&filler(97, 97 * 8)).await;
    assert_eq!(status(&a), "431", "{a}");
    let a = c.chunked(&filler(97, 97 * 8)).await;
    assert_eq!(status(&a), "431", "{a}");
    let a = c.get(&filler(99, 99 * 8)).await;
    assert_eq!(status(&a), "431", "{a}");
}

#[tokio::test]
async fn heads_over_64_kib_get_431_on_every_path() {
    let c = start().await;
    // Comfortably inside 64 KiB: served.
    let a = c.fast(&filler(4, 60 * 1024)).await;
    assert_eq!(status(&a), "200", "{a}");
    let a = c.chunked(&filler(4, 60 * 1024)).await;
    assert_eq!(status(&a), "200", "{a}");
    // Over it, in few fields: 431.
    let a = c.fast(&filler(4, 66 * 1024)).await;
    assert_eq!(status(&a), "431", "{a}");
    let a = c.chunked(&filler(4, 66 * 1024)).await;
    assert_eq!(status(&a), "431", "{a}");
    let a = c.get(&filler(4, 66 * 1024)).await;
    assert_eq!(status(&a), "431", "{a}");
}
