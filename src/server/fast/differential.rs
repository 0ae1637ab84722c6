//! Differential tests (issue 11): the fast path's request-head parser
//! ([`parse_head`]) against hyper's HTTP/1.1 server, which answers on the
//! same listener, over one corpus of hand-written edge cases and
//! proptest-generated requests.
//!
//! The fast path either takes a request (and frames it itself) or hands the
//! connection, untouched, to hyper, which then answers as it always does.
//! So the two can disagree in one way only: the fast path taking a request
//! hyper would refuse, or framing it differently. For every input the fast
//! path takes, hyper must serve the same request — method, target, headers,
//! the same body bytes — and find the next pipelined request where the fast
//! path says it starts. An input the fast path leaves is hyper's verdict
//! by construction (refusals keep hyper's status); the hand-written cases
//! pin which side takes each one and hyper's status class.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Parsed, parse_head};

const MAX_BODY: u64 = 1000;
/// Sent after every input: where hyper finds it says where it framed the
/// input's end.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";

/// One request as a server framed it.
#[derive(Debug, PartialEq, Eq)]
struct Served {
    method: String,
    target: String,
    /// Sorted by name (stable), so that the two sides' orders compare.
    headers: Vec<(String, Vec<u8>)>,
    /// `None`: the body ended early (the connection closed inside it).
    body: Option<Vec<u8>>,
}

fn sorted(mut headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    headers
}

/// What the fast path makes of `input`: the request it takes, and where the
/// next one starts (`None` if the client asked to close); `Err(true)` if it
/// waits for more, `Err(false)` if it hands the connection to hyper.
fn fast_takes(input: &[u8]) -> Result<(Served, Option<usize>), bool> {
    match parse_head(input, MAX_BODY) {
        Parsed::Fast(h) => {
            let end = h.len + h.body_len;
            let headers = h
                .fields
                .iter()
                .map(|(name, start, stop)| (name.as_str().to_owned(), input[*start..*stop].to_vec()))
                .collect();
            let served = Served {
                method: "POST".into(),
                target: h.uri.to_string(),
                headers: sorted(headers),
                body: input.get(h.len..end).map(<[u8]>::to_vec),
            };
            Ok((served, (!h.close).then_some(end)))
        }
        Parsed::Partial => Err(true),
        Parsed::Other => Err(false),
    }
}

