//! Configuration: the TOML file's `*Spec` types, validation, and conversion
//! into the runtime [`Config`].
//!
//! Loading is two passes. The first deserializes the raw text so that a typo
//! (an unknown key) is reported with its line and column before anything else;
//! the second expands `${NAME}` / `${NAME:-default}` in every string and
//! deserializes again. Expanding after parsing means a `${...}` inside a comment
//! is never looked at and a value cannot break the TOML syntax.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

/// Default location of the example configuration.
pub const DEFAULT_CONFIG_PATH: &str = "config/portcullis.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: environment variable {var} is not set (referenced by `{key}`); export it or use ${{{var}:-default}}")]
    MissingEnv { path: PathBuf, var: String, key: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

// ---------------------------------------------------------------------------
// The file format. Every struct rejects unknown keys so typos fail loudly.
// ---------------------------------------------------------------------------

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
    pub workspaces: Vec<WorkspaceSpec>,
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
    /// Redis URL (cluster mode), e.g. `redis://127.0.0.1:6379/0`.
    pub url: Option<String>,
    /// Every Redis command fails after this long (and the request fails closed).
    pub timeout_ms: u64,
    /// Cluster mode: how long, at most, a token may still be accepted from the
    /// in-memory index while revocation state cannot be confirmed (Redis
    /// unreachable or the invalidation subscription down). 0 = fail closed at
    /// once. This is the longest a revoked token may be accepted in an outage.
    pub revocation_grace_ms: u64,
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec {
            backend: "sqlite".into(),
            path: "data/portcullis.db".into(),
            url: None,
            timeout_ms: 1000,
            revocation_grace_ms: 0,
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

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}

// ---------------------------------------------------------------------------
// Runtime types.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from (for messages).
    pub source: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub workspaces: Vec<Arc<Workspace>>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub public_url: String,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub allowed_origins: HashSet<String>,
    pub last_used_flush: Duration,
    pub revocation_poll: Duration,
    pub sse_keepalive: Duration,
    pub store_miss_reads_per_second: u32,
    /// Decoded `session_keys`, newest first. Secret: never logged.
    pub session_keys: Vec<[u8; 32]>,
    /// Resolved `data_plane_threads`: at least 1.
    pub data_plane_threads: usize,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
    },
    Redis {
        url: String,
        timeout: Duration,
        revocation_grace: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Instance,
    Cluster,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub requests_per_minute: u32,
    pub scope: LimitScope,
}

#[derive(Debug)]
pub struct Workspace {
    pub slug: String,
    /// Position in the configuration; used to index per-workspace metrics.
    pub index: usize,
    pub requests_per_minute: Option<u32>,
    pub failure_mode: FailureMode,
    pub servers: Vec<Arc<UpstreamServer>>,
}

impl Workspace {
    /// Several servers: Portcullis is the MCP server for this workspace
    /// (contract §7); one server: a transparent pass-through.
    pub fn is_aggregate(&self) -> bool {
        self.servers.len() > 1
    }
}

/// What a workspace with several servers does when one of them fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    FailOpen,
    FailClosed,
}

#[derive(Debug)]
pub struct UpstreamServer {
    pub name: String,
    pub url: Uri,
    /// Secret-bearing values: never logged, never returned by the admin API.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Config {
    /// Reads, expands and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with a custom environment lookup (tests and the
    /// demo command, which supplies defaults without mutating the process env).
    pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = read_config(path)?;
        Self::from_toml_with_overrides(path, &text, env, &process_overrides())
    }

    /// Parses `text` without `PORTCULLIS__…` overrides (tests, benches).
    pub fn from_toml(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Self::from_toml_with_overrides(path, text, env, &[])
    }

    /// Parses `text`, applies `PORTCULLIS__SECTION__KEY=value` overrides
    /// (env > file), expands `${NAME}` everywhere and validates everything.
    /// This is the strict load of `serve` and `check-config`.
    pub fn from_toml_with_overrides(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut value = parse_checked(path, text)?;
        apply_env_overrides(path, &mut value, overrides)?;
        // Every value read from the environment, so that no error message
        // below can show one (a password in a URL, a key in a header).
        let expanded = expand_env_at(path, &mut value, "", env)?;
        let hide = |e: ConfigError| hide_expanded(e, &expanded);
        let spec: ConfigSpec = value.try_into().map_err(|e| parse_error(path, e)).map_err(hide)?;
        spec.into_config(path).map_err(hide)
    }

    pub fn workspace(&self, slug: &str) -> Option<&Arc<Workspace>> {
        self.workspaces.iter().find(|w| w.slug == slug)
    }

    /// The rate limit in force for a token, in requests per minute.
    pub fn requests_per_minute(&self, workspace: Option<&Workspace>, token_override: Option<u32>) -> u32 {
        token_override
            .or_else(|| workspace.and_then(|w| w.requests_per_minute))
            .unwrap_or(self.limits.requests_per_minute)
    }
}

