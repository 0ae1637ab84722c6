//! `portcullis admin token …`: admin tokens, managed offline against the
//! configured store, so an operator can bootstrap before anything runs.
//! A running gateway picks up offline revocations from the store's
//! revocation log within `server.revocation_poll_ms`.

use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;

use super::{CliError, CliResult, ConfigArg, output};
use crate::auth::lifecycle::{self, NewTokenRequest};
use crate::config::{StoreConfig, StoreContext};
use crate::store::{ListFilter, TokenStore};
use crate::token::{self, TokenKind, now_unix};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Admin tokens (control plane).
    Token {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
}

#[derive(Subcommand)]
pub enum AdminTokenCommand {
    /// Create an admin token (global, or scoped to one workspace); printed once.
    Create {
        /// A name that says who or what uses the token.
        #[arg(long)]
        name: String,
        /// Scope the token to this workspace (default: global).
        #[arg(long)]
        workspace: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List admin tokens (never the raw values).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token.
    Revoke {
        token_id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Loads only what the offline commands need ([`StoreContext`]: upstream
/// secrets need not be set) and opens the store, saying on stderr which store
/// it is and whether it was just created: a store made by mistake in the
/// wrong place is the trap this guards against.
async fn open(config: &ConfigArg) -> Result<(StoreContext, Arc<dyn TokenStore>), CliError> {
    let ctx = StoreContext::load(&config.config).map_err(|e| CliError::usage(e.to_string()))?;
    let existed = match &ctx.store {
        StoreConfig::Sqlite { path } => path.exists(),
        StoreConfig::Redis { .. } => true,
    };
    let store = crate::app::open_store_at(&ctx.store, &ctx.source)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    eprintln!("{}", store_line(&ctx.store, existed));
    Ok((ctx, store))
}

/// "store: …" line of the offline commands.
pub fn store_line(store: &StoreConfig, existed: bool) -> String {
    match store {
        StoreConfig::Sqlite { path } if existed => format!("store: SQLite {}", path.display()),
        StoreConfig::Sqlite { path } => format!(
            "store: SQLite {} (NEW: no store was there, so an empty one was created; if the gateway uses another file, fix store.path or --config)",
            path.display()
        ),
        StoreConfig::Redis { url, .. } => format!("store: Redis {}", crate::app::redis_endpoint(url)),
    }
}

/// The `store` member of the offline commands' JSON.
fn store_json(store: &StoreConfig) -> serde_json::Value {
    match store {
        StoreConfig::Sqlite { path } => json!({"backend": "sqlite", "path": path.display().to_string()}),
        StoreConfig::Redis { url, .. } => json!({"backend": "redis", "url": crate::app::redis_endpoint(url)}),
    }
}

pub async fn run(cmd: AdminCommand) -> CliResult {
    let AdminCommand::Token { command } = cmd;
    match command {
        AdminTokenCommand::Create {
            name,
            workspace,
            config,
            json,
        } => {
            let (cfg, store) = open(&config).await?;
            if let Some(ws) = &workspace
                && !cfg.workspace_slugs.iter().any(|s| s == ws)
            {
                return Err(CliError::usage(format!("no workspace `{ws}` in {}", cfg.source.display())));
            }
            let name = name.trim().to_string();
            if name.is_empty() {
                return Err(CliError::usage("--name must not be empty"));
            }
            let req = NewTokenRequest {
                name,
                kind: Some(TokenKind::Admin),
                workspace,
                created_by: "bootstrap".into(),
                ..Default::default()
            };
            let now = now_unix();
            let (raw, record) = lifecycle::create(None, &store, req, now)
                .await
                .map_err(|e| CliError::failed(e.to_string()))?;
            if json {
                output::json(&json!({ "token": raw, "info": record.view(now), "store": store_json(&cfg.store) }));
            } else {
                let scope = record
                    .workspace
                    .as_deref()
                    .map(|w| format!("workspace `{w}`"))
                    .unwrap_or_else(|| "all workspaces".into());
                println!("Created admin token {} for {scope}:\n\n  {raw}\n", record.id);
                println!("This is the only time it is shown. Use it with:");
                println!("  export PORTCULLIS_ADMIN_TOKEN={raw}");
            }
        }
        AdminTokenCommand::List { config, json } => {
            let (_, store) = open(&config).await?;
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = store
                    .list(
                        ListFilter {
                            kind: TokenKind::Admin,
                            workspace: None,
                        },
                        200,
                        cursor.as_deref(),
                    )
                    .await
                    .map_err(|e| CliError::failed(e.to_string()))?;
                all.extend(page.tokens);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let now = now_unix();
            if json {
                output::json(&json!({ "tokens": all.iter().map(|t| t.view(now)).collect::<Vec<_>>() }));
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|t| {
                        let v = serde_json::to_value(t.view(now)).expect("json");
                        ["id", "name", "workspace", "status", "hint", "created_at", "last_used_at"]
                            .iter()
                            .map(|k| output::cell(&v[*k]))
                            .collect()
                    })
                    .collect();
                output::table(&["ID", "NAME", "WORKSPACE", "STATUS", "HINT", "CREATED", "LAST USED"], &rows);
            }
        }
        AdminTokenCommand::Revoke { token_id, config, json } => {
            let (_, store) = open(&config).await?;
            let not_found = || CliError::failed(format!("no admin token `{token_id}`; `portcullis admin token list` shows them"));
            if !token::is_valid_id(&token_id) {
                return Err(not_found());
            }
            match store.get(&token_id).await.map_err(|e| CliError::failed(e.to_string()))? {
                Some(r) if r.kind == TokenKind::Admin => {}
                _ => return Err(not_found()),
            }
            let now = now_unix();
            let revoked = lifecycle::revoke(None, &store, &token_id, now)
                .await
                .map_err(|e| CliError::failed(e.to_string()))?
                .ok_or_else(not_found)?;
            if json {
                output::json(&serde_json::to_value(revoked.record.view(now)).expect("json"));
            } else {
                println!("Revoked admin token {token_id}. A running gateway refuses it within its revocation poll interval.");
            }
        }
    }
    Ok(())
}
