//! What this binary is: version, git commit and build date (from `build.rs`;
//! "unknown" when built without git), the store backends compiled in and the
//! MCP revisions it speaks. Shown by `portcullis version`, logged at start-up
//! and exported as the `portcullis_build_info` metric.

use serde_json::{Value, json};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("PORTCULLIS_GIT_COMMIT");
pub const BUILD_DATE: &str = env!("PORTCULLIS_BUILD_DATE");
/// Both backends are always compiled in.
pub const STORE_BACKENDS: [&str; 2] = ["sqlite", "redis"];

/// MCP handshake revisions the gateway negotiates, newest first
/// (aggregating workspaces; a pass-through workspace carries whatever its
/// upstream speaks). Defined here, not in `mcp`, which uses it, because
/// `telemetry` reports it and `mcp` reports to `telemetry`: this way
/// `build_info` imports nothing of the crate.
pub const MCP_REVISIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// MCP revisions the gateway negotiates ([`MCP_REVISIONS`]).
pub fn mcp_revisions() -> &'static [&'static str] {
    &MCP_REVISIONS
}

/// The `portcullis version --json` object (the shape docs/cli.md documents).
pub fn as_json() -> Value {
    json!({
        "version": VERSION,
        "git_commit": GIT_COMMIT,
        "build_date": BUILD_DATE,
        "store_backends": STORE_BACKENDS,
        "mcp_revisions": mcp_revisions(),
    })
}

/// The Prometheus gauge, value 1, with the build as labels.
pub fn metric() -> String {
    format!(
        "# HELP portcullis_build_info Build of this binary (value is always 1).\n# TYPE portcullis_build_info gauge\nportcullis_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\",build_date=\"{BUILD_DATE}\"}} 1\n"
    )
}