impl ConfigSpec {
    fn into_config(self, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse()
                .map_err(|_| invalid(key, format!("`{v}` is not a socket address like 127.0.0.1:8080")))
        };
        let s = &self.server;
        let listen = addr("server.listen", &s.listen)?;
        let admin_listen = addr("server.admin_listen", &s.admin_listen)?;
        let mut session_keys = Vec::new();
        for (i, k) in s.session_keys.iter().enumerate() {
            session_keys.push(decode_key(k).ok_or_else(|| {
                invalid(
                    &format!("server.session_keys[{i}]"),
                    "must be 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`".into(),
                )
            })?);
        }
        let public_url = if s.public_url.is_empty() {
            format!("http://{listen}")
        } else {
            s.public_url.trim_end_matches('/').to_string()
        };
        match public_url.parse::<Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => {
                return Err(invalid(
                    "server.public_url",
                    format!("`{}` is not an http(s) URL", redact_url(&public_url)),
                ));
            }
        }
        if s.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0".into()));
        }
        for (key, v) in [
            ("server.header_read_timeout_ms", s.header_read_timeout_ms),
            ("server.body_read_timeout_ms", s.body_read_timeout_ms),
            ("server.revocation_poll_ms", s.revocation_poll_ms),
            ("server.last_used_flush_ms", s.last_used_flush_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if s.last_used_flush_ms > 60_000 {
            return Err(invalid(
                "server.last_used_flush_ms",
                "must be at most 60000 (last_used_at may lag by at most 60 s)".into(),
            ));
        }
        // Each thread holds a listening socket, a runtime and an upstream
        // pool; far more threads than cores only adds context switches.
        if s.data_plane_threads > 1024 {
            return Err(invalid(
                "server.data_plane_threads",
                "must be at most 1024 (0: one per CPU core)".into(),
            ));
        }
        let data_plane_threads = match s.data_plane_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for o in &s.allowed_origins {
            if o.ends_with('/') || !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(invalid(
                    "server.allowed_origins",
                    format!("`{o}` is not an origin like https://app.example.com"),
                ));
            }
        }

        let store = self.store.to_store_config(path)?;
        check_listeners_distinct(path, listen, admin_listen)?;

        if self.limits.requests_per_minute == 0 {
            return Err(invalid("limits.requests_per_minute", "must be greater than 0".into()));
        }
        let scope = match self.limits.scope.as_str() {
            "instance" => LimitScope::Instance,
            "cluster" if matches!(store, StoreConfig::Redis { .. }) => LimitScope::Cluster,
            "cluster" => {
                return Err(invalid(
                    "limits.scope",
                    "\"cluster\" needs the redis store (store.backend = \"redis\")".into(),
                ));
            }
            other => {
                return Err(invalid(
                    "limits.scope",
                    format!("unknown scope `{other}`; expected \"instance\" or \"cluster\""),
                ));
            }
        };

        let mut workspaces = Vec::with_capacity(self.workspaces.len());
        let mut slugs = HashSet::new();
        for (i, ws) in self.workspaces.into_iter().enumerate() {
            let key = format!("workspaces[{i}]");
            if !is_valid_slug(&ws.slug) {
                return Err(invalid(
                    &format!("{key}.slug"),
                    format!(
                        "`{}` must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                        ws.slug
                    ),
                ));
            }
            if !slugs.insert(ws.slug.clone()) {
                return Err(invalid(&format!("{key}.slug"), format!("workspace `{}` is defined twice", ws.slug)));
            }
            if ws.requests_per_minute == Some(0) {
                return Err(invalid(&format!("{key}.requests_per_minute"), "must be greater than 0".into()));
            }
            if ws.servers.is_empty() {
                return Err(invalid(
                    &format!("{key}.servers"),
                    format!("workspace `{}` needs at least one [[workspaces.servers]] entry", ws.slug),
                ));
            }
            if ws.servers.len() > 1 && session_keys.is_empty() {
                return Err(invalid(
                    "server.session_keys",
                    format!(
                        "workspace `{}` has {} servers, so its session ids are sealed with a key: set server.session_keys = [\"<64 hex characters>\"] (e.g. from `openssl rand -hex 32`)",
                        ws.slug,
                        ws.servers.len()
                    ),
                ));
            }
            let failure_mode = match ws.failure_mode.as_deref() {
                None | Some("fail_open") => FailureMode::FailOpen,
                Some("fail_closed") => FailureMode::FailClosed,
                Some(other) => {
                    return Err(invalid(
                        &format!("{key}.failure_mode"),
                        format!("`{other}` must be \"fail_open\" or \"fail_closed\""),
                    ));
                }
            };
            let mut names = HashSet::new();
            let mut servers = Vec::new();
            for (j, srv) in ws.servers.into_iter().enumerate() {
                let skey = format!("{key}.servers[{j}]");
                if !is_valid_server_name(&srv.name) {
                    return Err(invalid(
                        &format!("{skey}.name"),
                        format!(
                            "`{}` must be 1-32 characters of A-Z, a-z, 0-9, '-' and '_', without '__' and not starting or ending with '_'",
                            srv.name
                        ),
                    ));
                }
                if !names.insert(srv.name.clone()) {
                    return Err(invalid(&format!("{skey}.name"), format!("server `{}` is defined twice", srv.name)));
                }
                let url: Uri = srv
                    .url
                    .parse()
                    .map_err(|_| invalid(&format!("{skey}.url"), format!("`{}` is not a URL", redact_url(&srv.url))))?;
                check_upstream_port(path, &format!("{skey}.url"), &url)?;
                match url.scheme_str() {
                    Some("http") if url.host().is_some() => {}
                    Some("https") => return Err(invalid(
                        &format!("{skey}.url"),
                        "https upstreams are not supported yet; terminate TLS in front of the upstream or use http on a private network"
                            .into(),
                    )),
                    _ => {
                        return Err(invalid(
                            &format!("{skey}.url"),
                            format!("`{}` must be an http:// URL", redact_url(&srv.url)),
                        ));
                    }
                }
                let mut headers = Vec::new();
                for (name, value) in &srv.headers {
                    let hn = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(&format!("{skey}.headers"), format!("`{name}` is not a valid header name")))?;
                    if is_managed_header(&hn) {
                        return Err(invalid(
                            &format!("{skey}.headers"),
                            format!("`{name}` is set by the gateway and cannot be configured"),
                        ));
                    }
                    let mut hv = HeaderValue::from_str(value).map_err(|_| {
                        invalid(
                            &format!("{skey}.headers.{name}"),
                            "value contains characters not allowed in a header".into(),
                        )
                    })?;
                    hv.set_sensitive(true);
                    headers.push((hn, hv));
                }
                if srv.timeout_ms == 0 || srv.connect_timeout_ms == 0 {
                    return Err(invalid(&skey, "timeout_ms and connect_timeout_ms must be greater than 0".into()));
                }
                servers.push(Arc::new(UpstreamServer {
                    name: srv.name,
                    url,
                    headers,
                    timeout: Duration::from_millis(srv.timeout_ms),
                    connect_timeout: Duration::from_millis(srv.connect_timeout_ms),
                }));
            }
            workspaces.push(Arc::new(Workspace {
                slug: ws.slug,
                index: i,
                requests_per_minute: ws.requests_per_minute,
                failure_mode,
                servers,
            }));
        }

        Ok(Config {
            source: path.to_owned(),
            server: ServerConfig {
                listen,
                admin_listen,
                public_url,
                max_body_bytes: s.max_body_bytes,
                header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
                body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
                shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
                allowed_origins: s.allowed_origins.iter().cloned().collect(),
                last_used_flush: Duration::from_millis(s.last_used_flush_ms),
                revocation_poll: Duration::from_millis(s.revocation_poll_ms),
                sse_keepalive: Duration::from_millis(s.sse_keepalive_ms),
                store_miss_reads_per_second: s.store_miss_reads_per_second,
                session_keys,
                data_plane_threads,
            },
            store,
            limits: LimitsConfig {
                requests_per_minute: self.limits.requests_per_minute,
                scope,
            },
            workspaces,
        })
    }
}

