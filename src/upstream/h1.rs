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

/// A `Content-Length` value: ASCII digits only, at least one, no sign, no
/// whitespace, no list (RFC 9110 §8.6: `1*DIGIT`), as hyper reads it. Both
/// hops use this one reading, so the gateway never frames a message
/// differently from hyper on the same listener, nor from a proxy in front.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
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
    /// upstream closed it, or sent anything unasked (a late or extra
    /// response, which would otherwise be read as the next request's
    /// answer). One non-blocking `MSG_PEEK` on the socket itself: the
    /// runtime's readiness flag is not enough, since bytes that arrived
    /// after the last read are only flagged once the reactor has run.
    /// What remains is the race after this check: bytes the upstream sends
    /// between the peek and our write are still read as the answer.
    pub fn is_usable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        matches!(socket2::SockRef::from(&self.io).peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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
                match parse_head(&mut self.buf, head_request)? {
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
}

/// Parses a complete response head at the start of `buf` and consumes it
/// (the head decoder of the upstream hop; also the differential tests' and
/// fuzzers' entry point).
pub(crate) fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, Failure> {
    let bad = |detail: String| Failure::new(Stage::Answer, detail);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
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
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let http11 = resp.version == Some(1);
    // Names and where each value lies in the head: the values become
    // slices of the received bytes below, not copies.
    let mut fields = Vec::with_capacity(resp.headers.len());
    let base = buf.as_ptr() as usize;
    let mut length: Option<u64> = None;
    // Transfer codings seen, over every `Transfer-Encoding` line.
    let mut codings = 0usize;
    let mut chunked = false;
    let mut close = !http11;
    // Where the `Connection` values that name other headers lie (rare:
    // allocated only when one does).
    let mut named: Vec<(usize, usize)> = Vec::new();
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad(format!("invalid header name {:?}", h.name)))?;
        let start = h.value.as_ptr() as usize - base;
        if name == CONTENT_LENGTH {
            let n = content_length(h.value).ok_or_else(|| bad("invalid content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting content-length headers".into()));
            }
            length = Some(n);
        } else if name == TRANSFER_ENCODING {
            // HTTP/1.0 has no transfer codings: the framing is faulty
            // (RFC 9112 §6.1), as hyper also says.
            if !http11 {
                return Err(bad("transfer-encoding in an HTTP/1.0 response".into()));
            }
            // Only `chunked`, once and last, is a framing we can pass on
            // decoded: another coding (`gzip`) would reach the client
            // still encoded but no longer labelled (RFC 9112 §6.1).
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
                codings += 1;
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
            // Framing of this hop only: consumed here, not passed on.
            continue;
        } else if name == CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    named.push((start, start + h.value.len()));
                    break;
                }
            }
            continue;
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        fields.push((name, start, start + h.value.len()));
    }
    if codings > 0 && !(chunked && codings == 1) {
        return Err(bad("unsupported transfer coding from the upstream".into()));
    }
    let no_body = head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let decoder = if no_body {
        Decoder::Done
    } else if chunked {
        Decoder::Chunked(Chunk::Size)
    } else if let Some(n) = length {
        if n == 0 { Decoder::Done } else { Decoder::Length(n) }
    } else {
        Decoder::UntilClose
    };
    // A length beside a coding does not describe this body: it would
    // make the next hop cut the body short (RFC 9112 §6.3); the server
    // side frames it as it sends it.
    if chunked && length.is_some() {
        fields.retain(|(name, ..)| *name != CONTENT_LENGTH);
    }
    let head = buf.split_to(len).freeze();
    // Room for what the gateway adds (`x-request-id`, a limiter
    // header): a full map would be reallocated and rehashed for it.
    let mut headers = HeaderMap::with_capacity(fields.len() + 2);
    for (name, start, end) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| bad(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    // Headers named in `Connection` describe this hop only (RFC 9110
    // §7.6.1): not passed on.
    for (start, end) in named {
        for token in head[start..end].split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if let Ok(token) = std::str::from_utf8(token)
                && !token.is_empty()
            {
                headers.remove(token);
            }
        }
    }
    // A message with both a length and a coding may be an attempt to
    // smuggle a second response: use it, then close (RFC 9112 §6.3).
    let reusable = !(close || matches!(decoder, Decoder::UntilClose) || (length.is_some() && chunked));
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    parts.headers = headers;
    Ok(Parsed::Head(Head { parts, decoder, reusable }))
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
                        } else if !is_field_line(&line) {
                            // Dropped, but read as hyper reads them: a
                            // malformed trailer (a fold, no name) breaks
                            // the body there too.
                            return Err("invalid trailer field");
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

/// One line (ended by CRLF, which is removed) from the front of `buf`, or
/// `None` until it is complete; longer than `max` is an error, and so is a
/// CR or LF anywhere but in the final CRLF: chunk framing is read as hyper
/// reads it, strictly, so a stray CR cannot be read one way here and
/// another way by the next hop.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, &'static str> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > max.saturating_add(1) {
            Err("chunk framing line too long")
        } else {
            Ok(None)
        };
    };
    if end == 0 || window[end - 1] != b'\r' {
        return Err("chunk framing line not ended by CRLF");
    }
    if window[..end - 1].contains(&b'\r') {
        return Err("stray CR in a chunk framing line");
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line.freeze()))
}

