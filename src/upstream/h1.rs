//! The HTTP/1.1 client side of a pass-through hop, and nothing more: write
//! one request, read its response head, decode its body (length, chunked or
//! until close) as it arrives.
//!
//! Why not hyper's client: a hyper client connection is driven by a task of
//! its own, so every request crosses a channel to that task and every
//! response crosses back, two wake-ups and a second task poll per request.
//! Here the request's own task writes the request and reads the answer, and
//! the response body reads straight from the socket when the server polls
//! it; the profile of the old path is in docs/benchmarks.md.
//!
//! Scope, on purpose: HTTP/1.1 to an upstream we configured, no upgrades,
//! no `Expect: 100-continue`, no pipelining. What the upstream sends is
//! bounded: the response head ([`MAX_HEAD`], [`MAX_HEADERS`]), a chunk-size
//! line and the trailers.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted (hyper's default is 100 too).
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer before each read.
pub const READ_CHUNK: usize = 8 * 1024;
/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most trailer bytes accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// One connection to an upstream, idle or carrying one exchange.
pub struct Conn {
    pub io: TcpStream,
    /// Bytes read from `io` and not yet consumed.
    pub buf: BytesMut,
}

/// Where an exchange failed, which decides whether it may be retried on
/// another connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Stage {
    /// Writing the request: the upstream cannot have acted on a request it
    /// did not receive in full.
    Write,
    /// The connection ended after the request was written and before any
    /// byte of an answer: the upstream closed an idle connection, or failed
    /// while handling the request — the two cannot be told apart.
    NoAnswer,
    /// A broken or malformed answer.
    Answer,
}

#[derive(Debug)]
pub struct Failure {
    pub stage: Stage,
    pub detail: String,
}

impl Failure {
    fn new(stage: Stage, detail: impl Into<String>) -> Self {
        Failure {
            stage,
            detail: detail.into(),
        }
    }
}

/// A response head and how to read what follows it.
pub struct Head {
    pub parts: response::Parts,
    pub decoder: Decoder,
    /// Whether the connection may carry another request once the body is
    /// read to its end.
    pub reusable: bool,
}