// ---------------------------------------------------------------------------
// Loading helpers: reading, parsing, overrides and expansion, each its own
// step so that a command can take only the steps it needs.
// ---------------------------------------------------------------------------

fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_error(path: &Path, e: toml::de::Error) -> ConfigError {
    ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_string(),
    }
}

/// Pass 1: structure and unknown keys, reported with their line numbers;
/// then the same text as a value tree for overrides and expansion.
fn parse_checked(path: &Path, text: &str) -> Result<toml::Value, ConfigError> {
    toml::from_str::<ConfigSpec>(text).map_err(|e| parse_error(path, e))?;
    toml::from_str(text).map_err(|e| parse_error(path, e))
}

/// Expands `${NAME}` in every string under `value` (whose dotted key is `key`).
/// Returns each value read from the environment with its variable's name,
/// for [`hide_expanded`].
fn expand_env_at(
    path: &Path,
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let expanded = std::cell::RefCell::new(Vec::new());
    expand_env(value, key, &|var, key| {
        let v = env(var).ok_or_else(|| ConfigError::MissingEnv {
            path: path.to_owned(),
            var: var.to_owned(),
            key: key.to_owned(),
        })?;
        expanded.borrow_mut().push((v.clone(), var.to_owned()));
        Ok(v)
    })
    .map_err(|e| match e {
        ExpandError::Missing(err) => err,
        ExpandError::Syntax { key, message } => ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        },
    })?;
    Ok(expanded.into_inner())
}

