//! `portcullis audit tail`: the latest audit events through the admin API,
//! oldest first like `tail`, and with `--follow` the new ones as they come
//! (polling with `from` = the newest event seen, minus a window that
//! catches events written a little out of order, de-duplicated by id).

use std::collections::HashMap;
use std::time::Duration;

use clap::Subcommand;
use http::Method;
use serde_json::Value;

use super::client::ApiClient;
use super::{AdminApiArgs, CliError, CliResult, output};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print the latest audit events, one line each (oldest first); with --follow keep printing new ones.
    Tail {
        /// Only this workspace's events (required for a workspace-scoped admin token; without it, every workspace's, through GET /v1/audit).
        #[arg(long)]
        workspace: Option<String>,
        /// Keep polling for new events until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only events of this type (token_created, token_revoked, tool_call, revoked_token_refused, …).
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// How many of the latest events to print first (1-200).
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: usize,
        /// Seconds between polls with --follow.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Print each event as one JSON object per line (JSON lines).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(api: &AdminApiArgs, cmd: AuditCommand) -> CliResult {
    let AuditCommand::Tail {
        workspace,
        follow,
        kind,
        lines,
        interval,
        json,
    } = cmd;
    if !(1..=200).contains(&lines) {
        return Err(CliError::usage("--lines must be from 1 to 200"));
    }
    if !(interval.is_finite() && (0.1..=3600.0).contains(&interval)) {
        return Err(CliError::usage("--interval must be from 0.1 to 3600 seconds"));
    }
    let client = ApiClient::admin(&api.admin_url)?;
    let path = match &workspace {
        Some(ws) => format!("/v1/workspaces/{}/audit", encode(ws)),
        None => "/v1/audit".to_owned(),
    };
    let filter = kind.map(|k| format!("&type={}", encode(&k))).unwrap_or_default();
    let (_, first) = client
        .expect(Method::GET, &format!("{path}?page_size={lines}{filter}"), None)
        .await?;
    let mut events = events_of(&first);
    events.reverse();
    let mut seen = Seen::default();
    for e in &events {
        seen.add(e);
        print(e, json);
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
        let from = seen.newest.map(|at| at - Seen::WINDOW_MS).unwrap_or(0).max(0);
        let mut cursor: Option<String> = None;
        let mut new = Vec::new();
        // Every page since `from`, newest first; bounded by what arrived
        // since the last poll (plus the window).
        loop {
            let mut q = format!("{path}?page_size=200&from={}{filter}", encode(&crate::audit::format_ms(from)));
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", encode(c)));
            }
            let (_, page) = client.expect(Method::GET, &q, None).await?;
            new.extend(events_of(&page).into_iter().filter(|e| !seen.contains(e)));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        new.reverse();
        for e in &new {
            seen.add(e);
            print(e, json);
        }
        seen.prune();
    }
}

fn events_of(page: &Value) -> Vec<Value> {
    page["events"].as_array().cloned().unwrap_or_default()
}

/// Ids printed within the overlap window, so that no event is printed twice.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, i64>,
    newest: Option<i64>,
}

impl Seen {
    /// How far back each poll looks again: events are ordered by when they
    /// were written, and a data-plane event is written up to a batch after
    /// its `at`.
    const WINDOW_MS: i64 = 60_000;

    fn at(e: &Value) -> i64 {
        e["at"]
            .as_str()
            .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
            .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    fn add(&mut self, e: &Value) {
        let at = Self::at(e);
        self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        if let Some(id) = e["id"].as_str() {
            self.ids.insert(id.to_owned(), at);
        }
    }

    fn contains(&self, e: &Value) -> bool {
        e["id"].as_str().is_some_and(|id| self.ids.contains_key(id))
    }

    /// Forgets ids older than twice the window: bounded memory however
    /// long `--follow` runs.
    fn prune(&mut self) {
        if let Some(n) = self.newest {
            self.ids.retain(|_, at| *at >= n - 2 * Self::WINDOW_MS);
        }
    }
}

fn print(e: &Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).expect("json"));
        return;
    }
    let mut line = format!("{}  {}", output::cell(&e["at"]), output::cell(&e["type"]));
    for (key, label) in [
        ("workspace", "workspace"),
        ("actor", "actor"),
        ("token_id", "token"),
        ("token_name", "name"),
        ("member_id", "member"),
        ("server", "server"),
        ("tool", "tool"),
        ("status", "status"),
        ("duration_ms", "ms"),
        ("request_id", "request"),
    ] {
        if !e[key].is_null() {
            line.push_str(&format!("  {label}={}", output::cell(&e[key])));
        }
    }
    println!("{line}");
}

/// Percent-encodes a query or path value (everything but unreserved
/// characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_and_the_overlap_is_deduplicated() {
        assert_eq!(encode("2026-01-01T00:00:00.000Z"), "2026-01-01T00%3A00%3A00.000Z");
        assert_eq!(encode("a b&c"), "a%20b%26c");
        let mut seen = Seen::default();
        let e = serde_json::json!({"id": "evt_1", "at": "2026-01-01T00:00:00.500Z"});
        assert!(!seen.contains(&e));
        seen.add(&e);
        assert!(seen.contains(&e));
        assert_eq!(seen.newest, Some(1_767_225_600_500));
    }
}
