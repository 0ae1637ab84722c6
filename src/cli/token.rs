//! `portcullis token validate`: asks the gateway whether a token is valid.

use clap::Subcommand;
use http::Method;

use super::client::ApiClient;
use super::{CliError, CliResult, output};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Check the token in PORTCULLIS_TOKEN against the gateway.
    Validate {
        /// Base URL of the gateway's data listener.
        #[arg(long, env = "PORTCULLIS_GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
        gateway_url: String,
        /// Base URL of the admin API, where an admin token (mwa_…) is checked:
        /// the data listener accepts only workspace tokens.
        #[arg(long, env = "PORTCULLIS_ADMIN_URL", default_value = "http://127.0.0.1:9090")]
        admin_url: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: TokenCommand) -> CliResult {
    let TokenCommand::Validate {
        gateway_url,
        admin_url,
        json,
    } = cmd;
    let token = std::env::var("PORTCULLIS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CliError::usage("PORTCULLIS_TOKEN is not set; export the token to check"))?;
    // The data listener's self-check answers workspace tokens only (an admin
    // token must not be probed there, without a limit); an admin token is
    // checked where it works, at the admin API.
    let client = if token.starts_with("mwa_") {
        ApiClient::new(&admin_url, token, "admin API")?
    } else {
        ApiClient::new(&gateway_url, token, "gateway")?
    };
    let (status, v) = client.call(Method::GET, "/v1/tokens/self", None).await?;
    if status.is_success() {
        // An admin token is valid at the admin API, but it does not open
        // /ws/*: say so rather than let "valid" mislead.
        let admin = v["kind"] == "admin";
        const ADMIN_NOTE: &str = "admin tokens (mwa_) work on the admin API only; they do not open /ws/* (the data plane needs a workspace token, mwt_…, from `portcullis workspace token create`)";
        if json {
            let mut out = v.clone();
            if admin {
                out["opens_data_plane"] = serde_json::json!(false);
                out["note"] = serde_json::json!(ADMIN_NOTE);
            } else {
                out["opens_data_plane"] = serde_json::json!(true);
            }
            output::json(&out);
        } else {
            println!(
                "valid: {} token {} ({}), workspace {}, expires {}",
                output::cell(&v["kind"]),
                output::cell(&v["id"]),
                output::cell(&v["name"]),
                output::cell(&v["workspace"]),
                output::cell(&v["expires_at"])
            );
            if admin {
                println!("note: {ADMIN_NOTE}");
            }
        }
        return Ok(());
    }
    let extra = serde_json::json!({"valid": false, "status": status.as_u16()});
    if status.as_u16() == 401 {
        return Err(
            CliError::failed("the token is not valid (malformed, unknown, revoked or expired); ask an admin for a new one")
                .with_code("invalid_token")
                .with_extra(extra),
        );
    }
    Err(CliError::failed(format!("the gateway answered HTTP {status}")).with_extra(extra))
}
