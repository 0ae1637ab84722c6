//! `portcullis workspace …`: workspaces and their tokens through the admin API.

use clap::{ArgGroup, Subcommand};
use http::Method;
use serde_json::{Value, json};

use super::client::{ApiClient, seg};
use super::{AdminApiArgs, CliResult, output};

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// List the configured workspaces and their servers.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Workspace tokens: create, list, get, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Requests, errors and rate-limited answers per member, token, server
    /// or tool (usage analytics; counts lag by a few seconds).
    Usage(super::usage::UsageArgs),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a workspace token; the raw token is printed once.
    #[command(group(ArgGroup::new("owner").args(["member", "email"])))]
    Create {
        /// Workspace slug.
        workspace: String,
        /// A name that says who or what uses the token.
        #[arg(long)]
        name: String,
        /// Lifetime: 90d, 12h, 30m, 45s, 2w or seconds (3600); 0 or absent: never expires.
        #[arg(long, value_name = "DURATION", value_parser = super::duration::parse_duration, conflicts_with = "expires_at")]
        expires_in: Option<u64>,
        /// Expiry as an RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = super::duration::parse_instant)]
        expires_at: Option<i64>,
        /// Member id the token belongs to.
        #[arg(long)]
        member: Option<String>,
        /// Email of the person the token belongs to.
        #[arg(long)]
        email: Option<String>,
        /// Comma-separated servers the token may use (default: all).
        #[arg(long, value_delimiter = ',')]
        servers: Option<Vec<String>>,
        /// Per-token rate limit in requests per minute (default: the workspace's).
        #[arg(long)]
        requests_per_minute: Option<u32>,
        /// Print JSON (includes the token and an mcp.json snippet).
        #[arg(long)]
        json: bool,
    },
    /// List a workspace's tokens, newest first (never the raw values).
    List {
        /// Workspace slug.
        workspace: String,
        /// Tokens per page (1-200).
        #[arg(long, default_value_t = 50)]
        page_size: usize,
        /// Continue from a previous page's `next_cursor`.
        #[arg(long)]
        cursor: Option<String>,
        /// Fetch every page.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one token's record.
    Get {
        /// Workspace slug.
        workspace: String,
        /// Token id (`tkn_…`, from `token list` or the create output).
        token_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once; revoking twice is not an error.
    Revoke {
        /// Workspace slug.
        workspace: String,
        /// Token id (`tkn_…`, from `token list` or the create output).
        token_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(api: &AdminApiArgs, cmd: WorkspaceCommand) -> CliResult {
    let client = ApiClient::admin(&api.admin_url)?;
    match cmd {
        WorkspaceCommand::List { json } => {
            let (_, v) = client.expect(Method::GET, "/v1/workspaces", None).await?;
            if json {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["workspaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        let servers: Vec<String> = w["servers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| format!("{} ({})", output::cell(&s["name"]), output::cell(&s["url"])))
                            .collect();
                        vec![
                            output::cell(&w["slug"]),
                            output::cell(&w["url"]),
                            output::cell(&w["requests_per_minute"]),
                            servers.join(", "),
                        ]
                    })
                    .collect();
                output::table(&["SLUG", "URL", "RPM", "SERVERS"], &rows);
            }
        }
        WorkspaceCommand::Token { command } => token(&client, command).await?,
        WorkspaceCommand::Usage(args) => super::usage::run(&client, args).await?,
    }
    Ok(())
}

async fn token(client: &ApiClient, cmd: TokenCommand) -> CliResult {
    match cmd {
        TokenCommand::Create {
            workspace,
            name,
            expires_in,
            expires_at,
            member,
            email,
            servers,
            requests_per_minute,
            json,
        } => {
            let mut body = json!({ "name": name });
            if let Some(e) = super::duration::expires_in(expires_in, expires_at, crate::token::now_unix())? {
                body["expires_in"] = json!(e);
            }
            if let Some(m) = member {
                body["member_id"] = json!(m);
            }
            if let Some(e) = email {
                body["email"] = json!(e);
            }
            if let Some(s) = servers {
                body["allowed_servers"] = json!(s);
            }
            if let Some(r) = requests_per_minute {
                body["requests_per_minute"] = json!(r);
            }
            let (_, v) = client
                .expect(Method::POST, &format!("/v1/workspaces/{}/tokens", seg(&workspace)?), Some(&body))
                .await?;
            if json {
                output::json(&v);
            } else {
                let token = output::cell(&v["token"]);
                println!(
                    "Created token {} ({}) for workspace {workspace}.",
                    output::cell(&v["info"]["id"]),
                    output::cell(&v["info"]["name"])
                );
                println!();
                println!("  {token}");
                println!();
                println!("This is the only time the token is shown; store it now.");
                if let Some(e) = v["info"]["expires_at"].as_str() {
                    println!("It expires at {e}.");
                }
                let url = v
                    .pointer(&format!("/mcp_json/mcpServers/{workspace}/url"))
                    .map(output::cell)
                    .unwrap_or_default();
                println!("Point a client at {url} with the header `Authorization: Bearer {token}`; mcp.json:");
                println!("{}", serde_json::to_string_pretty(&v["mcp_json"]).expect("json"));
            }
        }
        TokenCommand::List {
            workspace,
            page_size,
            cursor,
            all,
            json,
        } => {
            let mut cursor = cursor;
            let mut tokens: Vec<Value> = Vec::new();
            let next = loop {
                let mut path = format!("/v1/workspaces/{}/tokens?page_size={page_size}", seg(&workspace)?);
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", seg(c)?));
                }
                let (_, v) = client.expect(Method::GET, &path, None).await?;
                tokens.extend(v["tokens"].as_array().cloned().unwrap_or_default());
                let next = v["next_cursor"].as_str().map(str::to_owned);
                match next {
                    Some(n) if all => cursor = Some(n),
                    other => break other,
                }
            };
            if json {
                output::json(&json!({ "tokens": tokens, "next_cursor": next }));
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        ["id", "name", "status", "hint", "created_at", "expires_at", "last_used_at"]
                            .iter()
                            .map(|k| output::cell(&t[*k]))
                            .collect()
                    })
                    .collect();
                output::table(&["ID", "NAME", "STATUS", "HINT", "CREATED", "EXPIRES", "LAST USED"], &rows);
                if let Some(n) = next {
                    println!("\nMore tokens: add --cursor {n} (or --all).");
                }
            }
        }
        TokenCommand::Get { workspace, token_id, json } => {
            let (_, v) = client
                .expect(
                    Method::GET,
                    &format!("/v1/workspaces/{}/tokens/{}", seg(&workspace)?, seg(&token_id)?),
                    None,
                )
                .await?;
            if json { output::json(&v) } else { output::record(&v) }
        }
        TokenCommand::Revoke { workspace, token_id, json } => {
            let (_, v) = client
                .expect(
                    Method::DELETE,
                    &format!("/v1/workspaces/{}/tokens/{}", seg(&workspace)?, seg(&token_id)?),
                    None,
                )
                .await?;
            if json {
                output::json(&v);
            } else {
                println!(
                    "Revoked {token_id} at {}; it is refused from now on.",
                    output::cell(&v["revoked_at"])
                );
            }
        }
    }
    Ok(())
}