/// The size in a chunk-size line (RFC 9112 §7.1): hex digits, then optional
/// extensions `BWS ; BWS name [BWS = BWS value]` (name a token, value a
/// token or quoted string), which are checked and ignored. Trailing spaces
/// or tabs are allowed, as hyper allows them.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("invalid chunk size");
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(v))
    });
    let size = size.ok_or("chunk size too large")?;
    let mut rest = &line[digits..];
    let bws = |r: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *r {
            *r = tail;
        }
    };
    let token = |r: &mut &[u8]| {
        let n = r.iter().take_while(|&&b| is_tchar(b)).count();
        *r = &r[n..];
        n > 0
    };
    loop {
        bws(&mut rest);
        let Some((&b';', tail)) = rest.split_first() else {
            return if rest.is_empty() { Ok(size) } else { Err("invalid chunk size") };
        };
        rest = tail;
        bws(&mut rest);
        if !token(&mut rest) {
            return Err("invalid chunk extension");
        }
        let mut after = rest;
        bws(&mut after);
        if let Some((&b'=', tail)) = after.split_first() {
            rest = tail;
            bws(&mut rest);
            if rest.first() == Some(&b'"') {
                rest = quoted_string(rest).ok_or("invalid chunk extension")?;
            } else if !token(&mut rest) {
                return Err("invalid chunk extension");
            }
        }
    }
}

/// `name: value` as a field line (RFC 9112 §5): a token, a colon, then
/// visible characters, blanks and obs-text only.
fn is_field_line(line: &[u8]) -> bool {
    let name = line.iter().take_while(|&&b| is_tchar(b)).count();
    name > 0
        && line.get(name) == Some(&b':')
        && line[name + 1..]
            .iter()
            .all(|&b| b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80)
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What follows a quoted string at the start of `s` (RFC 9110 §5.6.4).
fn quoted_string(s: &[u8]) -> Option<&[u8]> {
    let mut i = 1;
    loop {
        match *s.get(i)? {
            b'"' => return Some(&s[i + 1..]),
            b'\\' => {
                let q = *s.get(i + 1)?;
                if !(q == b'\t' || q == b' ' || q.is_ascii_graphic() || q >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod differential;

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
        // Extensions of the RFC's grammar, and trailing blanks, are fine.
        let wire = b"3 ; a ; b = c ; q=\"x\\\"y;z\"\t\r\nabc\r\n0;last\r\n\r\n";
        let (body, clean) = decode_in_steps(Decoder::Chunked(Chunk::Size), wire, 1).unwrap();
        assert_eq!((body.as_slice(), clean), (&b"abc"[..], true));
    }

    #[test]
    fn bad_chunked_framing_is_an_error_not_a_hang() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloX\r\n",
            b"ffffffffffffffffff\r\n",
            b"-1\r\n",
            b"3 x\r\nabc\r\n",
            // Issue 11: a stray CR, bare LF endings, malformed extensions.
            b"55 \r\r\n",
            b"3\nabc\n0\n\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nx: y\n\r\n",
            b"3\rx\r\nabc\r\n",
            b"3;\r\nabc\r\n",
            b"3;=x\r\nabc\r\n",
            b"3;a=\r\nabc\r\n",
            b"3;a=\"open\r\nabc\r\n",
            b"3;a b\r\nabc\r\n",
            b"3;a=b c\r\nabc\r\n",
            b"+3\r\nabc\r\n",
            b"0x3\r\nabc\r\n",
            b"10000000000000000\r\n",
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
    fn content_length_is_plain_digits_only() {
        for (v, n) in [
            ("0", Some(0)),
            ("5", Some(5)),
            ("007", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
        ] {
            assert_eq!(content_length(v.as_bytes()), n, "{v:?}");
        }
        for v in [
            "",
            "+5",
            "-5",
            " 5",
            "5 ",
            "1 0",
            "5,5",
            "0x5",
            "5.0",
            "18446744073709551616",
            "\u{0665}",
        ] {
            assert_eq!(content_length(v.as_bytes()), None, "{v:?}");
        }
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
