//! The data plane's HTTP/1.1 fast path: the one request shape MCP clients
//! send all day — `POST /ws/<slug>`, HTTP/1.1, a `Content-Length` body —
//! read, handed to the gateway and answered without hyper's general server.
//!
//! Why: after the upstream hop became our own (`upstream::h1`), hyper's
//! server was the largest cost per proxied request (its dispatcher, body
//! channel, header encoding; a third of all instructions,
//! docs/benchmarks.md). A request of this shape needs little of that.
//!
//! Anything else on the connection — another method or path, a chunked or
//! oversized body, `Expect`, `Upgrade`, a `Connection` option, HTTP/1.0, an
//! HTTP/2 preface, a `Content-Length` that is not plain digits, a malformed
//! or too large head — hands the connection, with every byte read so far,
//! to hyper for the rest of its life ([`Rewind`]): hyper then answers
//! exactly as it would have from the start (400, 413, 431, ...). So the
//! fast path has no framing errors of its own to answer.
//!
//! What it does accept goes to the gateway's own handler with a body that
//! is read from the connection only when the pipeline asks for it
//! ([`FastBody`]): the token, workspace, `Origin`, method and rate limit
//! are checked from the head first, so a refused client costs one head
//! read, and the gateway's refusal (401, 403, 405, 429; 408 or 400 for a
//! body too slow or cut short) is written here. When such an answer leaves
//! body bytes not yet received, it says `connection: close` and the
//! connection ends (after a short, bounded drain so the answer is not lost
//! to a reset); a body already received in full is skipped and the
//! connection carries on.
//!
//! Bounds: the head as hyper's (64 KiB), the body `server.max_body_bytes`
//! (larger declared lengths go to hyper, which answers 413) and read as it
//! arrives, one read's room at a time (never `Content-Length` up front), the
//! header-read timeout from the moment the connection waits for a request
//! (as hyper's), the gateway's body-read timeout for the body.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::error::Body;
use crate::gateway::{Gateway, RequestBody};

/// Largest request head (hyper's `max_buf_size` on this listener).
const MAX_HEAD: usize = 64 * 1024;
/// Most request headers (hyper's default).
const MAX_HEADERS: usize = 100;
const READ_CHUNK: usize = 8 * 1024;
/// Response bytes gathered before a write; a body's pieces are otherwise
/// written as they come.
const WRITE_GATHER: usize = 64 * 1024;

/// What the fast path needs to serve a request.
#[derive(Clone)]
pub struct FastPath {
    pub gateway: Arc<Gateway>,
    pub max_body: u64,
    pub body_read_timeout: Duration,
}

/// A request head of the fast path's shape, parsed.
pub(crate) struct Head {
    /// Bytes of the head, blank line included.
    pub(crate) len: usize,
    pub(crate) body_len: usize,
    pub(crate) uri: Uri,
    /// Each header's name and where its value lies in the head: the values
    /// become slices of the received bytes, not copies.
    pub(crate) fields: Vec<(HeaderName, usize, usize)>,
    /// The client asked to close after this exchange.
    pub(crate) close: bool,
}

// Boxing `Head` would cost an allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Parsed {
    Fast(Head),
    Partial,
    /// Not the fast path's shape (or not valid): hyper's to answer.
    Other,
}

