//! Forwarding one request to the workspace's upstream and streaming back.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::BodyExt;

use crate::auth::CachedToken;
use crate::config::Workspace;
use crate::error::{Body, GatewayError};
use crate::mcp::jsonrpc;
use crate::state::AppState;
use crate::telemetry::UpstreamFailure;
use crate::upstream::{Upstream, UpstreamError};

use super::request_id::X_REQUEST_ID;

/// Request headers a client may pass to the upstream (contract §3). Everything
/// else is dropped: above all `Authorization` (the MCP spec forbids passing a
/// client's token through), and `Host` (the client uses the upstream's own
/// authority, which the upstream client sets) and `Origin` (checked, not sent).
///
/// A `match` on the name, not a `const` array of `HeaderName`s: a `const` is
/// built afresh (and dropped) at every use, seven names per header checked.
fn is_pass_through(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "accept" | "content-type" | "last-event-id" | "mcp-session-id" | "mcp-protocol-version" | "mcp-method" | "mcp-name"
    ) || name.as_str().starts_with("mcp-param-")
}

/// Response headers that describe one hop, not the message (RFC 9110 §7.6.1),
/// and one the gateway sets itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "x-request-id"
    )
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(v: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// `Connection` options that name no header.
fn is_connection_keyword(t: &[u8]) -> bool {
    t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
}

#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts, borrowed from the pipeline; a struct for one call site would only rename them"
)]
pub(super) async fn forward(
    state: &AppState,
    workspace: &Workspace,
    upstream: &Upstream,
    token: &CachedToken,
    method: Method,
    client_headers: &HeaderMap,
    body: Bytes,
    request_id: &HeaderValue,
) -> Result<Response<Body>, GatewayError> {
    let server = &upstream.server;
    // Straight into the upstream request's wire form, no header map in
    // between. A configured header replaces a client's of the same name
    // (it is the gateway's credential or policy); values of one name keep
    // their order. One pass over the client's headers (a handful) with
    // string compares, instead of a hashed lookup per pass-through name.
    //
    // Headers the client's `Connection` names are for the hop to us only
    // (RFC 9110 §7.6.1), even if their name is on the pass-through list.
    let connection = client_headers.get_all(header::CONNECTION);
    let options = connection.iter().any(|v| tokens(v).any(|t| !is_connection_keyword(t)));
    let passed = client_headers.iter().filter(|(name, _)| {
        is_pass_through(name)
            && !server.headers.iter().any(|(n, _)| n == *name)
            && !(options
                && connection
                    .iter()
                    .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))))
    });
    // The request id is always the gateway's.
    let configured = server.headers.iter().filter(|(n, _)| *n != X_REQUEST_ID).map(|(n, v)| (n, v));
    let headers = passed.chain(configured).chain(std::iter::once((&X_REQUEST_ID, request_id)));
    let started = Instant::now();
    let result = upstream.send_parts(&method, headers, &body).await;
    let elapsed = started.elapsed();
    let server_index = 0;
    let resp = match result {
        Ok(r) => r,
        Err(UpstreamError::Timeout) => {
            state.metrics.upstream_failure(workspace.index, UpstreamFailure::Timeout);
            tracing::warn!(server = %server.name, timeout_ms = server.timeout.as_millis() as u64, "upstream timed out");
            return Err(GatewayError::UpstreamTimeout);
        }
        Err(UpstreamError::Unavailable(detail)) => {
            state.metrics.upstream_failure(workspace.index, UpstreamFailure::Unavailable);
            state.metrics.server_health(workspace.index, server_index, false);
            tracing::warn!(server = %server.name, error = %detail, "upstream unavailable");
            return Err(GatewayError::UpstreamUnavailable { upstream_status: None });
        }
    };
    state.metrics.upstream_latency(workspace.index, server_index, elapsed);
    state.metrics.server_health(workspace.index, server_index, true);
    // A 401/407 from the upstream means the gateway's configured credential is
    // wrong. Passing it on would tell the client its own (valid) token failed
    // and could start an OAuth flow against us; it is an upstream fault.
    if matches!(resp.status().as_u16(), 401 | 407) {
        state.metrics.upstream_failure(workspace.index, UpstreamFailure::Unavailable);
        tracing::error!(server = %server.name, status = resp.status().as_u16(), "upstream refused the gateway's credentials; check the server's configured headers");
        return Err(GatewayError::UpstreamUnavailable {
            upstream_status: Some(resp.status().as_u16()),
        });
    }
    let (parts, incoming) = resp.into_parts();
    // The body is handed over frame by frame as it arrives: JSON and
    // `text/event-stream` alike are never collected here.
    let is_event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    // An upstream body that breaks after its head went out cannot become an
    // error status any more; the client sees the response cut short. Say
    // so, in the request's span, and count it.
    let (metrics, span, ws, upstream_server) = (
        std::sync::Arc::clone(&state.metrics),
        tracing::Span::current(),
        workspace.index,
        std::sync::Arc::clone(&upstream.server),
    );
    let incoming = incoming.map_err(move |e| {
        metrics.upstream_body_aborted(ws);
        span.in_scope(|| tracing::warn!(server = %upstream_server.name, error = %e, "upstream response body aborted"));
        e
    });
    let keepalive = state.config.server.sse_keepalive;
    let body = if is_event_stream {
        let inner = if keepalive.is_zero() {
            incoming.boxed()
        } else {
            crate::mcp::KeepAlive::new(incoming, keepalive).boxed()
        };
        // A stream ends when the token stops being valid; its last event
        // answers the request's id (none for a GET).
        let id = jsonrpc::request_id(&body).map(|r| r.to_owned());
        crate::mcp::Revocable::new(inner, token, &state.streams_cutoff, id).boxed()
    } else {
        incoming.boxed()
    };
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    if parts.headers.keys().any(is_hop_by_hop) {
        let out_headers = out.headers_mut();
        for (name, v) in &parts.headers {
            if !is_hop_by_hop(name) {
                out_headers.append(name.clone(), v.clone());
            }
        }
    } else {
        // The usual case: nothing to strip, so hand the map over as it is.
        *out.headers_mut() = parts.headers;
    }
    Ok(out)
}
