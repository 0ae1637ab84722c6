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
        /// Lifetime: 90d, 12h, 30m, 45s, 2w or seconds (3600); 0 or absent: never expires.
        #[arg(long, value_name = "DURATION", value_parser = super::duration::parse_duration, conflicts_with = "expires_at")]
        expires_in: Option<u64>,
        /// Expiry as an RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = super::duration::parse_instant)]
        expires_at: Option<i64>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List admin tokens, newest first (never the raw values).
    List {
        /// Tokens per page (1-200).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=200))]
        page_size: u16,
        /// Continue from a previous page's `next_cursor`.
        #[arg(long)]
        cursor: Option<String>,
        /// Fetch every page.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token.
    Revoke {
        /// Admin token id (`tkn_…`, from `admin token list`).
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
    let store = crate::state::open_store_at(&ctx.store, &ctx.source)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    crate::telemetry::announce("INFO", &store_line(&ctx.store, existed));
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
        StoreConfig::Redis { url, .. } => format!("store: Redis {}", crate::state::redis_endpoint(url)),
    }
}

/// The `store` member of the offline commands' JSON.
fn store_json(store: &StoreConfig) -> serde_json::Value {
    match store {
        StoreConfig::Sqlite { path } => json!({"backend": "sqlite", "path": path.display().to_string()}),
        StoreConfig::Redis { url, .. } => json!({"backend": "redis", "url": crate::state::redis_endpoint(url)}),
    }
}

pub async fn run(cmd: AdminCommand) -> CliResult {
    let AdminCommand::Token { command } = cmd;
    match command {
        AdminTokenCommand::Create {
            name,
            workspace,
            expires_in,
            expires_at,
            config,
            json,
        } => {
            let expires_in = super::duration::expires_in(expires_in, expires_at, now_unix())?;
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
                expires_in,
                created_by: "bootstrap".into(),
                ..Default::default()
            };
            let now = now_unix();
            let (raw, record) = lifecycle::create(None, &store, req, now)
                .await
                .map_err(|e| CliError::failed(e.to_string()))?;
            // The token exists now and must be shown; a failed audit write
            // is reported, not fatal.
            if let Err(e) = crate::audit::record_offline(&*store, lifecycle::created_event(&record)).await {
                crate::telemetry::announce("WARN", &format!("the admin_token_created audit event was not written: {e}"));
            }
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
        AdminTokenCommand::List {
            page_size,
            cursor,
            all,
            config,
            json,
        } => {
            let (_, store) = open(&config).await?;
            let mut all_tokens = Vec::new();
            let mut cursor = cursor;
            let next = loop {
                let page = store
                    .list(
                        ListFilter {
                            kind: TokenKind::Admin,
                            workspace: None,
                        },
                        page_size as usize,
                        cursor.as_deref(),
                    )
                    .await
                    .map_err(|e| match e {
                        crate::store::StoreError::InvalidCursor => {
                            CliError::usage("--cursor is not a cursor this store issued; use a `next_cursor` from a previous page")
                        }
                        other => CliError::failed(other.to_string()),
                    })?;
                all_tokens.extend(page.tokens);
                match page.next_cursor {
                    Some(c) if all => cursor = Some(c),
                    other => break other,
                }
            };
            let all = all_tokens;
            let now = now_unix();
            if json {
                output::json(&json!({ "tokens": all.iter().map(|t| t.view(now)).collect::<Vec<_>>(), "next_cursor": next }));
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
                if let Some(n) = next {
                    println!("\nMore tokens: add --cursor {n} (or --all).");
                }
            }
        }
        AdminTokenCommand::Revoke { token_id, config, json } => {
            let (_, store) = open(&config).await?;
            let not_found = || {
                CliError::failed(format!("no admin token `{token_id}`; `portcullis admin token list` shows them")).with_code("not_found")
            };
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
            if revoked.newly_revoked {
                let event = lifecycle::revoked_event(&revoked.record, Some("bootstrap"));
                if let Err(e) = crate::audit::record_offline(&*store, event).await {
                    crate::telemetry::announce("WARN", &format!("the token_revoked audit event was not written: {e}"));
                }
            }
            if json {
                output::json(&serde_json::to_value(revoked.record.view(now)).expect("json"));
            } else {
                println!("Revoked admin token {token_id}. A running gateway refuses it within its revocation poll interval.");
            }
        }
    }
    Ok(())
}
