//! The data plane's part of the audit trail: a `tool_call` event for each
//! JSON-RPC `tools/call` that passed authentication and the rate limit
//! (docs/audit.md). What is recorded is the token, the server, the tool
//! name, the status, the time to the response head and the request id;
//! never the arguments, never the result.
//!
//! Cost: nothing unless the request is a `tools/call` and `[audit]
//! tool_calls` is on; then a copy of the token id and of the tool name
//! (read by the pipeline's one JSON-RPC parse, `mcp::jsonrpc::inspect`,
//! the arguments skipped unread), and a `try_send` on the audit queue,
//! which never waits.

use std::time::Instant;

use http::HeaderValue;

use crate::audit::{Audit, ToolCall, now_ms};
use crate::auth::CachedToken;
use crate::config::Workspace;

/// What the pipeline learned about a `tools/call`, for its audit event.
#[derive(Debug)]
pub(super) struct Call {
    at: i64,
    server: Option<usize>,
    tool: Option<Box<str>>,
}

/// The call's server and tool: for an aggregating workspace the
/// `<server>__` prefix names the server and is taken off the tool name;
/// a pass-through workspace has one server.
/// `name` is `params.name` as the JSON-RPC check read it (`None` when
/// absent, or written with escapes, which no valid tool name needs).
pub(super) fn call(workspace: &Workspace, name: Option<&str>) -> Call {
    // Client input: a name outside the tool-name alphabet (markup, control
    // characters, a pasted secret) is not stored; the event says a
    // `tools/call` happened, without a tool (as usage counts it "other").
    let name = name.filter(|n| crate::usage::name::is_valid(n.as_bytes()));
    let (server, tool) = match name {
        None => (None, None),
        Some(n) if workspace.is_aggregate() => match n.split_once("__") {
            Some((s, t)) => match workspace.servers.iter().position(|srv| srv.name == s) {
                Some(i) => (Some(i), Some(t)),
                None => (None, Some(n)),
            },
            None => (None, Some(n)),
        },
        Some(n) => (Some(0), Some(n)),
    };
    Call {
        at: now_ms(),
        server: if workspace.is_aggregate() { server } else { Some(0) },
        // Bounded by the check above (at most 64 bytes).
        tool: tool.map(Into::into),
    }
}

/// Queues the event (never waits; see `audit::Audit::tool_call`).
pub(super) fn emit(
    audit: &Audit,
    call: Call,
    workspace: usize,
    token: &CachedToken,
    status: u16,
    start: Instant,
    request_id: &HeaderValue,
) {
    audit.tool_call(ToolCall {
        at: call.at,
        workspace,
        server: call.server,
        token_id: token.id.clone(),
        tool: call.tool,
        status,
        duration_us: start.elapsed().as_micros() as u64,
        request_id: request_id.clone(),
    });
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_top_level_name_is_recorded_never_one_inside_the_arguments() {
        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"not-me","secret":"s3"},"name":"echo"}}"#;
        let Ok(crate::mcp::jsonrpc::Body::Message { name, .. }) = crate::mcp::jsonrpc::inspect(body) else {
            panic!("a valid message")
        };
        assert_eq!(name, Some("echo"));
    }
}
