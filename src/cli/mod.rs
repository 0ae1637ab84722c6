//! The `portcullis` command line. One file per command group; this file holds
//! the argument definitions and the dispatch.
//!
//! Exit codes: 0 success, 1 a failure the server reported, 2 bad usage or an
//! unreachable server (clap's own usage errors also exit 2).

mod admin;
mod audit;
mod client;
mod doctor;
mod duration;
mod init;
mod member;
mod output;
mod serve;
mod token;
mod usage;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit with a message; `code` is 1 (server-reported) or 2 (usage/unreachable).
/// `error_code` is the snake_case `error.code` of the `--json` error object
/// (the server's own code when it reported one); `extra` adds members next
/// to `error` (e.g. `check-config`'s `valid` and `path`).
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error_code: String,
    pub message: String,
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            error_code: "usage".into(),
            message: message.into(),
            extra: None,
        }
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        CliError {
            error_code: "unreachable".into(),
            ..Self::usage(message)
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            error_code: "failed".into(),
            message: message.into(),
            extra: None,
        }
    }
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error_code = code.into();
        self
    }
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        if let serde_json::Value::Object(m) = extra {
            self.extra = Some(m);
        }
        self
    }
    /// `{"error": {"code", "message"}, …extra}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = self.extra.clone().unwrap_or_default();
        m.insert(
            "error".into(),
            serde_json::json!({"code": self.error_code, "message": self.message}),
        );
        serde_json::Value::Object(m)
    }
}

pub type CliResult = Result<(), CliError>;

/// Shown at the end of every `--help`.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 a failure the server reported (or a failed check); 2 bad usage, bad configuration or an unreachable server.\nWith --json, the result is one JSON object on stdout, and a failure is {\"error\":{\"code\",\"message\"}} on stdout (docs/cli.md).";

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Authenticating reverse proxy and MCP gateway", long_about = None)]
#[command(
    before_help = "Start here: `portcullis demo` runs the gateway with a demo upstream and prints what to do next; `portcullis init DIR` writes a starter config."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The command-line definition with the exit codes on every `--help`; also
/// what completions and the man page are generated from.
pub fn command() -> clap::Command {
    fn with_exit_codes(c: clap::Command) -> clap::Command {
        let names: Vec<String> = c.get_subcommands().map(|s| s.get_name().to_string()).collect();
        let mut c = c.after_help(EXIT_CODES);
        for n in names {
            c = c.mut_subcommand(n, with_exit_codes);
        }
        c
    }
    let root = with_exit_codes(<Cli as clap::CommandFactory>::command());
    root.after_help(format!("{START_HERE}\n\n{EXIT_CODES}"))
}

const START_HERE: &str = "Start here: `portcullis demo` runs the gateway with a demo upstream and prints what to do next; `portcullis init DIR` writes a starter config for production, `portcullis doctor` checks it.";

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
    /// The audit trail, through the admin API.
    Audit {
        #[command(flatten)]
        api: AdminApiArgs,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Members of a workspace and their sign-in links, through the admin API.
    Member {
        #[command(flatten)]
        api: AdminApiArgs,
        #[command(subcommand)]
        command: member::MemberCommand,
    },
    /// Check a workspace token.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Check a deployment: store, ports, upstreams, Redis, admin exposure, keys, clock.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object with one entry per check.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter config (fresh session key, data/ store next to it).
    Init {
        /// Directory to create the config in (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite an existing portcullis.toml.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Version, git commit, build date, store backends and MCP revisions.
    Version {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to generate the script for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command line.
    Man,
}

/// Parses the command line, runs the command, and maps errors to exit codes.
pub fn run() -> ExitCode {
    // Whether errors must be JSON too: known before parsing, so that even a
    // usage error of a `--json` invocation is a JSON object.
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) if json && e.use_stderr() => {
            let err = CliError::usage(e.render().to_string().trim().trim_start_matches("error: ").to_string());
            output::json(&err.to_json());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    if let Err(e) = crate::telemetry::init_tracing() {
        let err = CliError::usage(e);
        if json {
            output::json(&err.to_json());
        }
        eprintln!("error: {}", err.message);
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
            Command::Audit { api, command } => audit::run(&api, command).await,
            Command::Member { api, command } => member::run(&api, command).await,
            Command::Token { command } => token::run(command).await,
            Command::Doctor { config, json } => doctor::run(&config.config, json).await,
            Command::Init { dir, force, json } => init::run(&dir, force, json),
            Command::Version { json } => {
                version(json);
                Ok(())
            }
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut command(), "portcullis", &mut std::io::stdout());
                Ok(())
            }
            Command::Man => clap_mangen::Man::new(command())
                .render(&mut std::io::stdout())
                .map_err(|e| CliError::failed(format!("cannot write the man page: {e}"))),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                output::json(&e.to_json());
            }
            crate::telemetry::announce("ERROR", &e.message);
            ExitCode::from(e.code)
        }
    }
}

fn version(json: bool) {
    use crate::build_info as b;
    if json {
        output::json(&b::as_json());
    } else {
        println!("portcullis {}", b::VERSION);
        println!("git commit:      {}", b::GIT_COMMIT);
        println!("build date:      {}", b::BUILD_DATE);
        println!("store backends:  {}", b::STORE_BACKENDS.join(", "));
        println!("MCP revisions:   {}", b::mcp_revisions().join(", "));
    }
}
