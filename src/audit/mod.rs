//! The audit trail: what happened to tokens and what they were used for
//! (docs/audit.md).
//!
//! Two ways in, with different guarantees:
//! - **control-plane events** (token created or revoked, admin token
//!   created, sign-in and sign-out, and the reserved `token_rolled` and
//!   `config_reloaded`) go through [`Audit::record`], which writes to the
//!   store (and the sink) before it returns: the admin call that caused
//!   the event answers only after it is on disk. A failed write is logged
//!   at error level and counted (`portcullis_audit_write_errors_total`);
//!   it does not undo the operation it records.
//! - **data-plane events** (`tool_call`, `revoked_token_refused`) are put
//!   on a bounded queue with `try_send` ([`Audit::tool_call`],
//!   [`Audit::refused`]) and written in batches by one writer task
//!   (`writer.rs`). A request never waits for the audit trail: when the
//!   queue is full the event is dropped and counted
//!   (`portcullis_audit_dropped_total`, and `dropped` in
//!   `GET /v1/audit/stats`).
//!
//! It sits low in the layering (it imports `config`, `store`, `telemetry`
//! and `token` only), so that `auth::lifecycle` — token creation and
//! revocation for the admin API and the dashboard alike — and the verifier
//! can record events.

mod refusals;
mod sink;
mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::HeaderValue;
use tokio::sync::mpsc;

use crate::config::{AuditConfig, Config};
use crate::store::{StoreError, TokenStore};
use crate::telemetry::Metrics;

pub use crate::store::audit::{AuditEvent, AuditPage, AuditQuery, EventType, format_ms, now_ms};
pub use sink::Sink;

/// A `tools/call` as the data plane saw it. Indexes refer to the
/// configuration (`config.workspaces[workspace].servers[server]`), so that
/// building one costs no string copies but the token id and the tool name.
#[derive(Debug)]
pub struct ToolCall {
    /// Unix milliseconds when the request arrived.
    pub at: i64,
    pub workspace: usize,
    /// `None` when the request did not get as far as a server (an
    /// aggregating workspace refusing an unknown tool, say).
    pub server: Option<usize>,
    pub token_id: Box<str>,
    /// The tool name the client called (`params.name`); for an aggregating
    /// workspace without the `<server>__` prefix.
    pub tool: Option<Box<str>>,
    pub status: u16,
    /// Time to the response head, in microseconds.
    pub duration_us: u64,
    pub request_id: HeaderValue,
}

/// What waits in the queue for the writer.
#[derive(Debug)]
enum Queued {
    ToolCall(ToolCall),
    Refused {
        at: i64,
        token_id: Box<str>,
        workspace: Option<Box<str>>,
    },
}

/// The audit trail of one process. Built with the shared state; the writer
/// task is started by `app` ([`Audit::run_writer`]).
pub struct Audit {
    config: AuditConfig,
    /// The configured workspaces' slugs (data-plane events carry indexes).
    workspaces: Vec<WorkspaceNames>,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    queue: mpsc::Sender<Queued>,
    /// Taken by the writer while it runs, and by [`Audit::flush`] at the end.
    receiver: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    refusals: refusals::Refusals,
    sink: Option<Sink>,
}

struct WorkspaceNames {
    slug: String,
    servers: Vec<String>,
}

/// `GET /v1/audit/stats`.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[schema(as = AuditStats)]
pub struct Stats {
    /// Events written to the store since start.
    pub written: u64,
    /// Events dropped because the queue was full (the trail has gaps).
    pub dropped: u64,
    /// Batches the store failed to write.
    pub write_errors: u64,
    /// Events waiting to be written.
    pub queued: usize,
    pub queue_capacity: usize,
    /// Whether tool calls are recorded (`audit.tool_calls`).
    pub tool_calls: bool,
}

