//! `portcullis doctor`: one run checks everything a deployment needs and
//! reports every problem, not only the first. Exit 1 if any check failed
//! (warnings do not fail the run).
//!
//! Checks: the configuration; the store (reachable, writable, schema
//! current); the listen ports (free, distinct); every upstream (`initialize`
//! with its configured credentials, latency); Redis (AOF on, a primary);
//! the admin listener's exposure; `session_keys`; the clock.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;

use super::{CliError, CliResult, output};
use crate::config::{Config, StoreConfig, UpstreamServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's result: the object `--json` prints per check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        latency_ms: None,
    }
}

pub async fn run(path: &Path, json: bool) -> CliResult {
    let checks = match Config::load(path) {
        Ok(config) => {
            let mut checks = vec![check("config", Status::Ok, format!("{} is valid", config.source.display()))];
            checks.extend(run_checks(&config).await);
            checks
        }
        // Nothing else can be checked without a valid configuration.
        Err(e) => vec![check("config", Status::Fail, e.to_string())],
    };
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let report = json!({ "ok": failed == 0, "checks": checks });
    if !json {
        for c in &checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let latency = c.latency_ms.map(|l| format!(" ({l:.1} ms)")).unwrap_or_default();
            println!("{mark}  {:<28} {}{latency}", c.name, c.detail);
        }
    }
    if failed == 0 {
        if json {
            output::json(&report);
        } else {
            println!("\nAll checks passed.");
        }
        return Ok(());
    }
    let err = CliError::failed(format!("{failed} check{} failed", if failed == 1 { "" } else { "s" })).with_code("checks_failed");
    Err(if json { err.with_extra(report) } else { err })
}

/// Every check after the configuration loaded.
pub async fn run_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    out.extend(store_checks(config).await);
    out.extend(port_checks(config).await);
    for ws in &config.workspaces {
        for srv in &ws.servers {
            out.push(upstream_check(&ws.slug, srv).await);
        }
    }
    if let Some(oidc) = &config.oidc {
        out.push(oidc_check(oidc).await);
    }
    out.push(admin_exposure(config.server.admin_listen));
    out.push(session_keys(config));
    out.push(clock());
    out
}

async fn store_checks(config: &Config) -> Vec<Check> {
    match &config.store {
        StoreConfig::Sqlite { path } => {
            if !path.exists() {
                let dir = path.parent().unwrap_or(Path::new("/"));
                return vec![check(
                    "store",
                    Status::Warn,
                    format!(
                        "{} does not exist yet; it is created on first start (directory {}: {})",
                        path.display(),
                        dir.display(),
                        if dir.exists() { "exists" } else { "will be created" }
                    ),
                )];
            }
            let p = path.clone();
            let result = tokio::task::spawn_blocking(move || crate::store::sqlite::check_existing(&p))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            vec![match result {
                Ok((have, want)) if have == want => check(
                    "store",
                    Status::Ok,
                    format!("SQLite {}: reachable, writable, schema version {have} (current)", path.display()),
                ),
                Ok((have, want)) if have < want => check(
                    "store",
                    Status::Warn,
                    format!(
                        "SQLite {}: schema version {have}, this binary migrates it to {want} on start",
                        path.display()
                    ),
                ),
                Ok((have, want)) => check(
                    "store",
                    Status::Fail,
                    format!(
                        "SQLite {}: schema version {have} is newer than this binary's {want}; upgrade portcullis",
                        path.display()
                    ),
                ),
                Err(e) => check("store", Status::Fail, format!("SQLite {} (`store.path`): {e}", path.display())),
            }]
        }
        StoreConfig::Redis {
            url,
            timeout,
            wait_replicas,
            ..
        } => redis_checks(url, *timeout, *wait_replicas).await,
    }
}