/// What hyper's server (as the data listener configures it) does with
/// `input` followed by the client's end of stream: the requests it hands
/// to the service, and what it writes back.
async fn hyper_serves(input: Vec<u8>) -> (Vec<Served>, String) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen: Arc<Mutex<Vec<Served>>> = Arc::default();
    let record = Arc::clone(&seen);
    let svc = service_fn(move |req: Request<Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.ok().map(|c| c.to_bytes().to_vec());
            let headers = parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            record.lock().unwrap().push(Served {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                headers: sorted(headers),
                body,
            });
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_buf_size(64 * 1024)
        // The client's end of stream is sent right after its bytes; hyper
        // must still answer what it read.
        .half_close(true);
    let conn = tokio::spawn(builder.serve_connection(TokioIo::new(server), svc));
    let exchange = async {
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("hyper answers and closes");
    let _ = conn.await;
    let served = std::mem::take(&mut *seen.lock().unwrap());
    (served, String::from_utf8_lossy(&out).into_owned())
}

/// The differential check of one input.
fn check(rt: &tokio::runtime::Runtime, input: &[u8]) -> Result<(), String> {
    let full = [input, NEXT].concat();
    match fast_takes(&full) {
        Ok((fast, end)) => {
            let (served, out) = rt.block_on(hyper_serves(full.clone()));
            let Some(first) = served.first() else {
                return Err(format!("the fast path takes a request hyper refuses: {out:?}"));
            };
            if *first != fast {
                return Err(format!("framed differently:\n fast  {fast:?}\n hyper {first:?}"));
            }
            // Where the fast path says the next request starts, hyper found
            // it too (unless the body swallowed it, on both sides alike).
            // A close asked for ends the connection on both sides.
            let next = served.get(1).map(|s| s.target.as_str());
            match end {
                Some(end) if end + NEXT.len() == full.len() && next != Some("/next") => {
                    return Err(format!("the next request is not where the fast path says: {served:?}"));
                }
                None if next.is_some() => return Err(format!("hyper kept a connection the client closes: {served:?}")),
                _ => {}
            }
            Ok(())
        }
        Err(true) => {
            // Waiting for more, the fast path answers nothing at the end of
            // the stream; hyper must not have served a request either.
            let (served, _) = rt.block_on(hyper_serves(full.clone()));
            if served.is_empty() {
                Ok(())
            } else {
                Err(format!("the fast path waits for a head hyper served: {served:?}"))
            }
        }
        // hyper's by construction.
        Err(false) => Ok(()),
    }
}

/// A failure message cut to a readable length.
fn short(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    if s.len() > 2000 {
        format!("{}...", &s[..s.floor_char_boundary(2000)])
    } else {
        s
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The first status code hyper wrote, if any.
fn status(out: &str) -> Option<u16> {
    out.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok())
}

#[test]
fn hand_written_edge_cases_agree_with_hyper() {
    let rt = runtime();
    let post = |headers: &str, body: &str| format!("POST /ws/demo HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}");
    let huge_value = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    // (why, input, whether the fast path takes it, hyper's status class
    // when it refuses: 4 = 4xx, 0 = closes without an answer)
    let cases: Vec<(&str, String, bool, Option<u16>)> = vec![
        ("plain", post("Content-Length: 2\r\n", "{}"), true, None),
        ("leading zeros", post("Content-Length: 002\r\n", "{}"), true, None),
        (
            "keep-alive",
            post("Connection: keep-alive\r\nContent-Length: 2\r\n", "{}"),
            true,
            None,
        ),
        (
            "CL and TE",
            post("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            false,
            None,
        ),
        (
            "TE and CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", "0\r\n\r\n"),
            false,
            None,
        ),
        (
            "obfuscated TE",
            post("Transfer-Encoding: xchunked\r\nContent-Length: 2\r\n", "{}"),
            false,
            Some(4),
        ),
        ("TE list", post("Transfer-Encoding: chunked, identity\r\n", "{}"), false, Some(4)),
        (
            "duplicate CL",
            post("Content-Length: 2\r\nContent-Length: 2\r\n", "{}"),
            false,
            None,
        ),
        (
            "conflicting CL",
            post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}x"),
            false,
            Some(4),
        ),
        ("listed CL", post("Content-Length: 2, 2\r\n", "{}"), false, None),
        ("plus", post("Content-Length: +2\r\n", "{}"), false, Some(4)),
        ("minus", post("Content-Length: -2\r\n", "{}"), false, Some(4)),
        ("inner space", post("Content-Length: 1 0\r\n", "0123456789"), false, Some(4)),
        ("empty CL", post("Content-Length: \r\n", ""), false, Some(4)),
        ("hex CL", post("Content-Length: 0x2\r\n", "{}"), false, Some(4)),
        ("huge CL", post("Content-Length: 99999999999999999999999\r\n", ""), false, Some(4)),
        ("over max_body", post("Content-Length: 1001\r\n", ""), false, None),
        ("CR in value", post("X-A: a\rb\r\nContent-Length: 2\r\n", "{}"), false, Some(4)),
        ("NUL in value", post("X-A: a\0b\r\nContent-Length: 2\r\n", "{}"), false, Some(4)),
        ("obs-fold", post("X-A: a\r\n b\r\nContent-Length: 2\r\n", "{}"), false, Some(4)),
        ("space before colon", post("Content-Length : 2\r\n", "{}"), false, Some(4)),
        // Left to hyper, whose own 64 KiB limit depends on how the bytes
        // arrive (it checks a partial head only).
        (
            "huge header",
            post(&format!("{huge_value}Content-Length: 2\r\n"), "{}"),
            false,
            None,
        ),
        ("101 headers", post(&format!("{many}Content-Length: 2\r\n"), "{}"), false, Some(4)),
        (
            "bare LF lines",
            "POST /ws/demo HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}".into(),
            true,
            None,
        ),
        (
            "HTTP/1.0",
            "POST /ws/demo HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}".into(),
            false,
            None,
        ),
        (
            "absolute form",
            "POST http://x/ws/demo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".into(),
            false,
            None,
        ),
        ("expect", post("Expect: 100-continue\r\nContent-Length: 2\r\n", "{}"), false, None),
        ("no length", post("", ""), false, None),
        ("body cut short", post("Content-Length: 900\r\n", "{}"), true, None),
    ];
    for (why, input, taken, refused) in cases {
        let full = [input.as_bytes(), NEXT].concat();
        assert_eq!(fast_takes(&full).is_ok(), taken, "{why}: fast path takes it?");
        check(&rt, input.as_bytes()).unwrap_or_else(|e| panic!("{why}: {}", short(&e)));
        if let Some(class) = refused {
            let (served, out) = rt.block_on(hyper_serves(full));
            assert!(served.is_empty(), "{why}: hyper served {}", short(&served));
            assert_eq!(status(&out).map(|s| s / 100), (class != 0).then_some(class), "{why}: {out:?}");
        }
    }
}

/// A `Content-Length` value for a body of `n` bytes, right or wrong.
fn length_value(n: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        10 => Just(n.to_string()),
        1 => Just(format!("00{n}")),
        1 => Just(format!("+{n}")),
        1 => Just(format!("-{n}")),
        1 => Just(format!("{n}, {n}")),
        1 => Just(format!("{n} {n}")),
        1 => Just(format!(" {n}\t")),
        1 => Just(String::new()),
        1 => Just(format!("{}", n + 1)),
        1 => Just("99999999999999999999999".to_owned()),
        1 => Just(format!("0x{n:x}")),
    ]
}

fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "Content-Length",
        "content-length",
        "Content-Length ",
        "Transfer-Encoding",
        "Connection",
        "Expect",
        "Upgrade",
        "Accept",
        "Mcp-Session-Id",
        "X-A",
        "X_B",
        "",
    ])
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop::sample::select(vec![
        b'a', b'Z', b'5', b' ', b'\t', b',', b'+', b';', b'"', b':', b'\r', b'\n', 0u8, 0x7f, 0x80, 0xff,
    ]);
    let words = prop::sample::select(vec![
        &b"chunked"[..],
        b"close",
        b"keep-alive",
        b"upgrade",
        b"100-continue",
        b"gzip",
        b"x-hop",
    ]);
    prop_oneof![
        2 => prop::collection::vec(byte, 0..8),
        2 => prop::collection::vec(words, 1..3).prop_map(|w| w.join(&b", "[..])),
    ]
}

/// A header line: mostly ordinary ones, sometimes a hostile name, value or
/// line ending.
fn header_line() -> impl Strategy<Value = Vec<u8>> {
    let ordinary = (
        prop::sample::select(vec!["Accept", "Mcp-Session-Id", "X-A", "Connection", "Authorization"]),
        prop::sample::select(vec!["keep-alive", "close", "application/json", "a b", "Bearer x", "x\ty"]),
    )
        .prop_map(|(n, v)| format!("{n}: {v}\r\n").into_bytes());
    let eol = prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r", b"\r\n ", b"\r\n\t"]);
    let hostile = (header_name(), header_value(), eol).prop_map(|(n, v, e)| [n.as_bytes(), b": ", &v, e].concat());
    prop_oneof![4 => ordinary, 1 => hostile]
}

/// A request: request line, headers (a generated `Content-Length` most of
/// the time, other headers, odd line endings and folds), a body.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        6 => Just("POST /ws/demo HTTP/1.1".to_owned()),
        1 => (
            prop::sample::select(vec!["POST", "GET", "post", "PUT"]),
            prop::sample::select(vec!["/ws/demo", "/ws/demo?x=1", "/ws/", "/other", "*", "/ws/a%20b"]),
            prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "http/1.1"]),
        )
            .prop_map(|(m, t, v)| format!("{m} {t} {v}")),
    ];
    let other = prop::collection::vec(header_line(), 0..5);
    (
        line,
        0usize..24,
        prop::bool::weighted(0.9),
        other,
        0usize..5,
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_flat_map(move |(line, n, with_length, other, at, body)| {
            let value = if with_length {
                length_value(n).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (Just(line), Just(n), value, Just(other), Just(at), Just(body))
        })
        .prop_map(|(line, n, length, mut headers, at, body)| {
            let mut out = format!("{line}\r\nHost: x\r\n").into_bytes();
            if let Some(v) = length {
                headers.insert(at.min(headers.len()), format!("Content-Length: {v}\r\n").into_bytes());
            }
            for h in headers {
                out.extend_from_slice(&h);
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body[..n.min(body.len())]);
            out
        })
}

#[test]
fn generated_requests_are_framed_as_hyper_frames_them() {
    // Modest: each case is at most one in-memory hyper connection.
    let config = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let config_cases = config.cases;
    let rt = runtime();
    let taken = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&request(), |input| {
        if fast_takes(&[&input[..], NEXT].concat()).is_ok() {
            taken.set(taken.get() + 1);
        }
        check(&rt, &input).map_err(|e| TestCaseError::fail(format!("{}\ninput: {:?}", short(&e), String::from_utf8_lossy(&input))))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The corpus must keep exercising the fast path, not only what it
    // leaves to hyper (shrinking runs do not count here).
    assert!(
        taken.get() * 5 >= config_cases,
        "only {} of {config_cases} generated requests took the fast path",
        taken.get()
    );
}
