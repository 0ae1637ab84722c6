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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: TokenCommand) -> CliResult {
    let TokenCommand::Validate { gateway_url, json } = cmd;
    let token = std::env::var("PORTCULLIS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CliError::usage("PORTCULLIS_TOKEN is not set; export the token to check"))?;
    let client = ApiClient::new(&gateway_url, token, "gateway")?;
    let (status, v) = client.call(Method::GET, "/v1/tokens/self", None).await?;
    if status.is_success() {
        if json {
            output::json(&v);
        } else {
            println!(
                "valid: {} token {} ({}), workspace {}, expires {}",
                output::cell(&v["kind"]),
                output::cell(&v["id"]),
                output::cell(&v["name"]),
                output::cell(&v["workspace"]),
                output::cell(&v["expires_at"])
            );
        }
        return Ok(());
    }
    if json {
        output::json(&serde_json::json!({"valid": false, "status": status.as_u16()}));
    }
    if status.as_u16() == 401 {
        return Err(CliError::failed(
            "the token is not valid (malformed, unknown, revoked or expired); ask an admin for a new one",
        ));
    }
    Err(CliError::failed(format!("the gateway answered HTTP {status}")))
}