async fn redis_checks(url: &str, timeout: Duration, wait_replicas: u32) -> Vec<Check> {
    use crate::store::redis_conn::RedisConn;
    use crate::store::redis_keys::Layout;
    use crate::store::redis_url::RedisTarget;

    let endpoint = crate::state::redis_endpoint(url);
    let target = match crate::store::redis_url::parse(url) {
        Ok(t) => t,
        Err(e) => return vec![check("store", Status::Fail, format!("`store.url`: {e}"))],
    };
    let wait = timeout.max(Duration::from_secs(2));
    let conn = match tokio::time::timeout(wait * 2, RedisConn::connect(&target, wait)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let what = match target {
                RedisTarget::Single(_) => "start Redis or fix store.url",
                RedisTarget::Cluster(_) => "check that the listed Cluster nodes run and the cluster is up (`redis-cli --cluster check`)",
                RedisTarget::Sentinel(_) => {
                    "check that the Sentinels run and monitor a master of the name in store.url (`SENTINEL get-master-addr-by-name`)"
                }
            };
            return vec![check("store", Status::Fail, format!("Redis {endpoint} (`store.url`): {e}; {what}"))];
        }
        Err(_) => return vec![check("store", Status::Fail, format!("Redis {endpoint} (`store.url`): no answer"))],
    };
    let mode = conn.mode();
    let layout = if mode == "cluster" { Layout::Tagged } else { Layout::Plain };
    // The token store's slot: the node whose health matters most.
    let tokens = layout.tokens_seq();
    let mut out = Vec::new();
    // Writable: a short-lived key of our own, in the token store's slot.
    let key = format!("{}doctor:{}", layout.tokens(), crate::token::generate_id());
    let mut c = conn.clone();
    let set: Result<(), _> = redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(5000).query_async(&mut c).await;
    out.push(match set {
        Ok(()) => {
            let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut c).await;
            check("store", Status::Ok, format!("Redis {endpoint} ({mode}): reachable and writable"))
        }
        Err(e) => check("store", Status::Fail, format!("Redis {endpoint} ({mode}): cannot write: {e}")),
    });
    let info = conn
        .on_primary_of(&tokens, redis::cmd("INFO").arg("replication"))
        .await
        .and_then(|v| Ok(redis::from_redis_value::<String>(v)?));
    let replicas = info.as_ref().ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
            .and_then(|n| n.parse::<u32>().ok())
    });
    out.push(match &info {
        Ok(text) if text.lines().any(|l| l.trim() == "role:master") => {
            check("redis.role", Status::Ok, "a primary (revocations are written where they are read)")
        }
        Ok(_) => check(
            "redis.role",
            Status::Fail,
            "store.url points at a replica: writes fail and reads may be stale; point it at the primary",
        ),
        Err(e) => check("redis.role", Status::Warn, format!("cannot read INFO replication: {e}")),
    });
    if mode != "single" {
        out.push(match replicas {
            Some(0) => check(
                "redis.replicas",
                Status::Warn,
                format!("the primary has no replica: a {mode} failover has nowhere to go"),
            ),
            Some(n) => check("redis.replicas", Status::Ok, format!("the primary has {n} connected replica(s)")),
            None => check("redis.replicas", Status::Warn, "cannot count the primary's replicas"),
        });
    }
    if wait_replicas > 0 {
        out.push(match replicas {
            Some(n) if n >= wait_replicas => check(
                "store.wait_replicas",
                Status::Ok,
                format!("revokes wait for {wait_replicas} replica(s); {n} connected"),
            ),
            _ => check(
                "store.wait_replicas",
                Status::Fail,
                format!(
                    "revokes wait for {wait_replicas} replica(s) but the primary has {}: every revoke would fail (503)",
                    replicas.map_or("an unknown number".into(), |n| n.to_string())
                ),
            ),
        });
    }
    if mode == "cluster" {
        let state = conn
            .on_primary_of(&tokens, redis::cmd("CLUSTER").arg("INFO"))
            .await
            .and_then(|v| Ok(redis::from_redis_value::<String>(v)?));
        out.push(match state {
            Ok(text) if text.lines().any(|l| l.trim() == "cluster_state:ok") => {
                check("redis.cluster", Status::Ok, "cluster_state:ok (every slot served)")
            }
            Ok(_) => check("redis.cluster", Status::Fail, "the cluster is not ok: some slots are unserved"),
            Err(e) => check("redis.cluster", Status::Warn, format!("cannot read CLUSTER INFO: {e}")),
        });
    }
    let aof = conn
        .on_primary_of(&tokens, redis::cmd("CONFIG").arg("GET").arg("appendonly"))
        .await
        .and_then(|v| Ok(redis::from_redis_value::<Vec<String>>(v)?));
    out.push(match aof {
        Ok(v) if v.get(1).is_some_and(|s| s == "yes") => {
            check("redis.aof", Status::Ok, "appendonly yes: revocations survive a Redis restart")
        }
        Ok(_) => check(
            "redis.aof",
            Status::Fail,
            "appendonly is off: a Redis restart can bring revoked tokens back; set `appendonly yes` (deploy/README.md)",
        ),
        Err(e) => check(
            "redis.aof",
            Status::Warn,
            format!("cannot read CONFIG GET appendonly ({e}); make sure AOF is on"),
        ),
    });
    out
}

async fn port_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, key, addr) in [
        ("listen", "server.listen", config.server.listen),
        ("admin_listen", "server.admin_listen", config.server.admin_listen),
    ] {
        out.push(match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => check(name, Status::Ok, format!("{addr} is free")),
            Err(e) => check(
                name,
                Status::Fail,
                format!("cannot bind {addr} (`{key}`): {e}; another process (a running gateway?) holds it"),
            ),
        });
    }
    out
}