/// The request in wire form: request line, headers (hop-by-hop and framing
/// headers of the caller dropped, `Host` added unless given, a
/// `Content-Length` for the body), blank line, body. Written with one
/// system call, and kept for a retry. Built straight from the caller's
/// header pairs, so a forwarded request needs no header map of its own.
pub fn encode<'h>(
    method: &Method,
    path: &str,
    host: &HeaderValue,
    headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for (name, value) in headers {
        // This hop's framing and connection handling are ours to say.
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "upgrade"
        ) {
            continue;
        }
        has_host |= *name == HOST;
        header_line(&mut out, name, value);
    }
    if !has_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: ");
        decimal(body.len() as u64, &mut out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `name: value` and CRLF. `HeaderName`s are valid tokens and `HeaderValue`s
/// hold no CR or LF, so nothing written here can split a head.
pub fn header_line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal digits (`write!` goes through the formatting machinery:
/// a third of this function's cost per request).
pub fn decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Conn { io, buf: BytesMut::new() }
    }

    /// Whether an idle connection can carry a request: false once the
    /// upstream closed it (or, wrongly, sent something). Costs no system call
    /// unless the runtime saw the socket become readable since the last read
    /// (tokio clears readiness on a short read, which ends every response).
    pub fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes `wire` (from [`encode`]) and reads the response head,
    /// skipping interim (1xx) responses.
    pub async fn round_trip(&mut self, wire: &[u8], head_request: bool) -> Result<Head, Failure> {
        self.io
            .write_all(wire)
            .await
            .map_err(|e| Failure::new(Stage::Write, format!("sending the request: {e}")))?;
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                match self.parse_head(head_request)? {
                    Parsed::Head(head) => return Ok(head),
                    Parsed::Interim => continue,
                    Parsed::Partial => {}
                }
            }
            self.buf.reserve(READ_CHUNK);
            let stage = if answered { Stage::Answer } else { Stage::NoAnswer };
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(Failure::new(stage, "connection closed before the response head")),
                Ok(_) => {}
                Err(e) => return Err(Failure::new(stage, format!("reading the response: {e}"))),
            }
        }
    }

    /// Parses a complete head at the start of the buffer and consumes it.
    pub(crate) fn parse_head(&mut self, head_request: bool) -> Result<Parsed, Failure> {
        let bad = |detail: String| Failure::new(Stage::Answer, detail);
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, &self.buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                return Err(bad(format!("response head larger than {MAX_HEAD} bytes")));
            }
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(e) => return Err(bad(format!("invalid response head: {e}"))),
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| bad(format!("invalid status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(bad(
                    "the upstream switched protocols, which a pass-through hop does not carry".into()
                ));
            }
            self.buf.advance(len);
            return Ok(Parsed::Interim);
        }
        let http11 = resp.version == Some(1);
        // Names and where each value lies in the head: the values become
        // slices of the received bytes below, not copies.
        let mut fields = Vec::with_capacity(resp.headers.len());
        let base = self.buf.as_ptr() as usize;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut other_coding = false;
        let mut close = !http11;
        for h in resp.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad(format!("invalid header name {:?}", h.name)))?;
            if name == CONTENT_LENGTH {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| bad("invalid content-length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting content-length headers".into()));
                }
                length = Some(n);
            } else if name == TRANSFER_ENCODING {
                // Only the last coding decides the framing (RFC 9112 §6.3).
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                other_coding |= !chunked;
                // Framing of this hop only: consumed here, not passed on.
                continue;
            } else if name == CONNECTION {
                close |= h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                continue;
            } else if name.as_str() == "keep-alive" {
                continue;
            }
            let start = h.value.as_ptr() as usize - base;
            fields.push((name, start, start + h.value.len()));
        }
        let head = self.buf.split_to(len).freeze();
        // Room for what the gateway adds (`x-request-id`, a limiter
        // header): a full map would be reallocated and rehashed for it.
        let mut headers = HeaderMap::with_capacity(fields.len() + 2);
        for (name, start, end) in fields {
            let value =
                HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| bad(format!("invalid value of header {name}")))?;
            headers.append(name, value);
        }
        let no_body = head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let decoder = if no_body {
            Decoder::Done
        } else if chunked && !other_coding {
            Decoder::Chunked(Chunk::Size)
        } else if other_coding {
            Decoder::UntilClose
        } else if let Some(n) = length {
            if n == 0 { Decoder::Done } else { Decoder::Length(n) }
        } else {
            Decoder::UntilClose
        };
        // A message with both a length and a coding may be an attempt to
        // smuggle a second response: use it, then close (RFC 9112 §6.3).
        let reusable = !close && !matches!(decoder, Decoder::UntilClose) && !(length.is_some() && (chunked || other_coding));
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
        parts.headers = headers;
        Ok(Parsed::Head(Head { parts, decoder, reusable }))
    }
}

pub(crate) enum Parsed {
    Head(Head),
    /// A 1xx response was consumed; the final one follows.
    Interim,
    /// More bytes are needed; the buffer is untouched.
    Partial,
}

/// Decodes a response body from the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    UntilClose,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines (this many bytes so far) up to a
    /// blank line.
    Trailers(usize),
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Decoder {
    /// The next piece of body in `buf` (consumed from it), or that more
    /// bytes must be read first, or that the body has ended.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match self {
                Decoder::Done => return Ok(Step::Done),
                Decoder::UntilClose if buf.is_empty() => return Ok(Step::NeedMore),
                Decoder::UntilClose => return Ok(Step::Data(buf.split().freeze())),
                Decoder::Length(_) | Decoder::Chunked(Chunk::Data(_)) if buf.is_empty() => return Ok(Step::NeedMore),
                Decoder::Length(rest) => {
                    let data = take(buf, rest);
                    if *rest == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Step::Data(data));
                }
                Decoder::Chunked(chunk) => match chunk {
                    Chunk::Data(rest) => {
                        let data = take(buf, rest);
                        if *rest == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Step::Data(data));
                    }
                    Chunk::Size => {
                        let Some(line) = line(buf, MAX_CHUNK_LINE)? else {
                            return Ok(Step::NeedMore);
                        };
                        let size = chunk_size(&line)?;
                        *chunk = if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) };
                    }
                    Chunk::DataEnd => {
                        let Some(line) = line(buf, 2)? else {
                            return Ok(Step::NeedMore);
                        };
                        if !line.is_empty() {
                            return Err("chunk data longer than its size");
                        }
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers(seen) => {
                        let Some(line) = line(buf, MAX_TRAILERS.saturating_sub(*seen))? else {
                            return Ok(Step::NeedMore);
                        };
                        if line.is_empty() {
                            *self = Decoder::Done;
                        } else {
                            *seen += line.len() + 2;
                        }
                    }
                },
            }
        }
    }

    /// The connection reached end of file: fine only where that is how the
    /// body ends.
    pub fn eof(&mut self) -> Result<(), &'static str> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err("the upstream closed the connection before the response body ended"),
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Bytes still to come, where known.
    pub fn exact_rest(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

/// Up to `rest` bytes from the front of a non-empty `buf`, without copying.
fn take(buf: &mut BytesMut, rest: &mut u64) -> Bytes {
    let n = usize::try_from(*rest).unwrap_or(usize::MAX).min(buf.len());
    *rest -= n as u64;
    buf.split_to(n).freeze()
}

/// One line (CRLF or bare LF ended, ending removed) from the front of `buf`,
/// or `None` until it is complete; longer than `max` is an error.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, &'static str> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > max.saturating_add(1) {
            Err("chunk framing line too long")
        } else {
            Ok(None)
        };
    };
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line.freeze()))
}