impl Audit {
    /// Opens the sink, if one is configured (a file that cannot be opened
    /// is an error at start, not a silent loss later).
    pub fn new(config: &Config, store: Arc<dyn TokenStore>, metrics: Arc<Metrics>) -> Result<Arc<Audit>, StoreError> {
        let sink = match &config.audit.sink {
            None => None,
            Some(s) => Some(Sink::open(s).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open the audit sink (`audit.sink` in {}): {e}",
                    config.source.display()
                ))
            })?),
        };
        let (queue, receiver) = mpsc::channel(config.audit.queue_capacity);
        Ok(Arc::new(Audit {
            config: config.audit.clone(),
            workspaces: config
                .workspaces
                .iter()
                .map(|w| WorkspaceNames {
                    slug: w.slug.clone(),
                    servers: w.servers.iter().map(|s| s.name.clone()).collect(),
                })
                .collect(),
            store,
            metrics,
            queue,
            receiver: tokio::sync::Mutex::new(receiver),
            refusals: refusals::Refusals::new(),
            sink,
        }))
    }

    /// Whether `tool_call` events are recorded (`[audit] tool_calls`); the
    /// data plane skips even looking for the tool name when they are not.
    pub fn tool_calls(&self) -> bool {
        self.config.tool_calls
    }

    /// Records a control-plane event: written to the store and the sink
    /// before this returns (see the module documentation). The event's `at`
    /// is set to now when it is 0. Returns the stored event (with its id).
    ///
    /// This is the API for every control-plane caller, e.g. the dashboard's
    /// sign-in: `state.audit.record(AuditEvent { actor: Some(admin_id), ..AuditEvent::new(EventType::Signin, 0) }).await`.
    pub async fn record(&self, mut event: AuditEvent) -> AuditEvent {
        if event.at == 0 {
            event.at = now_ms();
        }
        let fallback = event.clone();
        self.write(vec![event]).await.pop().unwrap_or(fallback)
    }

    /// Queues a `tool_call` event without waiting; dropped (and counted)
    /// when the queue is full or tool-call events are off.
    pub fn tool_call(&self, call: ToolCall) {
        if self.config.tool_calls {
            self.enqueue(Queued::ToolCall(call));
        }
    }

    /// Queues a `revoked_token_refused` event the first time this process
    /// refuses `token_id` (revoked or expired), never again for it while it
    /// is remembered (`refusals.rs`: a fixed table, so memory is bounded).
    pub fn refused(&self, token_id: &str, workspace: Option<&str>) {
        if !self.refusals.first(token_id) {
            return;
        }
        let queued = Queued::Refused {
            at: now_ms(),
            token_id: token_id.into(),
            workspace: workspace.map(Into::into),
        };
        if !self.enqueue(queued) {
            // Not recorded after all: let the next refusal try again.
            self.refusals.forget(token_id);
        }
    }

    fn enqueue(&self, item: Queued) -> bool {
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.audit.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let m = &self.metrics.audit;
        Stats {
            written: m.written.load(Relaxed),
            dropped: m.dropped.load(Relaxed),
            write_errors: m.write_errors.load(Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
            queue_capacity: self.queue.max_capacity(),
            tool_calls: self.config.tool_calls,
        }
    }

    /// One page of stored events; an empty page when this store keeps no
    /// audit trail.
    pub async fn page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        match self.store.audit() {
            Some(a) => a.page(query).await,
            None => Ok(AuditPage {
                events: Vec::new(),
                next_cursor: None,
            }),
        }
    }

    /// Writes events to the store, then to the sink; returns them with
    /// their ids (without ids when the store keeps no trail; none at all
    /// when the store failed and there is no sink).
    async fn write(&self, events: Vec<AuditEvent>) -> Vec<AuditEvent> {
        let n = events.len() as u64;
        let events = match self.store.audit() {
            None => events,
            Some(a) => {
                // Kept only for the sink, should the store fail: the store
                // takes the events (a blocking task owns them).
                let backup = self.sink.as_ref().map(|_| events.clone());
                match a.append(events, self.config.max_events).await {
                    Ok(stored) => {
                        self.metrics.audit.written.fetch_add(n, Relaxed);
                        stored
                    }
                    Err(e) => {
                        self.metrics.audit.write_errors.fetch_add(n, Relaxed);
                        tracing::error!(error = %e, events = n, "cannot write audit events to the store");
                        backup.unwrap_or_default()
                    }
                }
            }
        };
        if let Some(sink) = &self.sink {
            sink.write(&events);
        }
        events
    }
}

/// Records an event straight into `store`, for the offline CLI (no running
/// gateway, no queue, no sink): `portcullis admin token create`. A failure
/// is returned for the caller to report.
pub async fn record_offline(store: &dyn TokenStore, mut event: AuditEvent) -> Result<(), StoreError> {
    if event.at == 0 {
        event.at = now_ms();
    }
    match store.audit() {
        Some(a) => a.append(vec![event], 0).await.map(drop),
        None => Ok(()),
    }
}
