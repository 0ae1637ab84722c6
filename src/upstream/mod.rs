//! Pooled HTTP/1.1 connections to upstream servers, with connect and
//! response timeouts. Knows nothing of tokens or MCP: it sends a request and
//! returns the response head with a streaming body.
//!
//! The wire protocol is [`h1`]: the request's own task writes the request
//! and reads the response head, and the response body reads from the socket
//! as the server polls it; no task per connection, no channel between the
//! request and its connection.
//!
//! Each upstream has one pool per data-plane thread (and one for everything
//! else): a socket is registered with the reactor of the runtime that opened
//! it, so a pool shared by the data plane's single-threaded runtimes would
//! hand a request on one thread a socket whose readiness another thread's
//! reactor reports.
//!
//! The pool is a LIFO stack behind an uncontended lock; a connection goes
//! back to it from the response body itself, the moment its last byte is
//! read (see [`Body`]). The `Host` value and the origin-form target are
//! computed once per upstream.

pub(crate) mod h1;

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::{Frame, SizeHint};
use tokio::net::TcpSocket;

use crate::config::UpstreamServer;
use h1::{Conn, Decoder, Stage, Step};
pub(crate) use h1::{content_length, decimal, header_line};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer in time")]
    Timeout,
}

thread_local! {
    /// Which of an [`Upstream`]'s pools requests on this thread use: 0
    /// unless [`use_pool_on_this_thread`] said otherwise.
    static POOL: Cell<usize> = const { Cell::new(0) };
}

/// Makes upstream requests made on the calling thread use pool `slot` (of
/// the `pools` given to [`Upstream::new`]; out of range means 0). Each data-
/// plane thread calls this once with its own slot; the shared runtime's
/// threads keep 0 and share that pool, as a work-stealing runtime may.
pub fn use_pool_on_this_thread(slot: usize) {
    POOL.with(|p| p.set(slot));
}

/// Idle connections are closed after this long unused, before typical
/// upstream idle timeouts would close them under a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 512;

/// One upstream server and its connection pools (cloning shares them).
#[derive(Clone)]
pub struct Upstream {
    pub server: Arc<UpstreamServer>,
    target: Arc<Target>,
}

/// What every request to one upstream shares, computed once.
struct Target {
    /// `host:port` to resolve and connect to.
    authority: String,
    /// The request target in origin form (`/mcp?x=y`), as HTTP/1.1 sends it.
    path: String,
    /// The upstream's own authority, as a client connecting to it sends.
    host: HeaderValue,
    pools: Box<[Pool]>,
}

impl Upstream {
    /// `pools`: how many pool slots (at least 1) — one per data-plane thread
    /// plus one for the rest.
    pub fn new(server: Arc<UpstreamServer>, pools: usize) -> Self {
        // Config validation guarantees an http URL with a host.
        let url = &server.url;
        let host = url.host().unwrap_or("localhost");
        let authority = match url.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => format!("{host}:80"),
        };
        let host_header = match url.port_u16() {
            Some(p) if p != 80 => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        let target = Target {
            authority,
            path: url.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            host: HeaderValue::try_from(host_header).unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            pools: (0..pools.max(1)).map(|_| Pool::default()).collect(),
        };
        Upstream {
            server,
            target: Arc::new(target),
        }
    }

