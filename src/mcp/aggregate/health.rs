//! Upstream health: the up/down view per server, probed with a sessionless
//! `ping` (often while up, with a doubling backoff while down); a change
//! makes open client streams send `list_changed`.

use super::*;

impl Aggregator {
    pub(super) fn set_up(&self, i: usize, up: bool) {
        self.metrics.server_health(self.workspace.index, i, up);
        if self.up[i].swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(workspace = %self.workspace.slug, server = %self.name(i), "upstream is back");
            } else {
                tracing::warn!(workspace = %self.workspace.slug, server = %self.name(i), "upstream is down; leaving it out until it answers again");
            }
            let _ = self.changed.send(());
        }
    }
}

/// Health: an upstream that is up is probed this often, one that is down
/// after a backoff doubling from the first value to the second.
pub(super) const PROBE_UP: Duration = Duration::from_secs(15);
pub(super) const PROBE_DOWN: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(8));

/// Probes upstreams: every [`PROBE_UP`] while up, with a doubling backoff
/// while down. Any HTTP answer to a sessionless `ping` counts as up.
pub(super) fn spawn_health(agg: Weak<Aggregator>) {
    tokio::spawn(async move {
        let n = match agg.upgrade() {
            Some(a) => a.upstreams.len(),
            None => return,
        };
        let mut next = vec![Instant::now() + PROBE_UP; n];
        let mut backoff = vec![PROBE_DOWN.0; n];
        let ping = Bytes::from_static(br#"{"jsonrpc":"2.0","id":"portcullis-health","method":"ping"}"#);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Some(a) = agg.upgrade() else { return };
            let now = Instant::now();
            for i in 0..n {
                let up = a.up[i].load(Ordering::Relaxed);
                if !up && next[i] > now + backoff[i] {
                    // Just went down: first retry after the shortest backoff.
                    next[i] = now + backoff[i];
                }
                if now < next[i] {
                    continue;
                }
                let server = &a.workspace.servers[i];
                let mut req = Request::new(ping.clone());
                *req.method_mut() = Method::POST;
                *req.uri_mut() = server.url.clone();
                req.headers_mut()
                    .insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
                req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                for (name, v) in &server.headers {
                    req.headers_mut().insert(name.clone(), v.clone());
                }
                let alive = a.upstreams[i].send(req).await.is_ok();
                a.set_up(i, alive);
                if alive {
                    backoff[i] = PROBE_DOWN.0;
                    next[i] = Instant::now() + PROBE_UP;
                } else {
                    next[i] = Instant::now() + backoff[i];
                    backoff[i] = (backoff[i] * 2).min(PROBE_DOWN.1);
                }
            }
        }
    });
}
