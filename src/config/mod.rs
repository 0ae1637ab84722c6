//! Configuration: the TOML file's `*Spec` types, validation, and conversion
//! into the runtime [`Config`].
//!
//! Loading is two passes. The first deserializes the raw text so that a typo
//! (an unknown key) is reported with its line and column before anything else;
//! the second expands `${NAME}` / `${NAME:-default}` in every string and
//! deserializes again. Expanding after parsing means a `${...}` inside a comment
//! is never looked at and a value cannot break the TOML syntax.
//!
//! This file owns the runtime types, loading (`Config::load`, the lazy
//! `StoreContext` of the offline commands) and path resolution; the file
//! format is in `spec`, the checks and conversion to runtime types in
//! `validate`, environment overrides and `${NAME}` expansion in `expand`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

mod audit;
mod dashboard;
mod expand;
mod oauth;
mod oidc;
mod spec;
mod validate;

use expand::*;

pub use audit::{AuditConfig, AuditSink, AuditSpec};
pub use dashboard::{DashboardConfig, DashboardSpec, SecureCookie, parse_duration};
pub use expand::{ENV_OVERRIDE_PREFIX, process_overrides};
pub use oauth::{OAuthConfig, OAuthSpec};
pub use oidc::{AuthSpec, MEMBER_ROLES, OidcConfig, OidcSpec, Secret};
pub use spec::*;
pub use validate::is_valid_slug;

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
// Runtime types.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from (for messages).
    pub source: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub dashboard: DashboardConfig,
    pub usage: UsageConfig,
    /// `[auth.oidc]`: single sign-on for members; `None` when not configured.
    pub oidc: Option<OidcConfig>,
    pub oauth: OAuthConfig,
    pub workspaces: Vec<Arc<Workspace>>,
    pub audit: AuditConfig,
}

/// `[usage]`, validated (see `spec::UsageSpec` for each field).
#[derive(Debug, Clone)]
pub struct UsageConfig {
    pub enabled: bool,
    pub flush_interval: Duration,
    /// Seconds.
    pub minute_retention: i64,
    /// Seconds.
    pub hour_retention: i64,
    pub max_keys: usize,
    pub max_tools_per_server: usize,
    pub max_members_per_workspace: usize,
    pub max_tokens_per_workspace: usize,
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
        /// `store.wait_replicas`.
        wait_replicas: u32,
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