    /// Sends `req` to the upstream's URL (the request's own URI is not
    /// used); the timeout covers connecting and the response head, not the
    /// body, which may be a long-lived event stream.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response<Body>, UpstreamError> {
        let (parts, body) = req.into_parts();
        self.send_parts(&parts.method, parts.headers.iter(), &body).await
    }

    /// [`send`](Self::send) from a method, header pairs (written in this
    /// order; `Host` is the upstream's unless one is given) and a body.
    pub async fn send_parts<'h>(
        &self,
        method: &Method,
        headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
        body: &[u8],
    ) -> Result<Response<Body>, UpstreamError> {
        let wire = h1::encode(method, &self.target.path, &self.target.host, headers, body);
        match tokio::time::timeout(self.server.timeout, self.send_now(&wire, method)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(r) => r,
        }
    }

    async fn send_now(&self, wire: &[u8], method: &Method) -> Result<Response<Body>, UpstreamError> {
        let slot = POOL.with(Cell::get);
        let slot = if slot < self.target.pools.len() { slot } else { 0 };
        loop {
            let (mut conn, reused) = match self.target.pools[slot].checkout() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match conn.round_trip(wire, *method == Method::HEAD).await {
                Ok(head) => {
                    let mut body = Body {
                        conn: Some(conn),
                        decoder: head.decoder,
                        home: head.reusable.then(|| Home {
                            target: Arc::clone(&self.target),
                            slot,
                        }),
                    };
                    if body.decoder.is_done() {
                        body.finish();
                    }
                    return Ok(Response::from_parts(head.parts, body));
                }
                // A pooled connection the upstream had closed: try a new
                // one when the upstream cannot have acted on the request —
                // it was not delivered, or it is idempotent and got no
                // answer at all (the rule of Go's http.Transport). A POST
                // that got no answer is not sent twice: a tool call may
                // have run.
                Err(f) if reused && (f.stage == Stage::Write || (f.stage == Stage::NoAnswer && method.is_idempotent())) => {
                    tracing::debug!(error = %f.detail, "pooled upstream connection failed; retrying on a new one");
                }
                Err(f) => return Err(UpstreamError::Unavailable(f.detail)),
            }
        }
    }

    /// Opens a connection.
    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let connect = async {
            let mut last = None;
            for addr in tokio::net::lookup_host(self.target.authority.as_str()).await? {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.set_keepalive(true)?;
                match socket.connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("the name resolved to no address")))
        };
        let stream = match tokio::time::timeout(self.server.connect_timeout, connect).await {
            Err(_) => {
                return Err(UpstreamError::Unavailable(format!(
                    "connect to {} timed out",
                    self.target.authority
                )));
            }
            Ok(Err(e)) => return Err(UpstreamError::Unavailable(format!("connect to {}: {e}", self.target.authority))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream))
    }
}

/// Idle connections of one upstream for one thread: a stack, so the most
/// recently used (warmest) connection is taken first and the rest age out.
#[derive(Default)]
struct Pool {
    idle: Mutex<VecDeque<(Conn, Instant)>>,
}

