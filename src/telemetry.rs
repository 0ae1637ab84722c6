//! Tracing set-up and the Prometheus metrics served on the admin listener.
//!
//! Metrics are fixed arrays of atomics sized from the configuration at start,
//! so recording on the hot path is a relaxed add: no lock, no allocation, no
//! map lookup. Label values come from the configuration only (never from a
//! client-supplied slug), so cardinality is bounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::Config;

mod log_targets {
    include!(concat!(env!("OUT_DIR"), "/log_targets.rs"));
}

/// How log lines (and the process's own start/stop lines) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format chosen at start-up (text until [`init_tracing`] ran).
pub fn log_format() -> LogFormat {
    LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks `PORTCULLIS_LOG` and `PORTCULLIS_LOG_FORMAT` (passed in, so tests
/// need not touch the process environment). `EnvFilter` accepts a bare word
/// as a target name, so `verbose` parses and then matches nothing: every log
/// is silently off. A bare word is therefore accepted only as a level or as
/// a target rooted in a crate this binary is built from (`hyper`,
/// `portcullis::gateway`); `target=level` and span directives are left to
/// `EnvFilter`, which rejects what it cannot parse.
pub fn check_log_settings(filter: Option<&str>, format: Option<&str>) -> Result<(String, LogFormat), String> {
    let format = match format.map(str::trim) {
        None | Some("" | "text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(format!(
                "PORTCULLIS_LOG_FORMAT=`{other}` is not a log format; use `text` (the default) or `json`"
            ));
        }
    };
    let filter = filter.map(str::trim).filter(|f| !f.is_empty()).unwrap_or("info").to_string();
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
        return Err(format!(
            "PORTCULLIS_LOG=`{filter}` is not a log filter: {e}; e.g. `info` or `info,portcullis=debug`"
        ));
    }
    for directive in split_directives(&filter) {
        if directive.contains('=') || directive.contains('[') {
            continue;
        }
        let root = directive.split("::").next().unwrap_or_default();
        let known = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) || log_targets::KNOWN_CRATES.contains(&root);
        if !known {
            return Err(format!(
                "PORTCULLIS_LOG: `{directive}` is neither a level ({}) nor a log target (a crate such as `portcullis` or `hyper`, e.g. `portcullis=debug`); as written nothing would be logged",
                LEVELS.join(", ")
            ));
        }
    }
    Ok((filter, format))
}

#[cfg(test)]
mod log_settings_tests {
    use super::*;

