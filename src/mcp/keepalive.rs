//! SSE keep-alive: a comment line (`: keep-alive`) on an idle event stream, so
//! that load balancers and proxies with idle timeouts do not cut long-lived
//! streams (a tool that runs for minutes, a server-to-client GET stream).
//!
//! The comment is only ever inserted between events (after a blank line), so
//! the stream's framing is untouched; SSE clients ignore comment lines.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

const COMMENT: &[u8] = b": keep-alive\n\n";

pub struct KeepAlive<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    interval: Duration,
    tail: Tail,
}

/// The last four bytes of an event stream forwarded so far, to know whether
/// it stands between events (also used to end a stream cleanly:
/// `revocable`).
#[derive(Clone, Copy)]
pub(super) struct Tail([u8; 4]);

impl Tail {
    /// As if after a blank line: before the first event is a boundary.
    pub(super) fn new() -> Self {
        Tail(*b"\n\n\n\n")
    }

    pub(super) fn at_boundary(&self) -> bool {
        let t = &self.0;
        t[2..] == *b"\n\n" || t[2..] == *b"\r\r" || *t == *b"\r\n\r\n"
    }

    /// Whether the last line forwarded is complete.
    pub(super) fn at_line_end(&self) -> bool {
        matches!(self.0[3], b'\n' | b'\r')
    }

    pub(super) fn remember(&mut self, data: &[u8]) {
        if data.len() >= 4 {
            self.0.copy_from_slice(&data[data.len() - 4..]);
        } else {
            for &b in data {
                self.0.rotate_left(1);
                self.0[3] = b;
            }
        }
    }
}

impl<B> KeepAlive<B> {
    pub fn new(inner: B, interval: Duration) -> Self {
        KeepAlive {
            inner,
            sleep: Box::pin(tokio::time::sleep(interval)),
            interval,
            tail: Tail::new(),
        }
    }
}

impl<B> Body for KeepAlive<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tail.remember(data);
                }
                let next = Instant::now() + this.interval;
                this.sleep.as_mut().reset(next);
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(end) => return Poll::Ready(end),
            Poll::Pending => {}
        }
        while this.sleep.as_mut().poll(cx).is_ready() {
            let next = Instant::now() + this.interval;
            this.sleep.as_mut().reset(next);
            if this.tail.at_boundary() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(COMMENT)))));
            }
            // Mid-event: wait for the next interval (the loop re-arms the timer).
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Comments may be added: the length is no longer known.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn comments_fill_idle_gaps_between_events_only() {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
        let mut ka = KeepAlive::new(body, Duration::from_secs(10));
        tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"event: message\ndata: 1\n\n")).await.unwrap();
            tokio::time::sleep(Duration::from_secs(25)).await;
            // Half an event, then a long pause inside it.
            tx.send_data(Bytes::from_static(b"data: 2")).await.unwrap();
            tokio::time::sleep(Duration::from_secs(25)).await;
            tx.send_data(Bytes::from_static(b"\n\n")).await.unwrap();
        });
        let mut out = Vec::new();
        while let Some(f) = ka.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        let text: String = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        assert_eq!(text, "event: message\ndata: 1\n\n: keep-alive\n\n: keep-alive\n\ndata: 2\n\n");
    }
}