/// Serves requests on `io` while they have the fast path's shape. Returns
/// the connection and the bytes read from it but not served when hyper
/// must take over, or `None` once the connection is done (closed by the
/// client, idle past the header timeout, an error, or shutdown).
pub async fn serve(
    mut io: TcpStream,
    fast: &FastPath,
    header_timeout: Duration,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, Bytes)> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let peer = io.peer_addr().ok().map(|a| a.ip());
    // One timer and one shutdown waiter per connection, re-armed per
    // request: creating and dropping them for every request cost more than
    // the rest of this loop.
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let timer = tokio::time::sleep(header_timeout);
    tokio::pin!(timer);
    loop {
        // The head, within the header-read timeout (which, as hyper's,
        // also bounds the wait for a keep-alive connection's next request).
        timer.as_mut().reset(tokio::time::Instant::now() + header_timeout);
        let head = loop {
            if !buf.is_empty() {
                match parse_head(&buf, fast.max_body) {
                    Parsed::Fast(head) => break head,
                    Parsed::Partial if buf.len() < MAX_HEAD => {}
                    _ => return handoff(io, buf, shutdown),
                }
            }
            buf.reserve(READ_CHUNK);
            let read = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                // Too slow: hyper closes too.
                _ = &mut timer => return None,
                // Idle at shutdown: close; a request under way is finished.
                _ = &mut stop, if buf.is_empty() => return None,
            };
            match read {
                Ok(n) if n > 0 => {}
                // Closed or failed.
                _ => return None,
            }
        };
        // The head's bytes become the header values (slices, not copies);
        // the body stays in `buf`, or on the socket, until the gateway
        // reads it — after authentication, workspace, `Origin`, method and
        // rate limit, so a refused client costs one head read (as on
        // hyper's path) and the buffer only ever holds bytes received.
        let mut close = head.close;
        let message = buf.split_to(head.len).freeze();
        let mut headers = HeaderMap::with_capacity(head.fields.len());
        for (name, start, end) in head.fields {
            match HeaderValue::from_maybe_shared(message.slice(start..end)) {
                Ok(value) => headers.append(name, value),
                // Cannot happen (see `parse_head`); if it did, nothing was
                // answered yet and closing is safe.
                Err(_) => return None,
            };
        }
        let mut rest = head.body_len;
        let mut req = Request::new(FastBody {
            io: &mut io,
            buf: &mut buf,
            rest: &mut rest,
        });
        *req.method_mut() = Method::POST;
        *req.uri_mut() = head.uri;
        *req.headers_mut() = headers;
        // Boxed: the request's future is a few KB, and held inline it was
        // copied several times per request (memcpy was 6% of the
        // instructions); one allocation costs less (benches/callgrind.sh).
        let resp = match Box::pin(Arc::clone(&fast.gateway).handle_from(req, peer)).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        // A body the gateway did not read in full (a refusal answered from
        // the head, a body too slow or cut short): skipped if it is all
        // here already, so the next pipelined request parses where it
        // starts; otherwise the connection ends after this answer.
        let still_to_come = rest > buf.len();
        if still_to_come {
            close = true;
        } else {
            buf.advance(rest);
        }
        if write_response(&mut io, resp, close).await.is_err() {
            return None;
        }
        if still_to_come {
            linger(io, rest).await;
            return None;
        }
        if close || shutdown.is_cancelled() {
            return None;
        }
    }
}

/// The body of a fast-path request: what came with the head, then the
/// socket, read only as the gateway polls it. Never reserves room for more
/// than one read: the announced length is a claim, not bytes received.
struct FastBody<'a> {
    io: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    /// Body bytes not yet handed out; the serve loop reads it afterwards.
    rest: &'a mut usize,
}

impl http_body::Body for FastBody<'_> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        if *this.rest == 0 {
            return Poll::Ready(None);
        }
        if this.buf.is_empty() {
            this.buf.reserve(READ_CHUNK.min(*this.rest));
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *this.io), cx, this.buf)) {
                Ok(0) => return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        let n = (*this.rest).min(this.buf.len());
        *this.rest -= n;
        Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        *self.rest == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(*self.rest as u64)
    }
}

impl RequestBody for FastBody<'_> {
    fn arrived(&self) -> bool {
        self.buf.len() >= *self.rest
    }
    fn take_arrived(&mut self) -> Option<Bytes> {
        if !self.arrived() {
            return None;
        }
        let n = std::mem::take(&mut *self.rest);
        Some(self.buf.split_to(n).freeze())
    }
}

/// Most body bytes read and dropped after a refusal, and for how long: the
/// client gets its answer and our FIN before a close with unread bytes
/// would reset the connection (and could destroy the answer in flight),
/// without letting a refused client occupy the connection for long.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);

