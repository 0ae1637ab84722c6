//! Portcullis: an authenticating reverse proxy and MCP gateway.
//!
//! # Layout
//! - [`token`]: token format (prefix, randomness, checksum), hashing, the record.
//! - [`store`]: the `TokenStore` trait and its SQLite backend; the only writer
//!   of durable state.
//! - [`auth`]: the in-memory hash index, its invalidation, the verify step, and
//!   token creation/revocation.
//! - [`audit`]: the audit trail (control-plane events written at once,
//!   data-plane events through a bounded queue), below `auth` so that token
//!   creation and revocation record themselves.
//! - [`limit`]: per-token rate limiting (governor).
//! - [`state`]: `AppState`, what both planes share, and the store openers;
//!   below both planes.
//! - [`gateway`]: the data plane, an ordered pipeline authenticate → limit →
//!   body → forward.
//! - [`mcp`]: JSON-RPC envelope handling, SSE framing, keep-alive and
//!   revocable streams, and the aggregating server (`mcp::aggregate`).
//! - [`upstream`]: pooled HTTP client to upstream servers; knows nothing of tokens.
//! - [`usage`]: per-member usage analytics, counted in memory on the data
//!   plane and flushed to the store.
//! - [`admin`]: the control-plane HTTP API.
//! - [`sso`]: members' single sign-on with an OpenID Connect provider,
//!   at `/signin/oidc` on the data listener.
//! - [`error`]: the one mapping from failures to what clients see.
//! - [`config`]: the TOML file, validation and runtime types.
//! - [`app`] and [`server`]: wiring, listeners, background tasks, shutdown;
//!   only [`cli`] imports [`app`].
//!
//! Each module imports only those below it; ARCHITECTURE.md ("Invariants")
//! has the table and `tests/it/layout.rs` enforces it.
//! - [`telemetry`]: tracing and Prometheus metrics.
//! - [`demo`]: the bundled demo MCP server.
//! - [`cli`]: the command line.
//! - [`build_info`]: version, commit, build date, backends, MCP revisions.
//! - `fuzzing` (hidden): entry points for the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod limit;
pub mod mcp;
pub mod server;
pub mod sso;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod ui;
pub mod upstream;
pub mod usage;
pub mod web;
