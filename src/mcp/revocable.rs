//! Ending a response stream when its token stops being valid.
//!
//! A token is checked once per request; a response that streams (a POST
//! answered as SSE, a GET event stream, an aggregating workspace's relayed
//! stream) would otherwise keep delivering to a token revoked, or expired,
//! after that check. [`Revocable`] wraps such a body and cuts it:
//!
//! - when the token's entry is revoked ([`CachedToken::ended`]: fired by
//!   `Verifier::apply_revocation` before the revoke call returns, here or,
//!   through the acknowledgements, on every instance);
//! - at the token's expiry instant;
//! - at the shutdown grace deadline (`AppState::streams_cutoff`).
//!
//! The cut is checked before every frame, so nothing the upstream sends after
//! it reaches the client. The client then gets one last SSE event with the
//! JSON-RPC error a new request would get (`GatewayError::jsonrpc_body`:
//! -31001 `Unauthorized` for a revoked or expired token, -32603 `Service
//! unavailable` at shutdown), carrying the request's id where it has one, and
//! the stream ends; the upstream body is dropped (its connection closed, or
//! its relay task stopped).
//!
//! Only streaming bodies are wrapped, and the signal they wait on is created
//! on first subscription: a plain JSON answer costs nothing here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::CachedToken;
use crate::error::GatewayError;

use super::keepalive::Tail;

/// Closes an event cut in the middle with an event type no MCP client
/// handles (the SDKs act on `message` events only), so that the partial
/// event is dropped rather than read as a truncated message.
const DISCARD: &[u8] = b"event: cut\n\n";

type Cut = Pin<Box<dyn Future<Output = GatewayError> + Send + Sync>>;

pub struct Revocable<B> {
    /// `None` once cut (or ended).
    inner: Option<B>,
    cut: Cut,
    /// The JSON-RPC id of the request this stream answers (a POST's).
    id: Option<Box<RawValue>>,
    tail: Tail,
}

impl<B> Revocable<B> {
    /// Wraps `inner`, the event stream answering a request of `token`;
    /// `cutoff` is cancelled at the shutdown grace deadline.
    pub fn new(inner: B, token: &CachedToken, cutoff: &CancellationToken, id: Option<Box<RawValue>>) -> Self {
        let expiry = token.expires_at.map(expiry_instant);
        Self::with_deadline(inner, token.ended(), expiry, cutoff.clone(), id)
    }

