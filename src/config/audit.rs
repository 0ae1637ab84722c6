//! `[audit]`: the audit trail's switches, retention, queue and sink
//! (docs/audit.md). Kept apart from the other sections so that it is read,
//! checked and converted in one place.

use super::*;

/// `[audit]`: what the audit trail records and how long it keeps it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSpec {
    /// Record a `tool_call` event for every JSON-RPC `tools/call` on the data
    /// plane (time, token, server, tool, status, latency, request id; never
    /// arguments or results). Control-plane events are always recorded.
    pub tool_calls: bool,
    /// Also write every event as one JSON line to `"stdout"` or to a file
    /// (appended, created 0600; relative to this file's directory), e.g. for
    /// a SIEM. Empty: no sink.
    pub sink: String,
    /// Events older than this many days are deleted (0: no age limit).
    pub retention_days: u64,
    /// At most this many events are kept, the oldest deleted first (0: no
    /// count limit). With Redis, per workspace and for the global stream.
    pub max_events: u64,
    /// Data-plane events wait in a queue of this many for the writer; when it
    /// is full an event is dropped (and counted), never the request delayed.
    pub queue_capacity: usize,
}

impl Default for AuditSpec {
    fn default() -> Self {
        AuditSpec {
            tool_calls: true,
            sink: String::new(),
            retention_days: 90,
            max_events: 1_000_000,
            queue_capacity: 10_000,
        }
    }
}

/// Where the JSON-lines copy of every event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub tool_calls: bool,
    pub sink: Option<AuditSink>,
    /// `None`: no age limit.
    pub retention: Option<Duration>,
    /// 0: no count limit.
    pub max_events: u64,
    pub queue_capacity: usize,
}

/// Beyond this a queue is memory nobody meant to spend (each waiting event
/// is a few hundred bytes).
const MAX_QUEUE: usize = 1_000_000;

impl AuditSpec {
    pub(super) fn to_config(&self, path: &Path) -> Result<AuditConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE {
            return Err(invalid("audit.queue_capacity", format!("must be from 1 to {MAX_QUEUE}")));
        }
        // 100 years: anything longer is a unit mistake (and would overflow
        // millisecond arithmetic long before it mattered).
        if self.retention_days > 36_500 {
            return Err(invalid("audit.retention_days", "must be at most 36500 (0: no age limit)".into()));
        }
        let sink = match self.sink.trim() {
            "" => None,
            "stdout" => Some(AuditSink::Stdout),
            p => Some(AuditSink::File(resolve_config_path(path, p))),
        };
        Ok(AuditConfig {
            tool_calls: self.tool_calls,
            sink,
            retention: (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400)),
            max_events: self.max_events,
            queue_capacity: self.queue_capacity,
        })
    }
}