async fn upstream_check(slug: &str, srv: &UpstreamServer) -> Check {
    let name = format!("upstream {slug}/{}", srv.name);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "portcullis-doctor", "version": crate::build_info::VERSION}}});
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(srv.url.clone())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in &srv.headers {
        req = req.header(k, v);
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
        return check(name, Status::Fail, "cannot build the request");
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(srv.connect_timeout));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let start = Instant::now();
    let resp = match tokio::time::timeout(srv.timeout, client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return check(name, Status::Fail, format!("{}: unreachable ({e:?})", srv.url).replace("\n", " ")),
        Err(_) => return check(name, Status::Fail, format!("{}: no answer within timeout_ms", srv.url)),
    };
    let status = resp.status();
    let session = resp.headers().get("mcp-session-id").cloned();
    let body = match tokio::time::timeout(srv.timeout, Limited::new(resp.into_body(), 256 * 1024).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => Bytes::new(),
    };
    let latency = start.elapsed().as_secs_f64() * 1000.0;
    // End the session we opened, politely.
    if let Some(sid) = session {
        let mut del = Request::builder()
            .method(Method::DELETE)
            .uri(srv.url.clone())
            .header("mcp-session-id", sid);
        for (k, v) in &srv.headers {
            del = del.header(k, v);
        }
        if let Ok(del) = del.body(Full::new(Bytes::new())) {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.request(del)).await;
        }
    }
    let text = String::from_utf8_lossy(&body);
    let mut c = if matches!(status.as_u16(), 401 | 403) {
        check(
            name,
            Status::Fail,
            format!(
                "{}: HTTP {status}: the upstream refused the configured credentials (check its `headers`)",
                srv.url
            ),
        )
    } else if status.is_success() && text.contains("\"result\"") && text.contains("protocolVersion") {
        check(name, Status::Ok, format!("{}: answered initialize", srv.url))
    } else {
        check(name, Status::Fail, format!("{}: HTTP {status}, not an initialize result", srv.url))
    };
    c.latency_ms = Some((latency * 10.0).round() / 10.0);
    c
}

/// `[auth.oidc]`: the provider's discovery document answers, names the
/// configured issuer exactly, and offers what sign-in needs; then its key
/// set is read. The same code the sign-in uses (`sso::provider`).
async fn oidc_check(cfg: &crate::config::OidcConfig) -> Check {
    use crate::sso::fetch::Fetcher;
    use crate::sso::provider::Provider;
    let name = "oidc";
    let provider = Provider::new(cfg.issuer.clone(), Fetcher::new());
    let start = Instant::now();
    let mut c = match provider.discovery().await {
        Ok(d) => match provider.key(&d.jwks_uri, None).await {
            // No kid asked: `None` just means several keys, which is fine.
            Ok(_) => check(name, Status::Ok, format!("{}: discovery and keys answered", cfg.issuer)),
            Err(e) => check(name, Status::Fail, format!("{}: key set: {e}", cfg.issuer)),
        },
        Err(e) => check(name, Status::Fail, format!("{}: {e}", cfg.issuer)),
    };
    c.latency_ms = Some((start.elapsed().as_secs_f64() * 10_000.0).round() / 10.0);
    c
}

fn admin_exposure(addr: SocketAddr) -> Check {
    let ip = addr.ip();
    let private = match ip {
        std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    if ip.is_loopback() {
        check("admin exposure", Status::Ok, format!("admin API on loopback ({addr})"))
    } else if private {
        check(
            "admin exposure",
            Status::Warn,
            format!("admin API on a private address ({addr}) without TLS; keep that network trusted or put a TLS proxy in front"),
        )
    } else {
        check(
            "admin exposure",
            Status::Fail,
            format!(
                "admin API on {addr}, reachable beyond this host, and it has no TLS: bind server.admin_listen to 127.0.0.1 (or a private address behind a TLS proxy)"
            ),
        )
    }
}

fn session_keys(config: &Config) -> Check {
    let needed: Vec<&str> = config
        .workspaces
        .iter()
        .filter(|w| w.is_aggregate())
        .map(|w| w.slug.as_str())
        .collect();
    let have = config.server.session_keys.len();
    match (needed.is_empty(), have) {
        (true, 0) => check("session_keys", Status::Ok, "not needed (no workspace has several servers)"),
        (true, n) => check("session_keys", Status::Ok, format!("{n} key(s); not needed by any workspace yet")),
        // Config validation refuses this; kept for completeness.
        (false, 0) => check(
            "session_keys",
            Status::Fail,
            format!("workspaces {} need server.session_keys", needed.join(", ")),
        ),
        (false, n) => check(
            "session_keys",
            Status::Ok,
            format!("{n} key(s) for workspaces {}", needed.join(", ")),
        ),
    }
}

/// Expiry and `last_used_at` are wall-clock times: a clock before this
/// binary was built, or absurdly far ahead, is wrong.
fn clock() -> Check {
    let now = crate::token::now_unix();
    let built = time::OffsetDateTime::parse(crate::build_info::BUILD_DATE, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(1_704_067_200); // 2024-01-01, before the first release
    let year_2100 = 4_102_444_800;
    if now < built - 86_400 {
        check(
            "clock",
            Status::Fail,
            format!("the system clock ({now}) is before this binary's build date; fix NTP: token expiry depends on it"),
        )
    } else if now > year_2100 {
        check("clock", Status::Fail, "the system clock is past 2100; fix NTP")
    } else {
        let shown = time::OffsetDateTime::from_unix_timestamp(now)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        check("clock", Status::Ok, format!("{shown} (UTC)"))
    }
}