async fn linger(mut io: TcpStream, rest: usize) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut left = rest.min(LINGER_BYTES);
    let mut sink = [0u8; 4096];
    let drain = async {
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Hands the connection to hyper, unless shutdown has begun (a connection
/// handed over now would not hear of it; the client retries elsewhere, as
/// after any idle connection closed at shutdown).
fn handoff(io: TcpStream, buf: BytesMut, shutdown: &CancellationToken) -> Option<(TcpStream, Bytes)> {
    (!shutdown.is_cancelled()).then(|| (io, buf.freeze()))
}

/// Parses a request head at the start of `buf` and decides whether it has
/// the fast path's shape (the stable entry point of the differential tests
/// and fuzzers).
pub(crate) fn parse_head(buf: &[u8], max_body: u64) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, &mut slots) {
        // A head past hyper's limit is hyper's (431), however the reads fell.
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Parsed::Other,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some("POST"), Some(1), Some(path)) = (req.method, req.version, req.path) else {
        return Parsed::Other;
    };
    if !path.starts_with("/ws/") {
        return Parsed::Other;
    }
    let Ok(uri) = Uri::try_from(path) else {
        return Parsed::Other;
    };
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut body_len = None;
    let mut close = false;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Other;
        };
        // httparse admits exactly the bytes `HeaderValue` does (visible
        // ASCII, space, tab, obs-text), so the value is checked already.
        let start = h.value.as_ptr() as usize - buf.as_ptr() as usize;
        if name == CONTENT_LENGTH {
            // Digits only: `+5`, ` 5 `, `5,5` are hyper's (which answers
            // 400 or reads a list as hyper does).
            let n = crate::upstream::content_length(h.value);
            match (n, body_len) {
                // One valid length, not above the limit (hyper answers
                // what is above it, and the gateway says 413).
                (Some(n), None) if n <= max_body => body_len = Some(n),
                _ => return Parsed::Other,
            }
        } else if name == CONNECTION {
            // `keep-alive` (what Node's fetch sends) and `close` are fine;
            // any other option (`upgrade`, hop-by-hop names) is hyper's.
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return Parsed::Other;
                }
            }
        } else if name == TRANSFER_ENCODING || name == EXPECT || name == UPGRADE {
            // Framing, interim answers and connection options are hyper's.
            return Parsed::Other;
        }
        fields.push((name, start, start + h.value.len()));
    }
    let Some(body_len) = body_len.and_then(|n| usize::try_from(n).ok()) else {
        return Parsed::Other;
    };
    Parsed::Fast(Head {
        len,
        body_len,
        uri,
        fields,
        close,
    })
}