/// Prefix of the environment variables that override configuration keys:
/// `PORTCULLIS__SERVER__LISTEN` sets `server.listen`.
pub const ENV_OVERRIDE_PREFIX: &str = "PORTCULLIS__";

/// The `PORTCULLIS__…` variables of this process, sorted so that the result
/// does not depend on the environment's order.
pub fn process_overrides() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_OVERRIDE_PREFIX)).collect();
    v.sort();
    v
}

/// Applies `PORTCULLIS__A__B__C=value` as `a.b.c = value` (env > file).
///
/// Segments are lower-cased; a numeric segment indexes an existing array
/// (`PORTCULLIS__WORKSPACES__0__SERVERS__0__URL`); a table key that exists
/// with another case is matched case-insensitively (header names). The value
/// replaces a string as a string; otherwise it is read as a TOML value when
/// it parses as one (`8080`, `true`, `["https://a.example"]`), else as a
/// string. New array elements cannot be created this way: the file defines
/// the shape, the environment changes values.
fn apply_env_overrides(path: &Path, value: &mut toml::Value, overrides: &[(String, String)]) -> Result<(), ConfigError> {
    for (var, raw) in overrides {
        let bad = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: var.clone(),
            message,
        };
        let rest = var.strip_prefix(ENV_OVERRIDE_PREFIX).unwrap_or(var);
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(bad("is not of the form PORTCULLIS__SECTION__KEY".into()));
        }
        let mut cur = &mut *value;
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            cur = match cur {
                toml::Value::Array(items) => {
                    let idx: usize = seg
                        .parse()
                        .map_err(|_| bad(format!("`{seg}` must be an index into the array defined in the file")))?;
                    let len = items.len();
                    items
                        .get_mut(idx)
                        .ok_or_else(|| bad(format!("index {idx} is past the {len} element(s) the file defines")))?
                }
                toml::Value::Table(t) => {
                    let key = t
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(seg))
                        .cloned()
                        .unwrap_or_else(|| seg.clone());
                    if last {
                        let new = override_value(t.get(&key), raw);
                        t.insert(key, new);
                        break;
                    }
                    t.entry(key).or_insert_with(|| toml::Value::Table(Default::default()))
                }
                _ => return Err(bad(format!("`{seg}` is below a value that is not a table or an array"))),
            };
            if last {
                *cur = override_value(Some(cur), raw);
            }
        }
    }
    Ok(())
}

fn override_value(existing: Option<&toml::Value>, raw: &str) -> toml::Value {
    if matches!(existing, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_owned());
    }
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// A relative path in the configuration is relative to the configuration
/// file's directory, not to wherever the command happens to run: the
/// gateway and an offline CLI started elsewhere must open the same file.
///
/// The result is absolute and has no `.`/`..` (it is printed to operators):
/// the config file's directory is canonicalised when it exists (a symlinked
/// `/etc/portcullis` resolves as the OS would), then the relative part is
/// joined and normalised lexically.
pub fn resolve_config_path(config_file: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let dir = config_file.parent().unwrap_or(Path::new(""));
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let base = std::fs::canonicalize(dir)
            .or_else(|_| std::path::absolute(dir))
            .unwrap_or_else(|_| dir.to_path_buf());
        base.join(p)
    };
    let joined = std::path::absolute(&joined).unwrap_or(joined);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `listen` and `admin_listen` on one port cannot both bind (port 0, "any
/// free port", excepted).
fn check_listeners_distinct(path: &Path, listen: SocketAddr, admin: SocketAddr) -> Result<(), ConfigError> {
    let overlap = listen.port() != 0
        && listen.port() == admin.port()
        && (listen.ip() == admin.ip() || listen.ip().is_unspecified() || admin.ip().is_unspecified());
    if overlap {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            key: "server.admin_listen".into(),
            message: format!("`{admin}` is the same address as server.listen (`{listen}`); give the admin API its own port"),
        });
    }
    Ok(())
}

