//! Entry points for the coverage-guided fuzz targets in `fuzz/`
//! (docs/fuzzing.md). Not an API: each function feeds arbitrary bytes to one
//! of the crate's parsers of untrusted input and panics when an invariant
//! does not hold, which the fuzzer reports as a crash. The invariants are
//! properties the rest of the code relies on (a parsed head lies inside the
//! bytes read, decoding does not depend on how reads were split, strict
//! framing grammar), not restatements of the code under test.
//!
//! Every committed corpus file is replayed by this module's tests, so a
//! minimised crash stays a regression test of the plain `cargo test`.

use bytes::BytesMut;
use http::HeaderValue;

use crate::mcp::{jsonrpc, session, sse};
use crate::server::fast;
use crate::upstream::h1;

/// A fuzz target: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as the fuzz crate's binaries and the corpus
/// directories (`fuzz/corpus/<name>/`) call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("fast_head", fast_head),
    ("h1_response", h1_response),
    ("sse", sse),
    ("jsonrpc", jsonrpc),
    ("token", token),
    ("session", session),
];

/// The body limit the fast-path target parses with (the default
/// `max_body_bytes` is of this order; the value only moves the boundary).
const MAX_BODY: u64 = 1 << 20;

/// Whether `v` is a Content-Length value the RFC 9110 §8.6 grammar allows:
/// `1*DIGIT` (httparse has already removed the surrounding whitespace).
fn plain_length(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(u8::is_ascii_digit)
}

// The two entry points below are the only places that name the parsers'
// internals; when a parser's entry point moves, only these change.

/// The fast path's request-head parser (`server::fast::parse_head`).
fn parse_request_head(buf: &[u8]) -> fast::Parsed {
    fast::parse_head(buf, MAX_BODY)
}

/// The upstream response-head parser (`h1::parse_head`), on a buffer:
/// consumes the head (or an interim head) from `buf`.
fn parse_response_head(buf: &mut BytesMut, head_request: bool) -> Result<h1::Parsed, h1::Failure> {
    h1::parse_head(buf, head_request)
}

/// The fast path's request-head parser and framing (`server::fast::parse`).
pub fn fast_head(data: &[u8]) {
    let fast::Parsed::Fast(head) = parse_request_head(data) else {
        return;
    };
    // The head lies inside the bytes read and ends with its blank line.
    assert!(
        head.len <= data.len(),
        "head length {} beyond the {} bytes read",
        head.len,
        data.len()
    );
    assert!(data[..head.len].ends_with(b"\n"), "head does not end with a line end");
    assert!(head.body_len as u64 <= MAX_BODY, "body length {} above the limit", head.body_len);
    assert!(head.uri.path().starts_with("/ws/"), "fast path took {:?}", head.uri);
    let mut lengths = 0;
    for (name, start, end) in &head.fields {
        assert!(start <= end && *end <= head.len, "header {name} at {start}..{end} outside the head");
        let value = &data[*start..*end];
        // `serve` turns these into header values and closes the connection
        // unanswered if that fails; `parse` promises it cannot.
        assert!(
            HeaderValue::from_bytes(value).is_ok(),
            "header {name} has a value HeaderValue refuses"
        );
        if name == http::header::CONTENT_LENGTH {
            lengths += 1;
            // A proxy in front reads `+5` or ` 5 ` differently (issue 11).
            assert!(
                plain_length(value),
                "Content-Length {:?} is not plain digits",
                String::from_utf8_lossy(value)
            );
            assert_eq!(
                std::str::from_utf8(value).ok().and_then(|v| v.parse::<usize>().ok()),
                Some(head.body_len)
            );
        }
        assert!(
            name != http::header::TRANSFER_ENCODING,
            "fast path took a Transfer-Encoding request"
        );
    }
    assert_eq!(lengths, 1, "fast path took a request without exactly one Content-Length");
    // The head is decided by the head alone: the body bytes that came with
    // it change nothing, and no shorter read is taken as a whole head.
    match parse_request_head(&data[..head.len]) {
        fast::Parsed::Fast(again) => assert_eq!((again.len, again.body_len), (head.len, head.body_len)),
        _ => panic!("the head alone parses differently from the head with its body"),
    }
    for cut in [head.len - 1, head.len / 2] {
        assert!(
            !matches!(parse_request_head(&data[..cut]), fast::Parsed::Fast(_)),
            "{cut} bytes of a {}-byte head already parse as a whole head",
            head.len
        );
    }
}

