//! The data plane's part of the audit trail: a `tool_call` event for each
//! JSON-RPC `tools/call` that passed authentication and the rate limit
//! (docs/audit.md). What is recorded is the token, the server, the tool
//! name, the status, the time to the response head and the request id;
//! never the arguments, never the result.
//!
//! Cost: nothing unless the request is a `tools/call` and `[audit]
//! tool_calls` is on; then one more borrowed parse of `params` (kept as a
//! raw slice by the pipeline's JSON-RPC check) for its `name`, the
//! arguments skipped unread, a copy of the token id and tool name, and a
//! `try_send` on the audit queue, which never waits.

use std::borrow::Cow;
use std::time::Instant;

use http::HeaderValue;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

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

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<Name<'a>>,
    /// Named so that serde skips it without a field-name comparison per
    /// unknown key; never read.
    #[serde(default, rename = "arguments")]
    _arguments: Option<IgnoredAny>,
}

/// See `mcp::jsonrpc::Str`: borrowed unless it has escapes.
#[derive(Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// The call's server and tool: for an aggregating workspace the
/// `<server>__` prefix names the server and is taken off the tool name;
/// a pass-through workspace has one server.
pub(super) fn call(workspace: &Workspace, params: Option<&RawValue>) -> Call {
    let name = params
        .and_then(|p| serde_json::from_str::<Params<'_>>(p.get()).ok())
        .and_then(|p| p.name)
        .map(|n| n.0);
    let (server, tool) = match name.as_deref() {
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
        // Bounded: a tool name is at most 64 characters by the protocol's
        // rules, but a client may send anything.
        tool: tool.map(|t| t[..t.char_indices().nth(128).map_or(t.len(), |(i, _)| i)].into()),
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
    use super::*;

    #[test]
    fn the_name_is_read_and_the_arguments_are_not_kept() {
        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"not-me","secret":"s3"},"name":"echo"}}"#;
        let Ok(crate::mcp::jsonrpc::Body::Message { params, .. }) = crate::mcp::jsonrpc::inspect(body) else {
            panic!("a valid message")
        };
        let p: Params<'_> = serde_json::from_str(params.unwrap().get()).unwrap();
        assert_eq!(p.name.unwrap().0, "echo", "the top-level name, not one inside the arguments");
        let p: Params<'_> = serde_json::from_str(r#"{"name":"a\"b"}"#).unwrap();
        assert_eq!(p.name.unwrap().0, "a\"b");
    }
}
