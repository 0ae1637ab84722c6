//! The `portcullis` command line. One file per command group; this file holds
//! the argument definitions and the dispatch.
//!
//! Exit codes: 0 success, 1 a failure the server reported, 2 bad usage or an
//! unreachable server (clap's own usage errors also exit 2).

mod admin;
mod client;
mod output;
mod serve;
mod token;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit with a message; `code` is 1 (server-reported) or 2 (usage/unreachable).
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

pub type CliResult = Result<(), CliError>;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Authenticating reverse proxy and MCP gateway", long_about = None)]
#[command(after_help = "Start here: `portcullis demo` runs the gateway with a demo upstream and prints what to do next.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, env = "PORTCULLIS_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Args, Clone)]
pub struct AdminApiArgs {
    /// Base URL of the admin API. The admin token is read from PORTCULLIS_ADMIN_TOKEN.
    #[arg(long, env = "PORTCULLIS_ADMIN_URL", default_value = "http://127.0.0.1:9090", global = true)]
    pub admin_url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (data plane and admin API) until SIGTERM or Ctrl-C.
    Serve(ConfigArg),
    /// Validate a configuration file; exits non-zero with the problem on error.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the gateway together with the bundled demo upstream, for a first try.
    Demo(ConfigArg),
    /// Run only the bundled demo MCP server (Streamable HTTP at /mcp).
    DemoUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: std::net::SocketAddr,
        /// Require `Authorization: Bearer KEY` from the gateway.
        #[arg(long, env = "DEMO_UPSTREAM_KEY")]
        api_key: Option<String>,
    },
    /// Admin tokens, managed offline against the configured store.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Workspaces and their tokens, through the admin API.
    Workspace {
        #[command(flatten)]
        api: AdminApiArgs,
        #[command(subcommand)]
        command: workspace::WorkspaceCommand,
    },
    /// Check a workspace token.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
}

/// Parses the command line, runs the command, and maps errors to exit codes.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = crate::telemetry::init_tracing() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(c) => serve::serve(&c.config).await,
            Command::CheckConfig { config, json } => serve::check_config(&config.config, json),
            Command::Demo(c) => serve::demo(&c.config).await,
            Command::DemoUpstream { listen, api_key } => serve::demo_upstream(listen, api_key).await,
            Command::Admin { command } => admin::run(command).await,
            Command::Workspace { api, command } => workspace::run(&api, command).await,
            Command::Token { command } => token::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::telemetry::announce("ERROR", &e.message);
            ExitCode::from(e.code)
        }
    }
}