/// `http::Uri` accepts any digits as a port and `port_u16()` then gives
/// `None`, which would silently mean port 80.
fn check_upstream_port(path: &Path, key: &str, url: &Uri) -> Result<(), ConfigError> {
    let Some(authority) = url.authority() else { return Ok(()) };
    let host_port = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, hp)| hp);
    let Some(port) = host_port.rsplit_once(':').map(|(_, p)| p).filter(|p| !p.contains(']')) else {
        return Ok(());
    };
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message: format!("port `{port}` in `{url}` is not a TCP port (1-65535)"),
        }),
    }
}

impl StoreSpec {
    /// Validates `[store]` and resolves its path against the config file.
    fn to_store_config(&self, path: &Path) -> Result<StoreConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        match self.backend.as_str() {
            "sqlite" => {
                if self.path.is_empty() {
                    return Err(invalid("store.path", "must name the SQLite file".into()));
                }
                Ok(StoreConfig::Sqlite {
                    path: resolve_config_path(path, &self.path),
                })
            }
            "redis" => {
                let url = self.url.clone().filter(|u| !u.is_empty()).ok_or_else(|| {
                    invalid(
                        "store.url",
                        "the redis backend needs `url`, e.g. \"redis://127.0.0.1:6379/0\"".into(),
                    )
                })?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                    return Err(invalid("store.url", format!("`{}` is not a redis:// URL", redact_url(&url))));
                }
                if self.timeout_ms == 0 {
                    return Err(invalid("store.timeout_ms", "must be greater than 0".into()));
                }
                Ok(StoreConfig::Redis {
                    url,
                    timeout: Duration::from_millis(self.timeout_ms),
                    revocation_grace: Duration::from_millis(self.revocation_grace_ms),
                })
            }
            other => Err(invalid(
                "store.backend",
                format!("unknown backend `{other}`; expected \"sqlite\" or \"redis\""),
            )),
        }
    }
}

/// What the offline commands (`admin token …`) need: the store and the
/// workspace names. Only `[store]` is expanded, so upstream secrets such as
/// `${DEMO_UPSTREAM_KEY}` need not be set to bootstrap an admin token.
#[derive(Debug, Clone)]
pub struct StoreContext {
    pub source: PathBuf,
    pub store: StoreConfig,
    pub workspace_slugs: Vec<String>,
}

impl StoreContext {
    pub fn load(path: &Path) -> Result<StoreContext, ConfigError> {
        let text = read_config(path)?;
        Self::from_toml(path, &text, &|name| std::env::var(name).ok(), &process_overrides())
    }

    pub fn from_toml(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &[(String, String)],
    ) -> Result<StoreContext, ConfigError> {
        let mut value = parse_checked(path, text)?;
        apply_env_overrides(path, &mut value, overrides)?;
        let expanded = match value.get_mut("store") {
            Some(store) => expand_env_at(path, store, "store", env)?,
            None => Vec::new(),
        };
        let hide = |e: ConfigError| hide_expanded(e, &expanded);
        let spec: ConfigSpec = value.try_into().map_err(|e| parse_error(path, e)).map_err(hide)?;
        Ok(StoreContext {
            source: path.to_owned(),
            store: spec.store.to_store_config(path).map_err(hide)?,
            workspace_slugs: spec.workspaces.into_iter().map(|w| w.slug).collect(),
        })
    }
}

/// A 32-byte key from 64 hex characters.
fn decode_key(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        key[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(key)
}

/// Headers the gateway owns on the upstream request.
fn is_managed_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "x-request-id" | "mcp-session-id"
    )
}

pub fn is_valid_slug(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-')
}

/// Server names become tool-name prefixes (`<server>__<tool>`), hence no
/// `__`, and no `_` at either end: with servers `x` and `x_`, `x___t` would
/// read as `x` + `_t` or as `x_` + `t`.
fn is_valid_server_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.contains("__")
        && !s.starts_with('_')
        && !s.ends_with('_')
}

