//! Validation: `ConfigSpec::into_config` checks every value (addresses,
//! URLs and ports, slugs and server names, headers, keys) and builds the
//! runtime `Config`; `StoreSpec` does the same for the store alone.

use super::*;

impl ConfigSpec {
    pub(super) fn into_config(self, path: &Path) -> Result<Config, ConfigError> {
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
        let dashboard = self.dashboard.into_config(path)?;
        let audit = self.audit.to_config(path)?;
        let oauth = self.oauth.into_config(path)?;
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

        let usage = self.usage.validate(&invalid)?;
        let oidc = self.auth.into_config(path, &workspaces)?;
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
            dashboard,
            usage,
            oidc,
            oauth,
            workspaces,
            audit,
        })
    }
}

/// `listen` and `admin_listen` on one port cannot both bind (port 0, "any
/// free port", excepted).
pub(super) fn check_listeners_distinct(path: &Path, listen: SocketAddr, admin: SocketAddr) -> Result<(), ConfigError> {
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
pub(super) fn check_upstream_port(path: &Path, key: &str, url: &Uri) -> Result<(), ConfigError> {
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

impl UsageSpec {
    fn validate(&self, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<UsageConfig, ConfigError> {
        if !(10..=30_000).contains(&self.flush_interval_ms) {
            // At most 30 s: a flush interval must stay under a minute for
            // the in-memory counters to tell two minutes apart (`usage`).
            return Err(invalid("usage.flush_interval_ms", "must be from 10 to 30000".into()));
        }
        if !(1..=24 * 365).contains(&self.minute_retention_hours) {
            return Err(invalid("usage.minute_retention_hours", "must be from 1 to 8760".into()));
        }
        if !(1..=3650).contains(&self.hour_retention_days) {
            return Err(invalid("usage.hour_retention_days", "must be from 1 to 3650".into()));
        }
        if !(16..=1 << 20).contains(&self.max_keys) {
            return Err(invalid("usage.max_keys", "must be from 16 to 1048576".into()));
        }
        for (key, v) in [
            ("usage.max_tools_per_server", self.max_tools_per_server),
            ("usage.max_members_per_workspace", self.max_members_per_workspace),
            ("usage.max_tokens_per_workspace", self.max_tokens_per_workspace),
        ] {
            if !(1..=1_000_000).contains(&v) {
                return Err(invalid(key, "must be from 1 to 1000000".into()));
            }
        }
        Ok(UsageConfig {
            enabled: self.enabled,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            minute_retention: self.minute_retention_hours as i64 * 3600,
            hour_retention: self.hour_retention_days as i64 * 86_400,
            max_keys: self.max_keys,
            max_tools_per_server: self.max_tools_per_server,
            max_members_per_workspace: self.max_members_per_workspace,
            max_tokens_per_workspace: self.max_tokens_per_workspace,
        })
    }
}

impl StoreSpec {
    /// Validates `[store]` and resolves its path against the config file.
    pub(super) fn to_store_config(&self, path: &Path) -> Result<StoreConfig, ConfigError> {
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
                // The scheme only: the rest is checked where the store
                // opens (`store::redis_url`; config may not import store).
                const SCHEMES: [&str; 5] = ["redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://"];
                if !SCHEMES.iter().any(|s| url.starts_with(s)) {
                    return Err(invalid(
                        "store.url",
                        format!(
                            "`{}` is not a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL",
                            redact_url(&url)
                        ),
                    ));
                }
                if self.timeout_ms == 0 {
                    return Err(invalid("store.timeout_ms", "must be greater than 0".into()));
                }
                Ok(StoreConfig::Redis {
                    url,
                    timeout: Duration::from_millis(self.timeout_ms),
                    revocation_grace: Duration::from_millis(self.revocation_grace_ms),
                    wait_replicas: self.wait_replicas,
                })
            }
            other => Err(invalid(
                "store.backend",
                format!("unknown backend `{other}`; expected \"sqlite\" or \"redis\""),
            )),
        }
    }
}

/// A 32-byte key from 64 hex characters.
pub(super) fn decode_key(hex: &str) -> Option<[u8; 32]> {
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
pub(super) fn is_managed_header(name: &HeaderName) -> bool {
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
pub(super) fn is_valid_server_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.contains("__")
        && !s.starts_with('_')
        && !s.ends_with('_')
}
