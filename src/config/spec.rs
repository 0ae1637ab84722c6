//! The file format: the `*Spec` types mirror the TOML file, every key
//! documented, and every struct rejects unknown keys so typos fail loudly.

use super::*;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub store: StoreSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub dashboard: DashboardSpec,
    #[serde(default)]
    pub usage: UsageSpec,
    #[serde(default)]
    pub auth: AuthSpec,
    #[serde(default)]
    pub oauth: OAuthSpec,
    #[serde(default)]
    pub workspaces: Vec<WorkspaceSpec>,
    #[serde(default)]
    pub audit: AuditSpec,
}

/// `[server]`: listeners and request handling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSpec {
    /// Data-plane listener (`/ws/{slug}`).
    pub listen: String,
    /// Control-plane listener (admin API, metrics, health).
    pub admin_listen: String,
    /// Base URL clients use to reach the data plane; goes into `mcp_json`.
    pub public_url: String,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: u64,
    /// A client must send its request headers within this time.
    pub header_read_timeout_ms: u64,
    /// A client must send its whole request body within this time.
    pub body_read_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests and SSE streams may finish.
    pub shutdown_grace_ms: u64,
    /// Browser origins allowed to call the data plane. Requests with an
    /// `Origin` header not listed here are refused (DNS-rebinding defence).
    pub allowed_origins: Vec<String>,
    /// How often `last_used_at` is written to the store (at most 60 s).
    pub last_used_flush_ms: u64,
    /// How often the store's revocation log is polled, so that revocations made
    /// by another process (e.g. the offline CLI) reach this one.
    pub revocation_poll_ms: u64,
    /// An idle event stream gets a `: keep-alive` comment this often, so load
    /// balancers do not cut it. 0 disables.
    pub sse_keepalive_ms: u64,
    /// Store reads per second allowed for tokens not in the in-memory index
    /// (0: unlimited). Beyond it such requests get 503; cached tokens are
    /// unaffected. Bounds the store load of a flood of random tokens.
    pub store_miss_reads_per_second: u32,
    /// Keys that seal the session ids of workspaces with several servers:
    /// 64 hex characters (32 bytes) each, newest first. The first seals new
    /// sessions; the others only open sessions sealed before a rotation.
    /// Required when any workspace has more than one server.
    pub session_keys: Vec<String>,
    /// Data-plane threads, each with its own single-threaded runtime,
    /// listening socket and upstream connection pool (0: one per CPU core).
    pub data_plane_threads: usize,
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            public_url: String::new(),
            max_body_bytes: 4 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            shutdown_grace_ms: 30_000,
            allowed_origins: Vec::new(),
            last_used_flush_ms: 30_000,
            revocation_poll_ms: 250,
            sse_keepalive_ms: 15_000,
            store_miss_reads_per_second: 2000,
            session_keys: Vec::new(),
            data_plane_threads: 0,
        }
    }
}

/// `[store]`: where tokens live.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSpec {
    /// `"sqlite"` (embedded, single node) or `"redis"` (shared, cluster mode).
    pub backend: String,
    /// SQLite database file; created with its directory if missing.
    pub path: String,
    /// Redis URL (cluster mode): `redis://127.0.0.1:6379/0` (one primary),
    /// `redis+sentinel://s1:26379,s2:26379/mymaster` (Sentinel) or
    /// `redis+cluster://n1:7000,n2:7001` (Redis Cluster); docs/redis.md.
    pub url: Option<String>,
    /// Every Redis command fails after this long (and the request fails closed).
    pub timeout_ms: u64,
    /// Cluster mode: how long, at most, a token may still be accepted from the
    /// in-memory index while revocation state cannot be confirmed (Redis
    /// unreachable or the invalidation subscription down). 0 = fail closed at
    /// once. This is the longest a revoked token may be accepted in an outage.
    pub revocation_grace_ms: u64,
    /// Replicas that must have a revocation before a revoke returns
    /// (`WAIT n timeout_ms` after the revoke script); fewer in time fails the
    /// revoke (503, safe to retry). 0 = do not wait. With Sentinel or Cluster,
    /// 1 makes an acknowledged revocation survive the loss of the primary.
    pub wait_replicas: u32,
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec {
            backend: "sqlite".into(),
            path: "data/portcullis.db".into(),
            url: None,
            timeout_ms: 1000,
            revocation_grace_ms: 0,
            wait_replicas: 0,
        }
    }
}

/// `[limits]`: default per-token rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// Requests per minute per token (GCRA: a burst of this many, refilled evenly).
    pub requests_per_minute: u32,
    /// `"instance"`: each instance enforces the limit on its own (N instances
    /// admit up to N x the limit). `"cluster"`: one limit shared by all
    /// instances, kept in Redis (requires the redis store).
    pub scope: String,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            requests_per_minute: 120,
            scope: "instance".into(),
        }
    }
}

/// `[usage]`: per-member usage analytics (counted in memory, flushed to the
/// store; docs/admin-api.md, "Usage").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSpec {
    /// Count requests per token, member, server and tool at all.
    pub enabled: bool,
    /// How often counts are written to the store (10 ms to 30 s); counts
    /// reach the store at most two intervals after the request.
    pub flush_interval_ms: u64,
    /// Minute buckets are kept this long (hours).
    pub minute_retention_hours: u64,
    /// Hour buckets (and the day buckets made from them) are kept this long (days).
    pub hour_retention_days: u64,
    /// Distinct (token, server, tool) counters held in memory between two
    /// flushes; requests beyond them are counted under "other".
    pub max_keys: usize,
    /// Distinct tool (or method) names per server and day; more are "other".
    pub max_tools_per_server: usize,
    /// Distinct members per workspace and day; more are "other".
    pub max_members_per_workspace: usize,
    /// Distinct tokens per workspace and day; more are "other".
    pub max_tokens_per_workspace: usize,
}

impl Default for UsageSpec {
    fn default() -> Self {
        UsageSpec {
            enabled: true,
            flush_interval_ms: 5_000,
            minute_retention_hours: 48,
            hour_retention_days: 90,
            max_keys: 4096,
            max_tools_per_server: 200,
            max_members_per_workspace: 1000,
            max_tokens_per_workspace: 10_000,
        }
    }
}

/// `[[workspaces]]`: one URL, `/ws/{slug}`, and its upstream servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    pub slug: String,
    /// Overrides `limits.requests_per_minute` for this workspace's tokens.
    pub requests_per_minute: Option<u32>,
    /// With several servers: `"fail_open"` (default) leaves a failing
    /// server's tools out and keeps serving the others; `"fail_closed"` fails
    /// the request instead.
    pub failure_mode: Option<String>,
    #[serde(default)]
    pub servers: Vec<ServerEntrySpec>,
}

/// `[[workspaces.servers]]`: one upstream MCP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntrySpec {
    pub name: String,
    /// Streamable HTTP endpoint of the upstream, `http://host:port/path`.
    pub url: String,
    /// Headers added to every upstream request (e.g. the upstream's own API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for the upstream's response headers.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Time allowed to open a TCP connection to the upstream.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

pub(super) fn default_timeout_ms() -> u64 {
    30_000
}

pub(super) fn default_connect_timeout_ms() -> u64 {
    5_000
}
