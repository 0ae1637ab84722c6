//! `portcullis serve`, `check-config`, `demo` and `demo-upstream`.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CliError, CliResult, output};
use crate::auth::lifecycle::{self, NewTokenRequest};
use crate::config::Config;
use crate::store::ListFilter;
use crate::telemetry::announce;
use crate::token::{TokenKind, now_unix};

fn load(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| {
        CliError::usage(format!(
            "{e}\n(validate with `portcullis check-config --config {}`)",
            path.display()
        ))
    })
}

pub async fn serve(path: &Path) -> CliResult {
    let config = load(path)?;
    tracing::info!(
        version = crate::build_info::VERSION,
        git_commit = crate::build_info::GIT_COMMIT,
        build_date = crate::build_info::BUILD_DATE,
        config = %config.source.display(),
        "starting portcullis"
    );
    let dashboard = config.dashboard.enabled;
    let running = crate::app::start(config).await.map_err(|e| CliError::usage(e.to_string()))?;
    announce(
        "INFO",
        &format!(
            "data plane on http://{}, admin API on http://{}{}",
            running.data_addr,
            running.admin_addr,
            if dashboard { " (dashboard at /)" } else { "" }
        ),
    );
    wait_for_signal().await;
    announce("INFO", "shutting down (finishing open requests and streams)");
    running.shutdown();
    running.wait().await;
    announce("INFO", "stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn check_config(path: &Path, json: bool) -> CliResult {
    match Config::load(path) {
        Ok(c) => {
            if json {
                output::json(&json!({
                    "valid": true,
                    "path": path.display().to_string(),
                    "workspaces": c.workspaces.iter().map(|w| &w.slug).collect::<Vec<_>>(),
                }));
            } else {
                println!(
                    "{}: OK ({} workspace{}; data plane {}, admin API {})",
                    path.display(),
                    c.workspaces.len(),
                    if c.workspaces.len() == 1 { "" } else { "s" },
                    c.server.listen,
                    c.server.admin_listen
                );
            }
            Ok(())
        }
        Err(e) => Err(CliError::usage(e.to_string())
            .with_code("invalid_config")
            .with_extra(json!({ "valid": false, "path": path.display().to_string() }))),
    }
}

/// The example configuration, for `portcullis demo` outside a checkout.
const EMBEDDED_CONFIG: &str = include_str!("../../config/portcullis.toml");

/// Default API key of the demo upstream when `DEMO_UPSTREAM_KEY` is unset.
const DEMO_KEY: &str = "demo-upstream-key";

pub async fn demo(path: &Path) -> CliResult {
    let demo_key = std::env::var("DEMO_UPSTREAM_KEY").unwrap_or_else(|_| DEMO_KEY.to_string());
    let key = demo_key.clone();
    let env = move |name: &str| {
        if name == "DEMO_UPSTREAM_KEY" {
            Some(key.clone())
        } else {
            std::env::var(name).ok()
        }
    };
    let (config, config_note) = if path == Path::new(crate::config::DEFAULT_CONFIG_PATH) && !path.exists() {
        // Outside a checkout there is no config/portcullis.toml: use the
        // example compiled into the binary, as if it were at
        // ./config/portcullis.toml (so its store lands in ./data/).
        let cwd = std::env::current_dir().map_err(|e| CliError::usage(format!("cannot read the current directory: {e}")))?;
        let source = cwd.join(crate::config::DEFAULT_CONFIG_PATH);
        let config = Config::from_toml_with_overrides(&source, EMBEDDED_CONFIG, &env, &crate::config::process_overrides())
            .map_err(|e| CliError::usage(e.to_string()))?;
        (
            config,
            "the example built into this binary (no config/portcullis.toml here)".to_string(),
        )
    } else {
        let config = Config::load_with_env(path, &env).map_err(|e| CliError::usage(e.to_string()))?;
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        (config, shown.display().to_string())
    };
    let store_desc = match &config.store {
        crate::config::StoreConfig::Sqlite { path } => path.display().to_string(),
        crate::config::StoreConfig::Redis { url, .. } => crate::state::redis_endpoint(url),
    };
    // The binary actually running, so the commands printed below work from
    // any directory and whatever the build profile.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "portcullis".into());
    let ws = config
        .workspace("demo")
        .ok_or_else(|| CliError::usage(format!("{} has no `demo` workspace; `portcullis demo` needs one", path.display())))?;
    let upstream_url = ws.servers[0].url.clone();
    let upstream_addr: SocketAddr = format!(
        "{}:{}",
        upstream_url.host().unwrap_or_default().replace("localhost", "127.0.0.1"),
        upstream_url.port_u16().unwrap_or(80)
    )
    .parse()
    .map_err(|_| CliError::usage(format!("the demo workspace's server {upstream_url} is not on a local IP address")))?;
    let listener = crate::demo::bind(upstream_addr)
        .await
        .map_err(|e| CliError::usage(format!("cannot start the demo upstream on {upstream_addr}: {e}")))?;
    let shutdown = CancellationToken::new();
    let demo_task = tokio::spawn(crate::demo::serve(
        listener,
        crate::demo::DemoOptions { api_key: Some(demo_key) },
        shutdown.clone(),
    ));

    let public = config.server.public_url.clone();
    let dashboard = config.dashboard.enabled;
    let running = crate::app::start(config).await.map_err(|e| CliError::usage(e.to_string()))?;
    let admin_url = format!("http://{}", running.admin_addr);
    let store = &running.state.store;
    let existing = store
        .list(
            ListFilter {
                kind: TokenKind::Admin,
                workspace: None,
            },
            1,
            None,
        )
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let admin_line = if existing.tokens.is_empty() {
        let req = NewTokenRequest {
            name: "demo-admin".into(),
            kind: Some(TokenKind::Admin),
            created_by: "bootstrap".into(),
            ..Default::default()
        };
        let (raw, _) = lifecycle::create(Some(&running.state.verifier), store, req, now_unix())
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        format!("An admin token was created for you (shown only now):\n\n    export PORTCULLIS_ADMIN_TOKEN={raw}\n")
    } else {
        format!(
            "The store already has an admin token; export it as PORTCULLIS_ADMIN_TOKEN,\nor stop this, remove {store_desc} and start again for a fresh store and a new one.\n"
        )
    };
    let dashboard_line = if dashboard {
        format!("  dashboard:      {admin_url}/ (sign in with the admin token)\n")
    } else {
        String::new()
    };
    println!(
        "\nPortcullis is running.\n  gateway:        {public}/ws/demo\n  admin API:      {admin_url} (described at {admin_url}/v1/openapi.json)\n{dashboard_line}  demo upstream:  {upstream_url} (tools: echo, add, progress)\n  config:         {config_note}\n  store:          {store_desc}\n  binary:         {exe}\n\n{admin_line}\
         \nNext, in another terminal:\n\
         \n    export PORTCULLIS_ADMIN_URL={admin_url}\
         \n    {exe} workspace token create demo --name my-laptop\
         \n\nthen point an MCP client at {public}/ws/demo with the header\n`Authorization: Bearer <the mwt_ token>` (the README shows Claude Desktop, Cursor,\nClaude Code and the SDKs). Quick check:\
         \n\n    PORTCULLIS_TOKEN=<the mwt_ token> {exe} token validate --gateway-url {public}\
         \n\nPress Ctrl-C to stop.\n"
    );
    wait_for_signal().await;
    running.shutdown();
    running.wait().await;
    shutdown.cancel();
    let _ = demo_task.await;
    Ok(())
}

pub async fn demo_upstream(listen: SocketAddr, api_key: Option<String>) -> CliResult {
    let listener = crate::demo::bind(listen)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| CliError::usage(e.to_string()))?;
    announce(
        "INFO",
        &format!(
            "demo upstream: MCP endpoint http://{addr}/mcp{}",
            if api_key.is_some() { " (API key required)" } else { "" }
        ),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(crate::demo::serve(listener, crate::demo::DemoOptions { api_key }, shutdown.clone()));
    wait_for_signal().await;
    shutdown.cancel();
    let _ = task.await;
    Ok(())
}