    /// [`Revocable::new`] with the expiry as an instant (tests use paused time).
    fn with_deadline(
        inner: B,
        ended: CancellationToken,
        expiry: Option<Option<Instant>>,
        cutoff: CancellationToken,
        id: Option<Box<RawValue>>,
    ) -> Self {
        let unauthorized = GatewayError::Unauthorized { header_missing: false };
        let cut = Box::pin(async move {
            let expired = async {
                match expiry {
                    Some(Some(at)) => tokio::time::sleep_until(at).await,
                    // No expiry, or one too far away for the clock.
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = ended.cancelled() => unauthorized,
                _ = expired => unauthorized,
                // What a client should do then is try again, elsewhere.
                _ = cutoff.cancelled() => GatewayError::ServiceUnavailable { retry_after_secs: 1 },
            }
        });
        Revocable {
            inner: Some(inner),
            cut,
            id,
            tail: Tail::new(),
        }
    }

    /// The bytes that end a cut stream: the partial event, if any, closed as
    /// one to discard; then the error event.
    fn last_event(&self, error: &GatewayError) -> Bytes {
        // The JSON-RPC error an answer would carry, as one SSE `message`
        // event, so that the client's request fails (or its GET stream ends)
        // the same way a refused request would.
        let event = super::sse::encode(&error.jsonrpc_body(self.id.as_deref()));
        if self.tail.at_boundary() {
            return event;
        }
        let mut out = BytesMut::with_capacity(event.len() + DISCARD.len() + 1);
        if !self.tail.at_line_end() {
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(DISCARD);
        out.extend_from_slice(&event);
        out.freeze()
    }
}

/// The instant a token expiring at `expires_at` (Unix seconds) stops being
/// valid: `Verifier::verify` refuses it from that second on. `None` if the
/// clock cannot represent it (centuries away).
fn expiry_instant(expires_at: i64) -> Option<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let left = expires_at.saturating_mul(1000).saturating_sub(now_ms).max(0);
    Instant::now().checked_add(Duration::from_millis(left as u64))
}

impl<B> Body for Revocable<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // First, so that nothing the upstream sent after the cut goes out.
        if let Poll::Ready(error) = this.cut.as_mut().poll(cx) {
            this.inner = None;
            return Poll::Ready(Some(Ok(Frame::data(this.last_event(&error)))));
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tail.remember(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(end) => {
                this.inner = None;
                Poll::Ready(end)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        // A last event may be added: the length is no longer known.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;
    use std::convert::Infallible;

    fn text(frames: &[Bytes]) -> String {
        frames.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    fn id(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.into()).unwrap())
    }

    const UNAUTHORIZED: &str =
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-31001,\"message\":\"Unauthorized\"}}\n\n";

    #[tokio::test]
    async fn a_revocation_cuts_the_stream_with_a_last_error_event() {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
        let ended = CancellationToken::new();
        let mut r = Revocable::with_deadline(body, ended.clone(), None, CancellationToken::new(), id("7"));
        tx.send_data(Bytes::from_static(b"event: message\ndata: 1\n\n")).await.unwrap();
        let first = r.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "event: message\ndata: 1\n\n");
        ended.cancel();
        // Already queued by the upstream, but after the cut: never sent.
        tx.send_data(Bytes::from_static(b"event: message\ndata: 2\n\n")).await.unwrap();
        let mut rest = Vec::new();
        while let Some(f) = r.frame().await {
            rest.push(f.unwrap().into_data().unwrap());
        }
        assert_eq!(text(&rest), UNAUTHORIZED);
        assert!(r.is_end_stream());
    }

    #[tokio::test]
    async fn an_event_cut_midway_is_closed_as_one_to_discard() {
        for (partial, joint) in [("data: {\"par", "\n"), ("data: 1\n", "")] {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
            let ended = CancellationToken::new();
            let mut r = Revocable::with_deadline(body, ended.clone(), None, CancellationToken::new(), id("7"));
            tx.send_data(Bytes::from(partial)).await.unwrap();
            let mut out = vec![r.frame().await.unwrap().unwrap().into_data().unwrap()];
            ended.cancel();
            while let Some(f) = r.frame().await {
                out.push(f.unwrap().into_data().unwrap());
            }
            assert_eq!(text(&out), format!("{partial}{joint}event: cut\n\n{UNAUTHORIZED}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_cuts_the_stream_at_its_instant_not_before() {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
        let start = Instant::now();
        let at = start + Duration::from_secs(30);
        let mut r = Revocable::with_deadline(body, CancellationToken::new(), Some(Some(at)), CancellationToken::new(), None);
        tokio::spawn(async move {
            // One event every 10 s; the one at 30 s comes after the expiry.
            for i in 1..=5 {
                tokio::time::sleep_until(start + Duration::from_secs(10 * i)).await;
                let _ = tx.send_data(Bytes::from(format!("data: {i}\n\n"))).await;
            }
        });
        let mut out = Vec::new();
        while let Some(f) = r.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        assert_eq!(Instant::now(), at);
        assert_eq!(
            text(&out),
            "data: 1\n\ndata: 2\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-31001,\"message\":\"Unauthorized\"}}\n\n"
        );
    }

    #[tokio::test]
    async fn shutdown_cuts_with_service_unavailable() {
        let (_tx, body) = Channel::<Bytes, Infallible>::new(4);
        let cutoff = CancellationToken::new();
        let mut r = Revocable::with_deadline(body, CancellationToken::new(), None, cutoff.clone(), None);
        cutoff.cancel();
        let last = r.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            last,
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"Service unavailable\",\"data\":{\"retryAfter\":1}}}\n\n"
        );
        assert!(r.frame().await.is_none());
    }

    #[test]
    fn expiry_instants() {
        let now = Instant::now();
        let past = expiry_instant(0).unwrap();
        assert!(past >= now && past <= Instant::now(), "already expired: now");
        let far = expiry_instant(i64::MAX / 1000);
        assert!(
            far.is_none_or(|t| t > now + Duration::from_secs(1 << 40)),
            "centuries away: never, in effect"
        );
    }
}