/// The upstream response head parser and body decoder (`upstream::h1`),
/// chunked included. The first byte chooses whether the request was a HEAD
/// and how the body's bytes are split into reads; the rest is what the
/// upstream sent before closing.
pub fn h1_response(data: &[u8]) {
    let Some((&ctl, wire)) = data.split_first() else {
        return;
    };
    let head_request = ctl & 1 == 1;
    let read_size = usize::from(ctl >> 1) + 1;
    let mut buf = BytesMut::from(wire);
    let mut result = None;
    // Each interim answer consumes at least its status line.
    for _ in 0..=wire.len() {
        match parse_response_head(&mut buf, head_request) {
            Ok(h1::Parsed::Interim) => continue,
            Ok(h1::Parsed::Head(head)) => result = Some(Ok(head)),
            Ok(h1::Parsed::Partial) => {}
            Err(e) => result = Some(Err(e)),
        }
        break;
    }
    let Some(Ok(head)) = result else {
        return;
    };
    let head_end = wire.len() - buf.len();
    // Every Content-Length the upstream sent was plain digits, whatever the
    // framing ended up being (issue 11: `+5` must not pass at either hop).
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut slots);
    // Interim heads were consumed before: parse the final one only.
    let final_start = final_head_start(&wire[..head_end]);
    if let Ok(httparse::Status::Complete(_)) = resp.parse(&wire[final_start..head_end]) {
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                assert!(
                    plain_length(h.value),
                    "upstream Content-Length {:?} accepted",
                    String::from_utf8_lossy(h.value)
                );
            }
        }
    }
    assert!(
        !head.parts.headers.contains_key(http::header::TRANSFER_ENCODING),
        "transfer-encoding passed on"
    );

    let body = &buf[..];
    let mut decoder = head.decoder;
    let initial = format!("{decoder:?}");
    let length = decoder.exact_rest();
    let chunked = matches!(decoder, h1::Decoder::Chunked(_));
    let mut pending = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut steps = 0;
    let outcome: Result<(), &str> = 'decode: loop {
        loop {
            steps += 1;
            assert!(steps <= 4 * body.len() + 16, "decoder {initial} made no progress");
            match decoder.decode(&mut pending) {
                Ok(h1::Step::Data(d)) => {
                    assert!(!d.is_empty() || pending.is_empty(), "empty data while bytes are pending");
                    out.extend_from_slice(&d);
                }
                Ok(h1::Step::NeedMore) => break,
                Ok(h1::Step::Done) => break 'decode Ok(()),
                Err(e) => break 'decode Err(e),
            }
        }
        if fed == body.len() {
            break decoder.eof();
        }
        let n = read_size.min(body.len() - fed);
        pending.extend_from_slice(&body[fed..fed + n]);
        fed += n;
    };
    assert!(out.len() <= body.len(), "decoded more bytes than were sent");
    if outcome.is_err() {
        return;
    }
    if let Some(n) = length {
        assert_eq!(out.len() as u64, n, "a length body of {n} bytes decoded to {}", out.len());
    }
    if chunked {
        let consumed = fed - pending.len();
        match strict_chunked(body) {
            Some((data, used)) => {
                assert_eq!(out, data, "chunked body decoded differently from the RFC 9112 grammar");
                assert_eq!(consumed, used, "chunked body ended elsewhere than the grammar says");
            }
            None => panic!(
                "accepted a chunked body the RFC 9112 grammar refuses: {:?}",
                String::from_utf8_lossy(&body[..consumed])
            ),
        }
    }
}

/// Where the last response head in `heads` (interim heads, then the final
/// one) begins.
fn final_head_start(heads: &[u8]) -> usize {
    let mut start = 0;
    let mut rest = heads;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Response::new(&mut slots);
        match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) if n < rest.len() => {
                start += n;
                rest = &rest[n..];
            }
            _ => return start,
        }
    }
}