/// Writes `resp`: the head, then the body as it comes — with its length
/// when the body knows it, chunked otherwise (event streams). An error
/// (the client went away, a body that broke or lied about its length)
/// ends the connection.
async fn write_response<W: AsyncWrite + Unpin>(io: &mut W, resp: Response<Body>, close: bool) -> io::Result<()> {
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // The framing of this connection is ours to say.
        if *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING || *name == CONNECTION {
            continue;
        }
        crate::upstream::header_line(&mut out, name, value);
    }
    if !parts.headers.contains_key(DATE) {
        // As hyper does for every answer.
        out.extend_from_slice(b"date: ");
        http_date(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED {
        out.extend_from_slice(b"\r\n");
        return io.write_all(&out).await;
    }
    let length = body.size_hint().exact();
    match length {
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            crate::upstream::decimal(n, &mut out);
            out.extend_from_slice(b"\r\n\r\n");
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            // The head goes now: an event stream's client is waiting.
            io.write_all(&out).await?;
            out.clear();
        }
    }
    let mut sent: u64 = 0;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if length.is_some_and(|n| sent > n) {
            return Err(io::Error::other("response body longer than its length"));
        }
        if length.is_none() {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= WRITE_GATHER {
            out.extend_from_slice(&data);
        } else {
            io.write_all(&out).await?;
            out.clear();
            io.write_all(&data).await?;
        }
        if length.is_none() {
            out.extend_from_slice(b"\r\n");
        }
        // More to come later: what is gathered goes now (streaming), unless
        // the body is complete, in which case it goes in one write below.
        if !body.is_end_stream() {
            io.write_all(&out).await?;
            out.clear();
        }
    }
    if length.is_some_and(|n| sent != n) {
        return Err(io::Error::other("response body shorter than its length"));
    }
    if length.is_none() {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    Ok(())
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second.
    static DATE_CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

/// A connection with bytes already read from it put back in front, for
/// hyper to read first.
pub struct Rewind {
    prefix: Bytes,
    io: TcpStream,
}

impl Rewind {
    pub fn new(io: TcpStream, prefix: Bytes) -> Self {
        Rewind { prefix, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(req: &str) -> &'static str {
        match parse_head(req.as_bytes(), 1000) {
            Parsed::Fast(h) if h.close => "fast, close",
            Parsed::Fast(_) => "fast",
            Parsed::Partial => "partial",
            Parsed::Other => "hyper",
        }
    }

    #[test]
    fn only_the_plain_post_shape_takes_the_fast_path() {
        let post = "POST /ws/demo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n";
        assert_eq!(shape(&format!("{post}\r\n{{}}")), "fast");
        assert_eq!(shape(&format!("{post}Connection: keep-alive\r\n\r\n")), "fast");
        assert_eq!(shape(&format!("{post}Connection: Close\r\n\r\n")), "fast, close");
        assert_eq!(shape(post), "partial");
        for (why, req) in [
            ("chunked", "POST /ws/demo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()),
            ("no length", "POST /ws/demo HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()),
            ("two lengths", format!("{post}Content-Length: 2\r\n\r\n")),
            ("bad length", "POST /ws/demo HTTP/1.1\r\nContent-Length: 2x\r\n\r\n".to_owned()),
            // Not plain digits: hyper answers 400 (issue 11).
            ("plus sign", "POST /ws/demo HTTP/1.1\r\nContent-Length: +2\r\n\r\n".to_owned()),
            ("minus sign", "POST /ws/demo HTTP/1.1\r\nContent-Length: -0\r\n\r\n".to_owned()),
            ("inner space", "POST /ws/demo HTTP/1.1\r\nContent-Length: 1 0\r\n\r\n".to_owned()),
            ("empty length", "POST /ws/demo HTTP/1.1\r\nContent-Length: \r\n\r\n".to_owned()),
            ("listed length", "POST /ws/demo HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n".to_owned()),
            ("over max_body", "POST /ws/demo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n".to_owned()),
            ("expect", format!("{post}Expect: 100-continue\r\n\r\n")),
            ("upgrade", format!("{post}Connection: upgrade\r\nUpgrade: h2c\r\n\r\n")),
            ("other option", format!("{post}Connection: keep-alive, x-hop\r\n\r\n")),
            ("GET", "GET /ws/demo HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()),
            ("DELETE", "DELETE /ws/demo HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_owned()),
            ("admin path", "POST /v1/tokens HTTP/1.1\r\nContent-Length: 2\r\n\r\n".to_owned()),
            ("HTTP/1.0", "POST /ws/demo HTTP/1.0\r\nContent-Length: 2\r\n\r\n".to_owned()),
            ("h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned()),
            ("garbage", "\x01\x02 nonsense\r\n\r\n".to_owned()),
        ] {
            assert_eq!(shape(&req), "hyper", "{why}");
        }
    }

    async fn wire(resp: Response<Body>, close: bool) -> String {
        let mut out = Vec::new();
        write_response(&mut out, resp, close).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn answers_carry_their_length_or_are_chunked_and_keep_no_hop_headers() {
        let mut resp = Response::new(crate::error::full("{}"));
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        resp.headers_mut().insert("transfer-encoding", HeaderValue::from_static("chunked"));
        resp.headers_mut().insert("content-length", HeaderValue::from_static("99"));
        let text = wire(resp, false).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("GMT\r\ncontent-length: 2\r\n\r\n{}"), "{text}");
        assert!(!text.contains("chunked") && !text.contains("99"), "{text}");

        // A body of unknown length (an event stream) is chunked, piece by piece.
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
            tx.send_data(Bytes::from_static(b"data: 22\n\n")).await.unwrap();
        });
        let mut resp = Response::new(body.boxed());
        *resp.status_mut() = StatusCode::ACCEPTED;
        let text = wire(resp, true).await;
        assert!(text.starts_with("HTTP/1.1 202 Accepted\r\n"), "{text}");
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n0\r\n\r\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_that_breaks_or_lies_about_its_length_is_an_error() {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"part")).await.unwrap();
            tx.abort(std::io::Error::other("upstream broke"));
        });
        let mut out = Vec::new();
        assert!(write_response(&mut out, Response::new(body.boxed()), false).await.is_err());

        // Declares 10 bytes, yields 3.
        let short = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
            Bytes::from_static(b"abc"),
        ))]));
        struct Lying<B>(B);
        impl<B: http_body::Body + Unpin> http_body::Body for Lying<B> {
            type Data = B::Data;
            type Error = B::Error;
            fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
                Pin::new(&mut self.0).poll_frame(cx)
            }
            fn size_hint(&self) -> http_body::SizeHint {
                http_body::SizeHint::with_exact(10)
            }
        }
        let mut out = Vec::new();
        assert!(write_response(&mut out, Response::new(Lying(short).boxed()), false).await.is_err());
    }

    #[tokio::test]
    async fn a_body_is_read_as_it_arrives_never_reserved_from_its_announced_length() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // A head announced 4 MiB; 10 bytes came.
        client.write_all(b"0123456789").await.unwrap();
        let mut buf = BytesMut::new();
        let mut rest = 4 << 20;
        let mut body = FastBody {
            io: &mut server,
            buf: &mut buf,
            rest: &mut rest,
        };
        assert!(!body.arrived());
        assert_eq!(body.size_hint().exact(), Some(4 << 20));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], b"0123456789");
        assert_eq!(rest, (4 << 20) - 10);
        assert!(buf.capacity() <= READ_CHUNK, "{} bytes reserved for 10 received", buf.capacity());
        // The end of the body comes only from the connection: cut short, it
        // is an error, not a short body.
        drop(client);
        let mut body = FastBody {
            io: &mut server,
            buf: &mut buf,
            rest: &mut rest,
        };
        assert!(body.frame().await.unwrap().is_err());

        // What came with the head is handed out without a read, and no more
        // than the body's length of it (the rest is the next request).
        let mut buf = BytesMut::from(&b"{}POST /ws/next"[..]);
        let mut rest = 2;
        let mut body = FastBody {
            io: &mut server,
            buf: &mut buf,
            rest: &mut rest,
        };
        assert!(body.arrived());
        assert_eq!(&body.frame().await.unwrap().unwrap().into_data().unwrap()[..], b"{}");
        assert!(body.is_end_stream() && body.frame().await.is_none());
        assert_eq!(&buf[..], b"POST /ws/next");

        // Taken whole (the gateway's shortcut) only when all of it is here,
        // and again no more than its length.
        let mut buf = BytesMut::from(&b"{\"a\":1}POST /ws/next"[..]);
        let mut rest = 7;
        let mut body = FastBody {
            io: &mut server,
            buf: &mut buf,
            rest: &mut rest,
        };
        assert_eq!(body.take_arrived().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(body.is_end_stream() && body.take_arrived().as_deref() == Some(&b""[..]));
        assert_eq!((&buf[..], rest), (&b"POST /ws/next"[..], 0));
        let mut buf = BytesMut::from(&b"{\"a\""[..]);
        let mut rest = 7;
        let mut body = FastBody {
            io: &mut server,
            buf: &mut buf,
            rest: &mut rest,
        };
        assert_eq!(body.take_arrived(), None, "a body still to come is read frame by frame");
        assert_eq!((buf.len(), rest), (4, 7));
    }

    #[tokio::test]
    async fn rewind_reads_the_saved_bytes_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b" world").await.unwrap();
        });
        let (server, _) = listener.accept().await.unwrap();
        client.await.unwrap();
        let mut r = Rewind::new(server, Bytes::from_static(b"hello"));
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
