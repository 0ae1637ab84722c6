//! The JSON-lines sink (`[audit] sink`): every event, as the admin API shows
//! it, one object per line, to stdout or appended to a file (created 0600:
//! it names tokens and members), for a SIEM or log shipper to pick up.
//!
//! Written after the store has taken the event (so lines carry the event's
//! id), from the writer task for data-plane events and from the recording
//! call for control-plane events; a line is written whole under a lock, so
//! lines never interleave.

use std::io::Write;
use std::sync::Mutex;

use crate::config::AuditSink;
use crate::store::audit::AuditEvent;

pub struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Sink {
    pub fn open(target: &AuditSink) -> std::io::Result<Sink> {
        let out: Box<dyn Write + Send> = match target {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => {
                let mut o = std::fs::OpenOptions::new();
                o.append(true).create(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                Box::new(o.open(path)?)
            }
        };
        Ok(Sink { out: Mutex::new(out) })
    }

    /// Writes and flushes one line per event. A failed write is logged, not
    /// retried: the store holds the trail; the sink is a copy.
    pub fn write(&self, events: &[AuditEvent]) {
        let mut buf = Vec::with_capacity(events.len() * 256);
        for e in events {
            if serde_json::to_writer(&mut buf, e).is_ok() {
                buf.push(b'\n');
            }
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
            tracing::error!(error = %e, "cannot write to the audit sink");
        }
    }
}