impl Pool {
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop_back() {
            if since.elapsed() >= IDLE_TIMEOUT {
                // Unused too long, and everything below it is older still:
                // dropping them closes them.
                idle.clear();
                return None;
            }
            if conn.is_usable() {
                return Some(conn);
            }
            // Closed by the upstream meanwhile: drop it, try the next.
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Close the oldest when full or stale, so a burst's extra
        // connections do not stay open forever.
        while idle
            .front()
            .is_some_and(|(_, since)| idle.len() >= MAX_IDLE || since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle.push_back((conn, Instant::now()));
    }
}

/// Where a connection goes back when its response has been read.
struct Home {
    target: Arc<Target>,
    slot: usize,
}

/// An upstream response body, streamed piece by piece as it arrives. When
/// its last byte has been read the connection returns to its pool; dropped
/// before that, the connection is closed (what is left of the body would
/// otherwise be read as the next response).
pub struct Body {
    /// `None` once the body has ended or failed.
    conn: Option<Conn>,
    decoder: Decoder,
    /// `None`: close the connection at the end (the upstream asked to, or
    /// the body is framed by the close).
    home: Option<Home>,
}

impl Body {
    /// The body has been read to its end: the connection goes home if it
    /// may and nothing unexpected follows the body.
    fn finish(&mut self) {
        let conn = self.conn.take();
        if let (Some(conn), Some(home)) = (conn, self.home.take())
            && conn.buf.is_empty()
        {
            home.target.pools[home.slot].checkin(conn);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Step::Data(data)) => {
                    // hyper's server stops polling once `is_end_stream`
                    // says so: hand the connection back with the last piece.
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => return this.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            conn.buf.reserve(h1::READ_CHUNK);
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)) {
                Ok(0) => match this.decoder.eof() {
                    // Framed by the close: the body is complete.
                    Ok(()) => {
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(io::Error::new(io::ErrorKind::UnexpectedEof, e)),
                },
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.exact_rest() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool against a real HTTP/1.1 server on a loopback socket that
    //! counts the connections it accepts.
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Uri;
    use http::header::HOST;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// Serves `/big` as a 1 MiB body and anything else as a short one;
    /// `keep_alive: false` closes each connection after its response.
    async fn server(keep_alive: bool) -> (Uri, Arc<AtomicUsize>) {
        server_with(keep_alive, None).await
    }

    /// [`server`], closing connections idle longer than `idle` (hyper's
    /// header-read timer also runs while a connection waits for its next
    /// request, as in the demo upstream and the gateway itself).
    async fn server_with(keep_alive: bool, idle: Option<Duration>) -> (Uri, Arc<AtomicUsize>) {
        let (url, accepted, _) = server_counting_closes(keep_alive, idle).await;
        (url, accepted)
    }

    /// [`server_with`], also counting the connections it has closed: the
    /// event tests wait for instead of sleeping.
    async fn server_counting_closes(keep_alive: bool, idle: Option<Duration>) -> (Uri, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let closed = Arc::new(AtomicUsize::new(0));
        let closes = Arc::clone(&closed);
        let (url, accepted) = raw(move |_, stream| {
            let closes = Arc::clone(&closes);
            let svc = service_fn(|req: Request<Incoming>| async move {
                let host = req.headers().get(HOST).cloned();
                let body = if req.uri().path() == "/big" {
                    Bytes::from(vec![b'x'; 1 << 20])
                } else {
                    Bytes::from(format!("{} {}", req.uri(), host.unwrap().to_str().unwrap()))
                };
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.keep_alive(keep_alive);
            if let Some(idle) = idle {
                builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle);
            }
            async move {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                closes.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        (format!("{url}?x=1").parse().unwrap(), accepted, closed)
    }

    /// Waits until `counter` reaches `n` (bounded: a hang guard).
    async fn until_count(counter: &AtomicUsize, n: usize) {
        for _ in 0..5000 {
            if counter.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("count stuck at {} (waiting for {n})", counter.load(Ordering::SeqCst));
    }

    fn upstream(url: Uri) -> Upstream {
        let server = UpstreamServer {
            name: "s".into(),
            url,
            headers: vec![],
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
        };
        Upstream::new(Arc::new(server), 1)
    }

    fn get(uri: &str) -> Request<Bytes> {
        Request::builder().uri(uri).body(Bytes::new()).unwrap()
    }

    async fn text(resp: Response<Body>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn reuses_one_connection_and_sends_origin_form_with_host() {
        let (url, accepted) = server(true).await;
        let authority = url.authority().unwrap().to_string();
        let up = upstream(url);
        for _ in 0..5 {
            // The caller's URI is replaced by the upstream's, in origin form.
            let resp = up.send(get("http://elsewhere/ignored")).await.unwrap();
            assert_eq!(text(resp).await, format!("/mcp?x=1 {authority}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let (url, accepted) = server(true).await;
        let big = upstream(format!("http://{}/big", url.authority().unwrap()).parse().unwrap());
        let resp = big.send(get("/")).await.unwrap();
        drop(resp);
        // The connection with an unread body is not handed out again.
        let resp = big.send(get("/")).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Read to the end, it is.
        let resp = big.send(get("/")).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (url, accepted, closed) = server_counting_closes(false, None).await;
        let up = upstream(url);
        for i in 1..=3 {
            let resp = up.send(get("/")).await.unwrap();
            assert!(text(resp).await.starts_with("/mcp?x=1"));
            assert_eq!(accepted.load(Ordering::SeqCst), i);
            // The upstream has closed it, as between real requests; the next
            // request needs (and gets) a new connection.
            until_count(&closed, i).await;
        }
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_in_the_pool_is_replaced() {
        let (url, accepted, closed) = server_counting_closes(true, Some(Duration::from_millis(100))).await;
        let up = upstream(url);
        for i in 1..=3 {
            // A POST, which is never retried once sent: the closed connection
            // must be noticed before it is used.
            let resp = up.send(post("{}")).await.unwrap();
            assert!(text(resp).await.starts_with("/mcp?x=1"));
            assert_eq!(accepted.load(Ordering::SeqCst), i);
            // The upstream closes the pooled connection meanwhile (its idle
            // timer); wait for that, not for a guessed time.
            until_count(&closed, i).await;
        }
    }

    #[tokio::test]
    async fn a_pooled_connection_that_received_a_late_extra_response_is_not_reused() {
        // A plain-threads upstream: its first connection answers, then sends
        // a whole unasked response a moment later and says when it has. The
        // test's runtime blocks on that word, so its reactor has not run
        // since the stray bytes arrived: the pool cannot rely on readiness
        // the runtime has not seen yet.
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut s) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let sent_tx = sent_tx.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    // Each request of this test is one small write.
                    while matches!(s.read(&mut buf), Ok(k) if k > 0) {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh");
                        if n == 0 {
                            std::thread::sleep(Duration::from_millis(300));
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale");
                            let _ = sent_tx.send(());
                        }
                    }
                });
            }
        });
        let up = upstream(format!("http://{addr}/mcp").parse().unwrap());
        assert_eq!(text(up.send(post("{}")).await.unwrap()).await, "fresh");
        sent_rx.recv().unwrap();
        // A POST on a connection that looks fine is sent once and not
        // retried, so the stale bytes must be caught before it is written.
        assert_eq!(text(up.send(post("{}")).await.unwrap()).await, "fresh");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connection_is_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let up = upstream(format!("http://{addr}/mcp").parse().unwrap());
        match up.send(get("/")).await {
            Err(UpstreamError::Unavailable(msg)) => assert!(msg.contains(&addr.to_string()), "{msg}"),
            other => panic!("expected Unavailable, got {:?}", other.map(|r| r.status())),
        }
    }

    /// A hand-written upstream: `handler(n, stream)` serves the n-th
    /// accepted connection (from 1), for answers hyper would never send.
    async fn raw<F, Fut>(handler: F) -> (Uri, Arc<AtomicUsize>)
    where
        F: Fn(usize, tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                // Small writes go out at once, not after the peer's
                // delayed ACK (Nagle), which would look like a slow chunk.
                stream.set_nodelay(true).unwrap();
                tokio::spawn(handler(n, stream));
            }
        });
        (format!("http://{addr}/mcp").parse().unwrap(), accepted)
    }

    /// Reads one request (head and `content-length` body); `None` at EOF.
    async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    let req = String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
                    buf.drain(..end + 4 + len);
                    return Some(req);
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn write(s: &mut tokio::net::TcpStream, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = s.write_all(bytes).await;
    }

    fn post(body: &'static str) -> Request<Bytes> {
        Request::builder()
            .method(Method::POST)
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap()
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_chunks_streamed_as_they_come() {
        let (url, accepted) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            while let Some(req) = read_request(&mut s, &mut buf).await {
                assert!(req.starts_with("POST /mcp HTTP/1.1\r\n"), "{req}");
                assert!(req.ends_with("content-length: 2\r\n\r\n{}"), "{req}");
                write(&mut s, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await;
                write(&mut s, b"7\r\ndata: 1\r\n").await;
                tokio::time::sleep(Duration::from_millis(400)).await;
                write(&mut s, b"7\r\ndata: 2\r\n0\r\n\r\n").await;
            }
        })
        .await;
        let up = upstream(url);
        for _ in 0..2 {
            let resp = up.send(post("{}")).await.unwrap();
            assert_eq!(resp.status(), 200);
            // The framing header is this hop's, consumed here.
            assert!(resp.headers().get("transfer-encoding").is_none());
            let mut body = resp.into_body();
            // The first chunk arrives before the second is even written.
            let first = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
            assert_eq!(first.unwrap().unwrap().unwrap().into_data().unwrap(), "data: 1");
            assert_eq!(body.collect().await.unwrap().to_bytes(), "data: 2");
        }
        // Read to the end, the connection was reused.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_framed_by_the_close_ends_with_it_and_is_not_reused() {
        let (url, accepted) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                write(&mut s, b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":1}").await;
            }
        })
        .await;
        let up = upstream(url);
        for i in 1..=2 {
            let resp = up.send(post("{}")).await.unwrap();
            assert_eq!(text(resp).await, "{\"a\":1}");
            assert_eq!(accepted.load(Ordering::SeqCst), i);
        }
    }