    #[test]
    fn levels_known_targets_and_directives_pass_typos_do_not() {
        for ok in [
            "",
            "info",
            "WARN",
            "off",
            "hyper",
            "portcullis::gateway",
            "info,hyper=warn",
            "x=debug",
            "[request{status=401}]=info",
        ] {
            assert!(check_log_settings(Some(ok), None).is_ok(), "{ok}");
        }
        for bad in ["verbose", "info,loud", "info=what"] {
            assert!(check_log_settings(Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(check_log_settings(None, Some("json")).unwrap().1, LogFormat::Json);
        assert_eq!(check_log_settings(None, Some("text")).unwrap().1, LogFormat::Text);
        assert!(check_log_settings(None, Some("JSON-lines")).is_err());
        assert_eq!(split_directives("a,[s{x=1,y=2}]=info,b"), vec!["a", "[s{x=1,y=2}]=info", "b"]);
    }
}

/// Directives are comma-separated, but a span filter may hold commas
/// between its brackets (`[span{a=1,b=2}]`).
fn split_directives(filter: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in filter.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(filter[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(filter[start..].trim());
    out.retain(|d| !d.is_empty());
    out
}

/// Initialises the global tracing subscriber. `PORTCULLIS_LOG` (or `RUST_LOG`)
/// sets the filter, default `info`; `PORTCULLIS_LOG_FORMAT=json` switches to
/// JSON lines. Logs go to stderr so that stdout stays clean for `--json`.
/// Unknown values are an error: a typo must not silently turn logging off.
pub fn init_tracing() -> Result<(), String> {
    let filter = std::env::var("PORTCULLIS_LOG").or_else(|_| std::env::var("RUST_LOG")).ok();
    let format = std::env::var("PORTCULLIS_LOG_FORMAT").ok();
    let (filter, format) = check_log_settings(filter.as_deref(), format.as_deref())?;
    let _ = LOG_FORMAT.set(format);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes only for people, never in log files or collectors.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    // try_init: tests may initialise more than once in one process.
    let _ = if format == LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// A line the process prints about itself (listening, shutting down,
/// stopped, a fatal error) whatever the log filter says: plain text for
/// people, or, with the JSON format, a line shaped like the log lines so that
/// every line on stderr parses.
pub fn announce(level: &str, message: &str) {
    match log_format() {
        LogFormat::Text if level == "ERROR" => eprintln!("error: {message}"),
        LogFormat::Text => eprintln!("portcullis: {message}"),
        LogFormat::Json => {
            let timestamp = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let line = serde_json::json!({
                "timestamp": timestamp,
                "level": level,
                "fields": {"message": message},
                "target": "portcullis",
            });
            eprintln!("{line}");
        }
    }
}

/// HTTP statuses counted individually; anything else is counted as "other".
const STATUSES: [u16; 17] = [200, 201, 202, 204, 400, 401, 403, 404, 405, 406, 408, 413, 415, 429, 502, 503, 504];
/// Upstream latency buckets, seconds.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why authentication failed, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailureReason {
    Missing,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    WrongWorkspace,
    WrongKind,
}

impl AuthFailureReason {
    const ALL: [AuthFailureReason; 7] = [
        AuthFailureReason::Missing,
        AuthFailureReason::Malformed,
        AuthFailureReason::Unknown,
        AuthFailureReason::Revoked,
        AuthFailureReason::Expired,
        AuthFailureReason::WrongWorkspace,
        AuthFailureReason::WrongKind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailureReason::Missing => "missing",
            AuthFailureReason::Malformed => "malformed",
            AuthFailureReason::Unknown => "unknown",
            AuthFailureReason::Revoked => "revoked",
            AuthFailureReason::Expired => "expired",
            AuthFailureReason::WrongWorkspace => "wrong_workspace",
            AuthFailureReason::WrongKind => "wrong_kind",
        }
    }
}

/// Result of an index lookup.
#[derive(Debug, Clone, Copy)]
pub enum IndexLookup {
    Hit,
    Miss,
    NegativeHit,
}

struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

struct WorkspaceMetrics {
    slug: String,
    statuses: [AtomicU64; STATUSES.len() + 1],
    rate_limited: AtomicU64,
    upstream_errors: [AtomicU64; 2],
    /// Upstream bodies that broke off after their head was sent on.
    upstream_body_aborts: AtomicU64,
    servers: Vec<(String, Histogram)>,
    /// What the dashboard's Servers tab shows, one per server.
    health: Vec<ServerHealthCell>,
}

/// One upstream's last known health and tool count, written where the data
/// plane learns them (an answer, a failure, a probe, a merged tools/list).
struct ServerHealthCell {
    /// 0 unknown, 1 up, 2 down.
    state: std::sync::atomic::AtomicU8,
    /// Unix seconds of the last change of `state`.
    at: std::sync::atomic::AtomicI64,
    /// -1: not known (pass-through workspaces do not read tool lists).
    tools: std::sync::atomic::AtomicI64,
}

/// What is known of one upstream (the admin API's `servers` endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStatus {
    /// `"up"`, `"down"` or `"unknown"` (no request or probe yet).
    pub health: &'static str,
    /// Unix seconds since when `health` holds, 0 if nothing was seen.
    pub since: i64,
    pub tools: Option<u64>,
}

impl WorkspaceMetrics {
    fn new(slug: String, servers: Vec<String>) -> Self {
        WorkspaceMetrics {
            slug,
            statuses: Default::default(),
            rate_limited: AtomicU64::new(0),
            upstream_errors: Default::default(),
            upstream_body_aborts: AtomicU64::new(0),
            health: servers
                .iter()
                .map(|_| ServerHealthCell {
                    state: Default::default(),
                    at: Default::default(),
                    tools: std::sync::atomic::AtomicI64::new(-1),
                })
                .collect(),
            servers: servers.into_iter().map(|s| (s, Histogram::new())).collect(),
        }
    }
}

/// Which upstream failure.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamFailure {
    Unavailable = 0,
    Timeout = 1,
}

pub struct Metrics {
    /// One per configured workspace, plus a last one for unknown slugs.
    workspaces: Vec<WorkspaceMetrics>,
    auth_failures: [AtomicU64; AuthFailureReason::ALL.len()],
    index: [AtomicU64; 3],
    store_reads: AtomicU64,
    store_errors: AtomicU64,
    admin_requests: AtomicU64,
    limit_fallbacks: AtomicU64,
    miss_budget_exhausted: AtomicU64,
    /// The audit trail's counters (`crate::audit`).
    pub audit: AuditMetrics,
    usage_folded: AtomicU64,
}

impl Metrics {
    pub fn new(config: &Config) -> Self {
        let mut workspaces: Vec<WorkspaceMetrics> = config
            .workspaces
            .iter()
            .map(|w| WorkspaceMetrics::new(w.slug.clone(), w.servers.iter().map(|s| s.name.clone()).collect()))
            .collect();
        workspaces.push(WorkspaceMetrics::new("_unknown".into(), Vec::new()));
        Metrics {
            workspaces,
            auth_failures: Default::default(),
            index: Default::default(),
            store_reads: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            admin_requests: AtomicU64::new(0),
            limit_fallbacks: AtomicU64::new(0),
            miss_budget_exhausted: AtomicU64::new(0),
            audit: AuditMetrics::default(),
            usage_folded: AtomicU64::new(0),
        }
    }

    fn workspace(&self, index: Option<usize>) -> &WorkspaceMetrics {
        let last = self.workspaces.len() - 1;
        &self.workspaces[index.filter(|&i| i < last).unwrap_or(last)]
    }

    /// A data-plane response; `workspace` is the configuration index, `None`
    /// for an unknown slug.
    pub fn request(&self, workspace: Option<usize>, status: u16) {
        let i = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len());
        self.workspace(workspace).statuses[i].fetch_add(1, Relaxed);
    }

    pub fn auth_failure(&self, reason: AuthFailureReason) {
        self.auth_failures[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rate_limited(&self, workspace: usize) {
        self.workspace(Some(workspace)).rate_limited.fetch_add(1, Relaxed);
    }

    pub fn upstream_latency(&self, workspace: usize, server: usize, d: Duration) {
        if let Some((_, h)) = self.workspace(Some(workspace)).servers.get(server) {
            h.observe(d);
        }
    }

    /// An upstream answered (`up`) or could not be reached. On the data
    /// plane's path: one relaxed load when nothing changed; the clock is
    /// read and the cell written only on a change.
    pub fn server_health(&self, workspace: usize, server: usize, up: bool) {
        let Some(cell) = self.workspace(Some(workspace)).health.get(server) else {
            return;
        };
        let state = if up { 1 } else { 2 };
        if cell.state.load(Relaxed) != state {
            cell.state.store(state, Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            cell.at.store(now, Relaxed);
        }
    }

    /// The number of tools an upstream listed last.
    pub fn server_tools(&self, workspace: usize, server: usize, tools: usize) {
        if let Some(cell) = self.workspace(Some(workspace)).health.get(server) {
            cell.tools.store(tools as i64, Relaxed);
        }
    }

    /// What is known of server `server` of workspace `workspace`.
    pub fn server_status(&self, workspace: usize, server: usize) -> ServerStatus {
        let Some(cell) = self.workspace(Some(workspace)).health.get(server) else {
            return ServerStatus {
                health: "unknown",
                since: 0,
                tools: None,
            };
        };
        ServerStatus {
            health: match cell.state.load(Relaxed) {
                1 => "up",
                2 => "down",
                _ => "unknown",
            },
            since: cell.at.load(Relaxed),
            tools: u64::try_from(cell.tools.load(Relaxed)).ok(),
        }
    }

    /// An upstream response body broke off after its head was passed on.
    pub fn upstream_body_aborted(&self, workspace: usize) {
        self.workspace(Some(workspace)).upstream_body_aborts.fetch_add(1, Relaxed);
    }

    pub fn upstream_failure(&self, workspace: usize, kind: UpstreamFailure) {
        self.workspace(Some(workspace)).upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn index_lookup(&self, result: IndexLookup) {
        self.index[result as usize].fetch_add(1, Relaxed);
    }

    pub fn store_read(&self, ok: bool) {
        self.store_reads.fetch_add(1, Relaxed);
        if !ok {
            self.store_errors.fetch_add(1, Relaxed);
        }
    }

    /// The cluster limiter failed and the local fallback decided.
    pub fn limit_fallback(&self) {
        self.limit_fallbacks.fetch_add(1, Relaxed);
    }

    /// A miss was refused a store read: the per-second budget is spent.
    pub fn miss_budget_exhausted(&self) {
        self.miss_budget_exhausted.fetch_add(1, Relaxed);
    }

    /// Requests counted under "other" in usage analytics (`usage`).
    pub fn usage_folded(&self, n: u64) {
        self.usage_folded.fetch_add(n, Relaxed);
    }

    pub fn admin_request(&self) {
        self.admin_requests.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, index_entries: usize, limiter_keys: usize) -> String {
        let mut o = String::with_capacity(4096);
        o.push_str(&crate::build_info::metric());
        o.push_str("# HELP portcullis_requests_total Data-plane responses by workspace and HTTP status.\n# TYPE portcullis_requests_total counter\n");
        for w in &self.workspaces {
            for (i, c) in w.statuses.iter().enumerate() {
                let v = c.load(Relaxed);
                if v > 0 {
                    let status = STATUSES.get(i).map(u16::to_string).unwrap_or_else(|| "other".into());
                    let _ = writeln!(o, "portcullis_requests_total{{workspace=\"{}\",status=\"{status}\"}} {v}", w.slug);
                }
            }
        }
        o.push_str(
            "# HELP portcullis_auth_failures_total Rejected credentials by reason.\n# TYPE portcullis_auth_failures_total counter\n",
        );
        for r in AuthFailureReason::ALL {
            let _ = writeln!(
                o,
                "portcullis_auth_failures_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.auth_failures[r as usize].load(Relaxed)
            );
        }
        o.push_str("# HELP portcullis_rate_limited_total Requests refused by the per-token rate limit.\n# TYPE portcullis_rate_limited_total counter\n");
        for w in &self.workspaces[..self.workspaces.len() - 1] {
            let _ = writeln!(
                o,
                "portcullis_rate_limited_total{{workspace=\"{}\"}} {}",
                w.slug,
                w.rate_limited.load(Relaxed)
            );
        }
        o.push_str("# HELP portcullis_upstream_errors_total Upstream failures by kind.\n# TYPE portcullis_upstream_errors_total counter\n");
        for w in &self.workspaces[..self.workspaces.len() - 1] {
            for (i, kind) in ["unavailable", "timeout"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "portcullis_upstream_errors_total{{workspace=\"{}\",kind=\"{kind}\"}} {}",
                    w.slug,
                    w.upstream_errors[i].load(Relaxed)
                );
            }
        }
        o.push_str("# HELP portcullis_upstream_body_aborts_total Upstream response bodies that broke off after the response head was passed on (the client saw a cut-short answer).\n# TYPE portcullis_upstream_body_aborts_total counter\n");
        for w in &self.workspaces[..self.workspaces.len() - 1] {
            let _ = writeln!(
                o,
                "portcullis_upstream_body_aborts_total{{workspace=\"{}\"}} {}",
                w.slug,
                w.upstream_body_aborts.load(Relaxed)
            );
        }
        o.push_str("# HELP portcullis_upstream_response_seconds Time from forwarding to the upstream's response headers.\n# TYPE portcullis_upstream_response_seconds histogram\n");
        for w in &self.workspaces {
            for (server, h) in &w.servers {
                let labels = format!("workspace=\"{}\",server=\"{server}\"", w.slug);
                let mut cumulative = 0;
                for (i, b) in BUCKETS.iter().enumerate() {
                    cumulative += h.buckets[i].load(Relaxed);
                    let _ = writeln!(o, "portcullis_upstream_response_seconds_bucket{{{labels},le=\"{b}\"}} {cumulative}");
                }
                let count = h.count.load(Relaxed);
                let _ = writeln!(o, "portcullis_upstream_response_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
                let _ = writeln!(
                    o,
                    "portcullis_upstream_response_seconds_sum{{{labels}}} {}",
                    h.sum_micros.load(Relaxed) as f64 / 1e6
                );
                let _ = writeln!(o, "portcullis_upstream_response_seconds_count{{{labels}}} {count}");
            }
        }
        o.push_str(
            "# HELP portcullis_index_lookups_total Token hash index lookups by result.\n# TYPE portcullis_index_lookups_total counter\n",
        );
        for (i, r) in ["hit", "miss", "negative_hit"].iter().enumerate() {
            let _ = writeln!(
                o,
                "portcullis_index_lookups_total{{result=\"{r}\"}} {}",
                self.index[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP portcullis_store_reads_total Store reads on index misses.\n# TYPE portcullis_store_reads_total counter\nportcullis_store_reads_total {}",
            self.store_reads.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_store_errors_total Failed store reads on index misses.\n# TYPE portcullis_store_errors_total counter\nportcullis_store_errors_total {}",
            self.store_errors.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_admin_requests_total Control-plane requests.\n# TYPE portcullis_admin_requests_total counter\nportcullis_admin_requests_total {}",
            self.admin_requests.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_index_entries Tokens held in the in-memory index.\n# TYPE portcullis_index_entries gauge\nportcullis_index_entries {index_entries}"
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_limiter_keys Tokens tracked by the rate limiter.\n# TYPE portcullis_limiter_keys gauge\nportcullis_limiter_keys {limiter_keys}"
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_rate_limit_fallbacks_total Requests limited locally because the cluster limiter was unreachable.\n# TYPE portcullis_rate_limit_fallbacks_total counter\nportcullis_rate_limit_fallbacks_total {}",
            self.limit_fallbacks.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_store_miss_budget_exhausted_total Index misses refused (503) because the store-read budget was spent.\n# TYPE portcullis_store_miss_budget_exhausted_total counter\nportcullis_store_miss_budget_exhausted_total {}",
            self.miss_budget_exhausted.load(Relaxed)
        );
        self.audit.render(&mut o);
        let _ = writeln!(
            o,
            "# HELP portcullis_usage_folded_total Requests counted under \"other\" in usage analytics (a cardinality bound, a full counter table, or a tool name that failed the checks).\n# TYPE portcullis_usage_folded_total counter\nportcullis_usage_folded_total {}",
            self.usage_folded.load(Relaxed)
        );
        o
    }
}

/// The audit trail's counters: events written to the store, data-plane
/// events dropped because the writer's queue was full, and failed writes.
#[derive(Default)]
pub struct AuditMetrics {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
}

impl AuditMetrics {
    fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP portcullis_audit_events_total Audit events written to the store.\n# TYPE portcullis_audit_events_total counter\nportcullis_audit_events_total {}",
            self.written.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_audit_dropped_total Data-plane audit events dropped because the audit queue was full.\n# TYPE portcullis_audit_dropped_total counter\nportcullis_audit_dropped_total {}",
            self.dropped.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP portcullis_audit_write_errors_total Audit events the store failed to take (logged at error level).\n# TYPE portcullis_audit_write_errors_total counter\nportcullis_audit_write_errors_total {}",
            self.write_errors.load(Relaxed)
        );
    }
}
