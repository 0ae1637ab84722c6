//! `portcullis member …`: members of a workspace and their sign-in links,
//! through the admin API (docs/members.md, docs/cli.md).

use clap::Subcommand;
use http::Method;
use serde_json::json;

use super::client::{ApiClient, seg};
use super::{AdminApiArgs, CliResult, output};

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a member to a workspace.
    Add {
        /// Workspace slug.
        workspace: String,
        /// The member's email address (kept lowercase).
        #[arg(long)]
        email: String,
        /// `owner` (manages every token of the workspace) or `member` (only their own).
        #[arg(long, default_value = "member")]
        role: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a workspace's members, oldest first.
    List {
        /// Workspace slug.
        workspace: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member: revokes their tokens and ends their sessions at once.
    Remove {
        /// Workspace slug.
        workspace: String,
        /// Member id (`mem_…`, from `member list`).
        member_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a sign-in link (valid 24 h, single use); adds the member if absent.
    Invite {
        /// Workspace slug.
        workspace: String,
        /// The person's email address.
        #[arg(long)]
        email: String,
        /// Role if the member is added: `owner` or `member`.
        #[arg(long, default_value = "member")]
        role: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(api: &AdminApiArgs, cmd: MemberCommand) -> CliResult {
    let client = ApiClient::admin(&api.admin_url)?;
    match cmd {
        MemberCommand::Add {
            workspace,
            email,
            role,
            name,
            json,
        } => {
            let mut body = json!({ "email": email, "role": role });
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let (_, v) = client
                .expect(Method::POST, &format!("/v1/workspaces/{}/members", seg(&workspace)?), Some(&body))
                .await?;
            if json {
                output::json(&v);
            } else {
                println!(
                    "Added {} ({}) to workspace {workspace} as {}.",
                    output::cell(&v["email"]),
                    output::cell(&v["id"]),
                    output::cell(&v["role"])
                );
            }
        }
        MemberCommand::List { workspace, json } => {
            let (_, v) = client
                .expect(Method::GET, &format!("/v1/workspaces/{}/members", seg(&workspace)?), None)
                .await?;
            if json {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        ["id", "email", "name", "role", "created_at"]
                            .iter()
                            .map(|k| output::cell(&m[*k]))
                            .collect()
                    })
                    .collect();
                output::table(&["ID", "EMAIL", "NAME", "ROLE", "ADDED"], &rows);
            }
        }
        MemberCommand::Remove {
            workspace,
            member_id,
            json,
        } => {
            let (_, v) = client
                .expect(
                    Method::DELETE,
                    &format!("/v1/workspaces/{}/members/{}", seg(&workspace)?, seg(&member_id)?),
                    None,
                )
                .await?;
            if json {
                output::json(&v);
            } else {
                println!(
                    "Removed {} ({member_id}); {} token(s) revoked, sessions ended.",
                    output::cell(&v["member"]["email"]),
                    output::cell(&v["revoked_tokens"])
                );
            }
        }
        MemberCommand::Invite {
            workspace,
            email,
            role,
            json,
        } => {
            let body = json!({ "email": email, "role": role });
            let (_, v) = client
                .expect(
                    Method::POST,
                    &format!("/v1/workspaces/{}/members/invite", seg(&workspace)?),
                    Some(&body),
                )
                .await?;
            if json {
                output::json(&v);
            } else {
                if v["created"] == true {
                    println!(
                        "Added {} to workspace {workspace} as {}.",
                        output::cell(&v["member"]["email"]),
                        output::cell(&v["member"]["role"])
                    );
                }
                println!(
                    "Sign-in link for {} (single use, until {}):",
                    output::cell(&v["member"]["email"]),
                    output::cell(&v["expires_at"])
                );
                println!();
                println!("  {}", output::cell(&v["url"]));
                println!();
                println!("Send it to them yourself; it is shown only this once.");
            }
        }
    }
    Ok(())
}