/// The size in a chunk-size line: hex digits, then optional extensions.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
        return Err("invalid chunk size");
    }
    if digits > 15 {
        return Err("chunk size too large");
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| "invalid chunk size")?;
    u64::from_str_radix(hex, 16).map_err(|_| "invalid chunk size")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a decoder `step` bytes at a time, as reads would
    /// deliver it, and collects the body.
    fn decode_in_steps(mut d: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => body.extend_from_slice(&b),
                Step::Done => return Ok((body, buf.is_empty())),
                Step::NeedMore if fed == wire.len() => {
                    d.eof()?;
                    return Ok((body, true));
                }
                Step::NeedMore => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, clean) = decode_in_steps(Decoder::Chunked(Chunk::Size), wire, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(clean);
        }
        // Bare LF line endings are accepted, as hyper does.
        let (body, _) = decode_in_steps(Decoder::Chunked(Chunk::Size), b"3\nabc\n0\n\n", 1).unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn bad_chunked_framing_is_an_error_not_a_hang() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloX\r\n",
            b"ffffffffffffffffff\r\n",
            b"-1\r\n",
            b"3 x\r\nabc\r\n",
        ] {
            assert!(decode_in_steps(Decoder::Chunked(Chunk::Size), wire, 1).is_err(), "{wire:?}");
        }
        // A size line without end is bounded.
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_in_steps(Decoder::Chunked(Chunk::Size), &long, 512).is_err());
        // So are trailers.
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS {
            trailers.extend_from_slice(b"x: y\r\n");
        }
        assert!(decode_in_steps(Decoder::Chunked(Chunk::Size), &trailers, 4096).is_err());
        // Ending early is an error too.
        assert!(decode_in_steps(Decoder::Chunked(Chunk::Size), b"5\r\nhel", 2).is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (body, clean) = decode_in_steps(Decoder::Length(5), b"hello", 2).unwrap();
        assert_eq!(body, b"hello");
        assert!(clean);
        // Bytes past the length are left in the buffer (the caller then
        // does not reuse the connection).
        let (body, clean) = decode_in_steps(Decoder::Length(5), b"helloEXTRA", 10).unwrap();
        assert_eq!(body, b"hello");
        assert!(!clean);
        assert!(decode_in_steps(Decoder::Length(5), b"hel", 1).is_err());
        let (body, _) = decode_in_steps(Decoder::UntilClose, b"all of it", 4).unwrap();
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn requests_carry_our_framing_and_host_only() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("content-length", HeaderValue::from_static("999"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("connection", HeaderValue::from_static("close"));
        h.append("mcp-param-a", HeaderValue::from_static("1"));
        let wire = encode(&Method::POST, "/mcp?x=1", &HeaderValue::from_static("up:8080"), h.iter(), b"{}");
        let text = String::from_utf8(wire).unwrap();
        assert_eq!(
            text,
            "POST /mcp?x=1 HTTP/1.1\r\ncontent-type: application/json\r\nmcp-param-a: 1\r\nhost: up:8080\r\ncontent-length: 2\r\n\r\n{}"
        );
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let wire = encode(&Method::GET, "/", &HeaderValue::from_static("up"), HeaderMap::new().iter(), b"");
        assert_eq!(wire, b"GET / HTTP/1.1\r\nhost: up\r\n\r\n");
        // A configured Host (virtual hosting behind the upstream) wins.
        h.insert("host", HeaderValue::from_static("virtual"));
        let wire = encode(&Method::DELETE, "/", &HeaderValue::from_static("up"), h.iter(), b"");
        let text = String::from_utf8(wire).unwrap();
        assert!(text.contains("host: virtual\r\n") && !text.contains("host: up"), "{text}");
    }
}
