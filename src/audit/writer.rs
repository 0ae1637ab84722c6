//! The writer task: takes data-plane events off the queue in batches, adds
//! the token's name and member (read from the store once per token, off
//! the request path, and kept in a bounded map), writes each batch in one
//! store call (gathering for up to [`LINGER`] first), and applies retention
//! once a minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Audit, AuditEvent, EventType, Queued, now_ms};
use crate::store::audit::Retention;

/// Events written per store call at most.
const BATCH: usize = 512;
/// Tokens whose name and member are remembered; the map is cleared when
/// full (a cheap bound: it refills from the store one read per token).
const NAMES: usize = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// After the first event of a batch, how long the writer gathers more
/// before writing: one store transaction per this interval instead of one
/// per event under load (what a write costs is mostly per transaction).
/// Events reach the store at most this much later.
const LINGER: Duration = Duration::from_millis(100);

/// What the writer remembers of a token: (name, member id).
type Names = HashMap<Box<str>, (Option<String>, Option<String>)>;

impl Audit {
    /// Runs until `shutdown`; what is still queued then is written by
    /// [`Audit::flush`], once the data plane has drained.
    pub async fn run_writer(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.receiver.lock().await;
        let mut names = Names::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    let deadline = tokio::time::Instant::now() + LINGER;
                    while batch.len() < BATCH {
                        let room = BATCH - batch.len();
                        tokio::select! {
                            n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                            _ = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                    self.write_queued(&mut names, &mut batch).await;
                }
                _ = prune.tick() => self.prune().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Writes every queued event now; returns how many. Called at shutdown
    /// after the data plane has drained (and by tests to wait for events).
    pub async fn flush(&self) -> usize {
        let mut rx = self.receiver.lock().await;
        let mut names = Names::new();
        let mut total = 0;
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return total;
            }
            total += batch.len();
            self.write_queued(&mut names, &mut batch).await;
        }
    }

    async fn write_queued(&self, names: &mut Names, batch: &mut Vec<Queued>) {
        let mut events = Vec::with_capacity(batch.len());
        for q in batch.drain(..) {
            let mut e = self.event(q);
            if let Some(id) = e.token_id.as_deref() {
                let (name, member) = self.names_of(names, id).await;
                e.token_name = name;
                e.member_id = member;
            }
            events.push(e);
        }
        self.write(events).await;
    }

    fn event(&self, q: Queued) -> AuditEvent {
        match q {
            Queued::ToolCall(c) => {
                let ws = self.workspaces.get(c.workspace);
                AuditEvent {
                    workspace: ws.map(|w| w.slug.clone()),
                    server: c.server.and_then(|s| ws?.servers.get(s).cloned()),
                    token_id: Some(c.token_id.into()),
                    tool: c.tool.map(Into::into),
                    method: Some("tools/call".into()),
                    status: Some(c.status),
                    duration_ms: Some(c.duration_us as f64 / 1000.0),
                    request_id: c.request_id.to_str().ok().map(str::to_owned),
                    ..AuditEvent::new(EventType::ToolCall, c.at)
                }
            }
            Queued::Refused { at, token_id, workspace } => AuditEvent {
                workspace: workspace.map(Into::into),
                token_id: Some(token_id.into()),
                status: Some(401),
                ..AuditEvent::new(EventType::RevokedTokenRefused, at)
            },
        }
    }

    async fn names_of(&self, names: &mut Names, id: &str) -> (Option<String>, Option<String>) {
        if let Some(n) = names.get(id) {
            return n.clone();
        }
        match self.store.get(id).await {
            Ok(r) => {
                let n = r.map(|r| (Some(r.name), r.member_id)).unwrap_or_default();
                if names.len() >= NAMES {
                    names.clear();
                }
                names.insert(id.into(), n.clone());
                n
            }
            // Not remembered: the next event of this token tries again.
            Err(_) => (None, None),
        }
    }

    /// Applies `[audit] retention_days` and `max_events`.
    pub async fn prune(&self) {
        let Some(store) = self.store.audit() else { return };
        let retention = Retention {
            before: self.config.retention.map(|r| now_ms() - r.as_millis() as i64),
            max_events: self.config.max_events,
        };
        if retention.before.is_none() && retention.max_events == 0 {
            return;
        }
        let slugs: Vec<String> = self.workspaces.iter().map(|w| w.slug.clone()).collect();
        match store.prune(retention, &slugs).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "audit retention applied"),
            Err(e) => tracing::warn!(error = %e, "cannot apply audit retention; will retry"),
        }
    }
}