/// A chunked body by the RFC 9112 §7.1 grammar: chunk-size is `1*HEXDIG`,
/// optionally followed by extensions (`BWS ";" …`, not checked further),
/// and every chunk line and chunk ends with CRLF. Trailer lines are taken
/// as they come up to the blank line. Returns the data and the bytes used.
fn strict_chunked(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = rest.len();
    let mut data = Vec::new();
    let crlf_line = |b: &[u8]| -> Option<usize> {
        let lf = b.iter().position(|&c| c == b'\n')?;
        (lf > 0 && b[lf - 1] == b'\r' && !b[..lf - 1].contains(&b'\r')).then_some(lf - 1)
    };
    loop {
        let end = crlf_line(rest)?;
        let line = &rest[..end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // BWS (spaces and tabs only) is allowed before a `;`, and alone at
        // the end of the line: the grammar has no trailing BWS, but hyper
        // (and so a proxy in front of us) accepts it, and the differential
        // tests hold both hops to hyper's verdict (docs/behaviour.md).
        let after = &line[digits..];
        let ext = &after[after.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
        if digits == 0 || digits > 15 || !(after.is_empty() || ext.is_empty() || ext.first() == Some(&b';')) {
            return None;
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            loop {
                let lf = rest.iter().position(|&c| c == b'\n')?;
                let blank = lf == 0 || (lf == 1 && rest[0] == b'\r');
                rest = &rest[lf + 1..];
                if blank {
                    return Some((data, total - rest.len()));
                }
            }
        }
        if rest.len() < size.checked_add(2)? || &rest[size..size + 2] != b"\r\n" {
            return None;
        }
        data.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The SSE parser (`mcp::sse`): the events of a stream do not depend on
/// how it was split into reads, and an encoded message reads back whole.
pub fn sse(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    const MAX_EVENT: usize = 4096;
    let whole = sse::Parser::new(MAX_EVENT).feed(stream);
    let mut split = sse::Parser::new(MAX_EVENT);
    let mut events = Vec::new();
    let mut failed = false;
    for piece in stream.chunks(usize::from(ctl) + 1) {
        match split.feed(piece) {
            Ok(mut e) => events.append(&mut e),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    // The bound is checked per feed, so where it trips depends on the
    // split; where neither tripped, the events must be the same.
    if let (Ok(whole), false) = (whole, failed) {
        assert_eq!(whole, events, "events depend on how the stream was split");
    }
    // What the gateway writes to clients reads back as one event with the
    // message as its data (JSON has no raw CR; `encode` splits on LF only).
    if !stream.contains(&b'\r') {
        let encoded = sse::encode(stream);
        let mut p = sse::Parser::new(usize::MAX);
        let back = p.feed(&encoded).expect("no bound");
        assert_eq!(back.len(), 1, "one message encoded as {} events", back.len());
        assert_eq!(back[0].data, String::from_utf8_lossy(stream), "message changed by encode and parse");
    }
}

/// JSON-RPC inspection (`mcp::jsonrpc`): a body judged a message is JSON,
/// the id found is one JSON-RPC allows, and an error body built around it
/// is valid JSON carrying that id.
pub fn jsonrpc(data: &[u8]) {
    let verdict = jsonrpc::inspect(data);
    if verdict.is_ok() {
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
            "accepted a body that is not JSON"
        );
    }
    if let Ok(jsonrpc::Body::Message { id: Some(id), .. }) = &verdict {
        let id: serde_json::Value = serde_json::from_str(id.get()).expect("id is JSON");
        assert!(id.is_string() || id.is_number() || id.is_null(), "id {id} accepted");
    }
    let id = jsonrpc::request_id(data);
    let body = jsonrpc::error_body(id, -32600, "Invalid Request", None);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("error body is JSON");
    let want = id.map(|r| serde_json::from_str::<serde_json::Value>(r.get()).expect("id is JSON"));
    assert_eq!(v["id"], want.unwrap_or(serde_json::Value::Null), "error body carries another id");
}

/// Token parsing: the `Authorization` value to a token (`gateway::bearer`),
/// its shape and checksum (`token::parse`). A token accepted has the
/// documented shape; a one-byte change of a valid token is always refused
/// (CRC32 detects every single-byte error).
pub fn token(data: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(data)
        && let Some(raw) = crate::auth::bearer(&value)
    {
        check_token(raw);
    }
    if let Ok(raw) = std::str::from_utf8(data) {
        check_token(raw);
    }
    // A valid token with one byte of its random part or checksum replaced
    // as the input says (the checksum does not cover the prefix: `mwa_`
    // for `mwt_` is another kind's well-formed token, whose hash is unknown).
    let valid = format!("mwt_{}{}", "0".repeat(30), checksum_of_zeros());
    assert!(crate::token::parse(&valid).is_ok(), "the reference token is valid");
    if let [pos, byte, ..] = data {
        let mut bytes = valid.into_bytes();
        let pos = 4 + usize::from(*pos) % (bytes.len() - 4);
        if bytes[pos] != *byte {
            bytes[pos] = *byte;
            if let Ok(changed) = String::from_utf8(bytes) {
                assert!(crate::token::parse(&changed).is_err(), "one-byte change {changed:?} accepted");
            }
        }
    }
}

/// The checksum of 30 `0`s, computed as `token` does (it has no public
/// encoder); `token::parse` accepting the result checks the two agree.
fn checksum_of_zeros() -> &'static str {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        // CRC32 of the random part, base62 in six digits, as token/mod.rs.
        let mut crc = crc32fast::hash("0".repeat(30).as_bytes());
        let mut out = [b'0'; 6];
        for slot in out.iter_mut().rev() {
            *slot = alphabet[(crc % 62) as usize];
            crc /= 62;
        }
        String::from_utf8(out.to_vec()).expect("ASCII")
    })
}

fn check_token(raw: &str) {
    if let Ok(kind) = crate::token::parse(raw) {
        assert_eq!(raw.len(), crate::token::TOKEN_LEN);
        assert!(raw.starts_with(kind.prefix()));
        assert!(raw[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "token {raw:?} accepted");
        let _ = crate::token::hash(raw);
    }
}

/// The sealed-session decoder (`mcp::session`): nothing but what our key
/// sealed for this workspace opens; and a sealed state opens to itself,
/// under this workspace only.
pub fn session(data: &[u8]) {
    let sealer = session::Sealer::new(&[[7u8; 32], [9u8; 32]]).expect("keys");
    let text = String::from_utf8_lossy(data);
    // Forging needs the key: an input opens only if the fuzzer found one
    // of our own seals, which it cannot make.
    assert!(sealer.open("ws", &text).is_none(), "forged session id {text:?} opened");
    assert!(sealer.open("ws", &format!("pcs1.{text}")).is_none(), "forged session id opened");
    // Round trip of a state built from the input.
    let state = session::SessionState {
        token_id: text.chars().take(40).collect(),
        version: "2025-06-18".into(),
        // serde_json's own float parsing is not exact (no `float_roundtrip`
        // feature), so a float may come back one ulp off, and `Some(null)`
        // reads back as `None`: use only values that survive serde_json
        // alone; the decoder is what is checked here.
        client: serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .filter(|v| !v.is_null() && serde_json::from_str::<serde_json::Value>(&v.to_string()).ok().as_ref() == Some(v)),
        upstreams: vec![session::UpstreamSession {
            server: "a".into(),
            session: Some(text.chars().skip(40).take(200).collect()),
            version: None,
            ready: data.first().is_some_and(|b| b & 1 == 1),
        }],
    };
    let sealed = sealer.seal("ws", &state);
    if sealed.len() <= 8 * 1024 {
        assert_eq!(
            sealer.open("ws", &sealed).as_ref(),
            Some(&state),
            "a sealed state did not open to itself"
        );
    }
    assert!(sealer.open("other", &sealed).is_none(), "a session opened in another workspace");
    // The same id with one character changed is refused.
    if let [pos, ..] = data {
        let mut bytes = sealed.into_bytes();
        let i = 5 + usize::from(*pos) % (bytes.len() - 5);
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).expect("ASCII");
        assert!(sealer.open("ws", &changed).is_none(), "a changed session id opened");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs every file of `fuzz/<dir>/<target>/` through its target;
    /// returns the files that failed and how many ran.
    fn replay(dir: &str) -> (Vec<String>, usize) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
        let (mut failed, mut total) = (Vec::new(), 0);
        for (name, target) in super::TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failed.push(path.display().to_string());
                }
                total += 1;
            }
        }
        (failed, total)
    }

    /// Replays every committed corpus file (seeds and minimised finds)
    /// through its target: the fuzzers' past finds stay tests.
    #[test]
    fn committed_corpora_pass_their_targets() {
        for (name, _) in super::TARGETS {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
            assert!(
                std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()),
                "no corpus for {name}"
            );
        }
        let (failed, total) = replay("corpus");
        assert!(failed.is_empty(), "corpus files failing their target: {failed:?}");
        assert!(total >= super::TARGETS.len());
    }
}