    #[tokio::test]
    async fn a_post_left_unanswered_on_a_reused_connection_is_not_sent_twice() {
        // Answers the first request on each connection, then reads the next
        // and closes without a word, as an upstream that crashed mid-call.
        let (url, accepted) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                write(&mut s, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            }
            let _ = read_request(&mut s, &mut buf).await;
        })
        .await;
        let up = upstream(url);
        assert_eq!(text(up.send(post("{}")).await.unwrap()).await, "ok");
        match up.send(post("{}")).await {
            Err(UpstreamError::Unavailable(msg)) => assert!(msg.contains("closed before the response head"), "{msg}"),
            other => panic!("expected Unavailable, got {:?}", other.map(|r| r.status())),
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the POST was sent again");
        // An idempotent request in the same spot is retried on a new connection.
        assert_eq!(text(up.send(post("{}")).await.unwrap()).await, "ok");
        assert_eq!(text(up.send(get("/")).await.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn malformed_or_oversized_answers_are_errors_and_close_the_connection() {
        let answers: [&'static [u8]; 9] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            // Issue 11: lengths that are not plain digits, codings we would
            // pass on decoded but unlabelled.
            b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ];
        for answer in answers {
            let (url, _) = raw(move |_, mut s| async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf).await.is_some() {
                    write(&mut s, answer).await;
                }
            })
            .await;
            assert!(matches!(upstream(url).send(post("{}")).await, Err(UpstreamError::Unavailable(_))));
        }
        // A head that never ends is cut at MAX_HEAD, not buffered forever.
        let (url, _) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                write(&mut s, b"HTTP/1.1 200 OK\r\n").await;
                let filler = format!("x-filler: {}\r\n", "y".repeat(1000));
                for _ in 0..200 {
                    write(&mut s, filler.as_bytes()).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
        .await;
        match upstream(url).send(post("{}")).await {
            Err(UpstreamError::Unavailable(msg)) => assert!(msg.contains("larger than"), "{msg}"),
            other => panic!("expected Unavailable, got {:?}", other.map(|r| r.status())),
        }
        // A body cut short is an error, not a short success.
        let (url, _) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                write(&mut s, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").await;
            }
        })
        .await;
        let resp = upstream(url).send(post("{}")).await.unwrap();
        assert!(resp.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn hop_headers_and_a_length_that_does_not_frame_the_body_are_not_passed_on() {
        let (url, _) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            if read_request(&mut s, &mut buf).await.is_some() {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive, X-Hop-Secret\r\nx-hop-secret: 1\r\nx-kept: 2\r\ntransfer-encoding: chunked\r\n\r\n11\r\n{\"jsonrpc\":\"2.0\"}\r\n0\r\n\r\n",
                )
                .await;
            }
        })
        .await;
        let resp = upstream(url).send(post("{}")).await.unwrap();
        let h = resp.headers();
        assert!(h.get("content-length").is_none(), "{h:?}");
        assert!(h.get("x-hop-secret").is_none(), "{h:?}");
        assert_eq!(h["x-kept"], "2");
        assert_eq!(text(resp).await, r#"{"jsonrpc":"2.0"}"#);
    }

    #[tokio::test]
    async fn a_length_and_a_coding_together_are_read_as_chunked_then_closed() {
        let (url, accepted) = raw(|_, mut s| async move {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )
                .await;
            }
        })
        .await;
        let up = upstream(url);
        for i in 1..=2 {
            assert_eq!(text(up.send(post("{}")).await.unwrap()).await, "ok");
            assert_eq!(accepted.load(Ordering::SeqCst), i);
        }
    }
}