/// `e` with every value that came from an environment variable shown as
/// `${NAME}` instead (longest first, so that a value containing another is
/// replaced whole). Values of one or two characters are left alone: they
/// hide nothing, and replacing them would garble the message.
fn hide_expanded(e: ConfigError, expanded: &[(String, String)]) -> ConfigError {
    let hide = |mut message: String| {
        let mut values: Vec<&(String, String)> = expanded.iter().filter(|(v, _)| v.len() >= 3).collect();
        values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for (v, name) in values {
            message = message.replace(v.as_str(), &format!("${{{name}}}"));
        }
        message
    };
    match e {
        ConfigError::Invalid { path, key, message } => ConfigError::Invalid {
            path,
            key,
            message: hide(message),
        },
        ConfigError::Parse { path, message } => ConfigError::Parse {
            path,
            message: hide(message),
        },
        other => other,
    }
}

/// A URL as an error message may show it: without userinfo (a password)
/// and without query or fragment (tokens), since the value may have come
/// from an environment variable and the message lands in logs and
/// journald. Anything that does not look like a URL is not shown at all.
fn redact_url(v: &str) -> String {
    let Some((scheme, rest)) = v.split_once("://") else {
        return "<value not shown>".into();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    format!("{scheme}://{host}{path}")
}

enum ExpandError {
    Missing(ConfigError),
    Syntax { key: String, message: String },
}

/// Replaces `${NAME}` and `${NAME:-default}` in every string of `v`.
/// `$${` stays a literal `${`.
fn expand_env(v: &mut toml::Value, key: &str, lookup: &dyn Fn(&str, &str) -> Result<String, ConfigError>) -> Result<(), ExpandError> {
    match v {
        toml::Value::String(s) if s.contains('$') => *s = expand_str(s, key, lookup)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                let child = if key.is_empty() { k.clone() } else { format!("{key}.{k}") };
                expand_env(item, &child, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, key: &str, lookup: &dyn Fn(&str, &str) -> Result<String, ConfigError>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| ExpandError::Syntax {
                key: key.to_owned(),
                message: "unterminated `${` in value".into(),
            })?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ExpandError::Syntax {
                    key: key.to_owned(),
                    message: format!("`${{{expr}}}` is not a valid variable reference"),
                });
            }
            match lookup(name, key) {
                Ok(val) => out.push_str(&val),
                Err(e) => match default {
                    Some(d) => out.push_str(d),
                    None => return Err(ExpandError::Missing(e)),
                },
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
public_url = "https://gw.example.com/"

[store]
backend = "sqlite"
path = "data/x.db"

[limits]
requests_per_minute = 120

[[workspaces]]
slug = "demo"
requests_per_minute = 600
# ${NOT_SET_IN_COMMENT} is never expanded

[[workspaces.servers]]
name = "demo"
url = "http://127.0.0.1:8765/mcp"
headers = { Authorization = "Bearer ${KEY}", X-Other = "${OTHER:-fallback}", X-Lit = "$${KEY}" }
timeout_ms = 1000
"#;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cret".to_string())
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text, &env)
    }

    #[test]
    fn good_config_loads_and_expands_env() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.server.public_url, "https://gw.example.com");
        let ws = c.workspace("demo").unwrap();
        assert_eq!(c.requests_per_minute(Some(ws), None), 600);
        assert_eq!(c.requests_per_minute(Some(ws), Some(5)), 5);
        assert_eq!(c.requests_per_minute(None, None), 120);
        let h: HashMap<_, _> = ws.servers[0]
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(h["authorization"], "Bearer s3cret");
        assert_eq!(h["x-other"], "fallback");
        assert_eq!(h["x-lit"], "${KEY}");
        assert_eq!(ws.servers[0].timeout, Duration::from_millis(1000));
    }

    #[test]
    fn unknown_keys_are_named_with_their_location() {
        let err = load(
            &GOOD
                .replace("max_body", "x")
                .replace("[limits]", "[limits]\nrequests_per_minuet = 3"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("requests_per_minuet"), "{err}");
        assert!(err.contains("line"), "{err}");
        let err = load(&GOOD.replace("timeout_ms = 1000", "timeout_ms = 1000\nretries = 2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("retries"), "{err}");
    }

    #[test]
    fn missing_env_var_is_a_clear_error() {
        let err = load(&GOOD.replace("${KEY}\", X", "${MISSING_VAR}\", X")).unwrap_err().to_string();
        assert!(err.contains("MISSING_VAR"), "{err}");
        assert!(err.contains("workspaces[0].servers[0].headers.Authorization"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_never_show_credentials() {
        // Through an environment variable, as a deployment would set them.
        let env = |v: &str| match v {
            "REDIS_URL" => Some("rediss//:hunter2@redis.internal:6379/0".to_owned()),
            "UP_URL" => Some("ftp://user:s3cret@up.internal/mcp?token=abc".to_owned()),
            _ => Some("x".to_owned()),
        };
        let redis = GOOD.replace("backend = \"sqlite\"", "backend = \"redis\"\nurl = \"${REDIS_URL}\"");
        let err = Config::from_toml(Path::new("t.toml"), &redis, &env).unwrap_err().to_string();
        assert!(err.contains("store.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let up = GOOD.replace("http://127.0.0.1:8765/mcp", "${UP_URL}");
        let err = Config::from_toml(Path::new("t.toml"), &up, &env).unwrap_err().to_string();
        assert!(err.contains("workspaces[0].servers[0].url"), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("token=abc"), "{err}");
        assert!(err.contains("ftp://***@up.internal/mcp"), "{err}");
        // A value from the environment is never shown, whatever the key.
        let env = |v: &str| (v == "LISTEN").then(|| "secret-listen-value".to_owned()).or(Some("x".to_owned()));
        let listen = GOOD.replace("127.0.0.1:8080", "${LISTEN}");
        let err = Config::from_toml(Path::new("t.toml"), &listen, &env).unwrap_err().to_string();
        assert!(err.contains("server.listen") && err.contains("${LISTEN}"), "{err}");
        assert!(!err.contains("secret-listen-value"), "{err}");
    }

    #[test]
    fn server_names_cannot_start_or_end_with_an_underscore() {
        for bad in ["x_", "_x", "a__b"] {
            let err = load(&GOOD.replace("name = \"demo\"", &format!("name = \"{bad}\"")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("workspaces[0].servers[0].name"), "{bad}: {err}");
        }
        assert!(load(&GOOD.replace("name = \"demo\"", "name = \"a_b-c\"")).is_ok());
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (from, to, needle) in [
            ("127.0.0.1:8080", "localhost", "server.listen"),
            ("backend = \"sqlite\"", "backend = \"mongo\"", "store.backend"),
            ("slug = \"demo\"", "slug = \"Demo!\"", "slug"),
            ("http://127.0.0.1:8765/mcp", "ftp://x/", "url"),
            ("requests_per_minute = 120", "requests_per_minute = 0", "limits.requests_per_minute"),
            ("Authorization = ", "Host = ", "set by the gateway"),
        ] {
            let err = load(&GOOD.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(needle), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn data_plane_threads_default_to_the_core_count() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(load(GOOD).unwrap().server.data_plane_threads, cores);
        let with = |n: &str| GOOD.replace("admin_listen =", &format!("data_plane_threads = {n}\nadmin_listen ="));
        assert_eq!(load(&with("3")).unwrap().server.data_plane_threads, 3);
        assert_eq!(load(&with("0")).unwrap().server.data_plane_threads, cores);
        let err = load(&with("5000")).unwrap_err().to_string();
        assert!(err.contains("server.data_plane_threads"), "{err}");
    }

    #[test]
    fn duplicate_slugs_and_empty_servers_are_rejected() {
        let dup =
            format!("{GOOD}\n[[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\n");
        assert!(load(&dup).unwrap_err().to_string().contains("defined twice"));
        let empty = "[[workspaces]]\nslug = \"x\"\n";
        assert!(load(empty).unwrap_err().to_string().contains("at least one"));
    }

    #[test]
    fn relative_store_paths_resolve_against_the_config_file() {
        let c = Config::from_toml(Path::new("/etc/portcullis/p.toml"), GOOD, &env).unwrap();
        match c.store {
            StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/etc/portcullis/data/x.db")),
            other => panic!("{other:?}"),
        }
        let abs = GOOD.replace("data/x.db", "/var/lib/p.db");
        match Config::from_toml(Path::new("/etc/p.toml"), &abs, &env).unwrap().store {
            StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/var/lib/p.db")),
            other => panic!("{other:?}"),
        }
        // A relative config path still yields an absolute store path.
        match load(GOOD).unwrap().store {
            StoreConfig::Sqlite { path } => assert!(path.is_absolute(), "{path:?}"),
            other => panic!("{other:?}"),
        }
        // `..` is resolved, so the printed path is the file's plain name.
        let up = GOOD.replace("data/x.db", "../data/x.db");
        match Config::from_toml(Path::new("/nonexistent-dir/config/p.toml"), &up, &env)
            .unwrap()
            .store
        {
            StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/nonexistent-dir/data/x.db")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upstream_ports_out_of_range_are_errors_naming_the_key() {
        for port in ["99999", "65536", "0"] {
            let err = load(&GOOD.replace("8765", port)).unwrap_err().to_string();
            assert!(err.contains("workspaces[0].servers[0].url") && err.contains(port), "{port}: {err}");
        }
        assert!(load(&GOOD.replace("8765", "65535")).is_ok());
        let with_userinfo = GOOD.replace("http://127.0.0.1:8765", "http://u:p@127.0.0.1:8765");
        assert!(load(&with_userinfo).is_ok());
        assert!(load(&GOOD.replace("127.0.0.1:8765", "[::1]")).is_ok());
    }

    #[test]
    fn admin_listen_equal_to_listen_is_an_error() {
        for admin in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let err = load(&GOOD.replace("admin_listen = \"127.0.0.1:9090\"", &format!("admin_listen = \"{admin}\"")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.admin_listen") && err.contains("server.listen"), "{err}");
        }
        // Port 0 (any free port) twice is fine: the tests rely on it.
        let zero = GOOD.replace(":8080", ":0").replace(":9090", ":0");
        assert!(load(&zero).is_ok());
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let over = |pairs: &[(&str, &str)]| {
            let o: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Config::from_toml_with_overrides(Path::new("t.toml"), GOOD, &env, &o)
        };
        let c = over(&[
            ("PORTCULLIS__SERVER__LISTEN", "127.0.0.1:7000"),
            ("PORTCULLIS__SERVER__MAX_BODY_BYTES", "1024"),
            ("PORTCULLIS__SERVER__ALLOWED_ORIGINS", "[\"https://a.example\"]"),
            ("PORTCULLIS__LIMITS__REQUESTS_PER_MINUTE", "7"),
            ("PORTCULLIS__WORKSPACES__0__SERVERS__0__URL", "http://127.0.0.1:9999/mcp"),
            ("PORTCULLIS__WORKSPACES__0__SERVERS__0__HEADERS__AUTHORIZATION", "Bearer ${KEY}x"),
        ])
        .unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(c.server.max_body_bytes, 1024);
        assert!(c.server.allowed_origins.contains("https://a.example"));
        assert_eq!(c.limits.requests_per_minute, 7);
        let srv = &c.workspace("demo").unwrap().servers[0];
        assert_eq!(srv.url.port_u16(), Some(9999));
        assert_eq!(srv.headers.len(), 3, "matched case-insensitively, not added");
        assert!(srv.headers.iter().any(|(_, v)| v.to_str().unwrap() == "Bearer s3cretx"));
        for (var, val, needle) in [
            ("PORTCULLIS__SERVER__LISTN", "x", "LISTN"),
            ("PORTCULLIS__WORKSPACES__5__SLUG", "x", "PORTCULLIS__WORKSPACES__5__SLUG"),
            ("PORTCULLIS__SERVER__LISTEN", "nope", "server.listen"),
        ] {
            let err = over(&[(var, val)]).unwrap_err().to_string();
            assert!(err.to_ascii_uppercase().contains(&needle.to_ascii_uppercase()), "{var}: {err}");
        }
    }

    #[test]
    fn the_store_context_needs_no_upstream_secrets() {
        // KEY is referenced by an upstream header; the offline commands never use it.
        let ctx = StoreContext::from_toml(Path::new("/srv/p.toml"), GOOD, &|_| None, &[]).unwrap();
        assert_eq!(ctx.workspace_slugs, vec!["demo".to_string()]);
        assert!(matches!(ctx.store, StoreConfig::Sqlite { ref path } if path == Path::new("/srv/data/x.db")));
        // ...while the strict load still names the missing variable.
        let err = Config::from_toml(Path::new("/srv/p.toml"), GOOD, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("KEY"), "{err}");
        // A variable used by the store itself is still required.
        let text = GOOD.replace("data/x.db", "${DB_DIR}/x.db");
        let err = StoreContext::from_toml(Path::new("/srv/p.toml"), &text, &|_| None, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DB_DIR") && err.contains("store.path"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let c = Config::load_with_env(&path, &|_| Some("x".into())).unwrap();
        assert!(c.workspace("demo").is_some());
    }
}
