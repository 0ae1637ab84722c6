//! The demo upstream: a small MCP server (Streamable HTTP) that ships with the
//! project so that a newcomer has something real behind the gateway.
//!
//! Tools: `echo` (returns its text), `add` (sums two numbers) and `progress`
//! (streams `notifications/progress` over SSE for a while before its result;
//! shows that the gateway does not buffer streams). It answers `initialize`,
//! `ping`, `tools/list` and `tools/call`; notifications and responses get 202;
//! a batch gets an array of answers (before 2025-06-18) or -32600 (since);
//! `GET` gets 405 with `Allow`.
//! With an API key it requires `Authorization: Bearer <key>`, which is how the
//! example configuration shows upstream credentials being injected.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{Body, full};

const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

pub struct DemoOptions {
    pub api_key: Option<String>,
}

/// Serves the demo upstream on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, opts: DemoOptions, shutdown: CancellationToken) {
    let opts = Arc::new(opts);
    let service = service_fn(move |req| {
        let opts = Arc::clone(&opts);
        async move { Ok::<_, Infallible>(handle(req, &opts).await) }
    });
    let conn_opts = crate::server::ConnOptions {
        header_read_timeout: Duration::from_secs(10),
        max_connections: 16_384,
        shutdown_grace: Duration::from_secs(5),
    };
    crate::server::serve("demo-upstream", listener, service, conn_opts, shutdown).await;
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).expect("json")));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn rpc_error(id: &Value, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn handle(req: Request<Incoming>, opts: &DemoOptions) -> Response<Body> {
    if req.uri().path() != "/mcp" {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "the MCP endpoint is /mcp"}));
    }
    if let Some(key) = &opts.api_key {
        let ok = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.strip_prefix("Bearer ") == Some(key.as_str()));
        if !ok {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &rpc_error(&Value::Null, -32001, "demo upstream: missing or wrong API key"),
            );
        }
    }
    match *req.method() {
        Method::POST => {}
        Method::DELETE => return json_response(StatusCode::OK, &json!({})),
        // No standalone server-to-client stream: the spec's answer is 405,
        // and a 405 carries `Allow` (RFC 9110 §15.5.6) with a JSON-RPC body.
        _ => return not_allowed(),
    }
    let wants_sse = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    // Without the header a server assumes 2025-03-26 (the spec's rule for
    // clients that predate it), the last revision with batches.
    let batches_allowed = req
        .headers()
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v < "2025-06-18");
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json_response(StatusCode::PAYLOAD_TOO_LARGE, &rpc_error(&Value::Null, -32600, "body too large")),
    };
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return json_response(StatusCode::BAD_REQUEST, &rpc_error(&Value::Null, -32700, "Parse error")),
    };
    if let Value::Array(items) = msg {
        return batch(items, batches_allowed).await;
    }
    answer(msg, wants_sse).await
}

fn not_allowed() -> Response<Body> {
    let mut r = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &rpc_error(
            &Value::Null,
            -32600,
            "Method not allowed: this server has no server-initiated stream; use POST",
        ),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

/// A JSON-RPC batch: one answer per request, in order, in one JSON array;
/// only notifications and responses: 202. Revisions from 2025-06-18 on
/// removed batching, so there a batch is one -32600 error.
async fn batch(items: Vec<Value>, allowed: bool) -> Response<Body> {
    if !allowed {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(
                &Value::Null,
                -32600,
                "Invalid Request: batches are not supported from revision 2025-06-18 on",
            ),
        );
    }
    if items.is_empty() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &rpc_error(&Value::Null, -32600, "Invalid Request: empty batch"),
        );
    }
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let resp = answer(item, false).await;
        if resp.status() == StatusCode::ACCEPTED {
            continue; // a notification or a response: nothing to answer
        }
        // The demo's own answers are small JSON bodies, read back whole.
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => continue,
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            answers.push(v);
        }
    }
    if answers.is_empty() {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    }
    json_response(StatusCode::OK, &Value::Array(answers))
}

/// One JSON-RPC message.
async fn answer(msg: Value, wants_sse: bool) -> Response<Body> {
    if !msg.is_object() {
        return json_response(StatusCode::BAD_REQUEST, &rpc_error(&Value::Null, -32600, "Invalid Request"));
    }
    let (Some(method), Some(id)) = (msg.get("method").and_then(Value::as_str), msg.get("id")) else {
        // Notifications and responses are accepted without a body.
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let result = match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
            let version = SUPPORTED_VERSIONS
                .iter()
                .find(|v| **v == asked)
                .copied()
                .unwrap_or(SUPPORTED_VERSIONS[0]);
            let mut r = json_response(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "portcullis-demo-upstream", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Demo tools behind Portcullis: echo, add, progress."
                }}),
            );
            let mut sid = [0u8; 16];
            getrandom::fill(&mut sid).expect("OS random source");
            let sid: String = sid.iter().map(|b| format!("{b:02x}")).collect();
            r.headers_mut().insert("mcp-session-id", HeaderValue::from_str(&sid).expect("hex"));
            return r;
        }
        "ping" => json!({}),
        "tools/list" => json!({"tools": tools()}),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            match name {
                "echo" => match args.get("text").and_then(Value::as_str) {
                    Some(t) => text_result(t),
                    None => return json_response(StatusCode::OK, &rpc_error(id, -32602, "echo needs a string argument `text`")),
                },
                "add" => match (args.get("a").and_then(Value::as_f64), args.get("b").and_then(Value::as_f64)) {
                    (Some(a), Some(b)) => text_result(&format!("{}", a + b)),
                    _ => return json_response(StatusCode::OK, &rpc_error(id, -32602, "add needs numbers `a` and `b`")),
                },
                "progress" => {
                    let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(5).clamp(1, 100);
                    let interval = Duration::from_millis(args.get("interval_ms").and_then(Value::as_u64).unwrap_or(500).min(10_000));
                    let token = params.pointer("/_meta/progressToken").cloned();
                    return progress(id.clone(), steps, interval, token, wants_sse).await;
                }
                other => return json_response(StatusCode::OK, &rpc_error(id, -32602, &format!("Unknown tool: {other}"))),
            }
        }
        other => return json_response(StatusCode::OK, &rpc_error(id, -32601, &format!("Method not found: {other}"))),
    };
    json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Returns the text it is given.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "add", "description": "Adds two numbers.",
         "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
        {"name": "progress", "description": "Reports progress for `steps` × `interval_ms`, then returns. Streams over SSE.",
         "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer", "minimum": 1, "maximum": 100}, "interval_ms": {"type": "integer", "minimum": 0, "maximum": 10000}}}}
    ])
}

/// The `progress` tool: an SSE stream of progress notifications, then the result.
async fn progress(id: Value, steps: u64, interval: Duration, token: Option<Value>, wants_sse: bool) -> Response<Body> {
    let result = json!({"jsonrpc": "2.0", "id": id, "result": text_result(&format!("done after {steps} steps"))});
    if !wants_sse {
        tokio::time::sleep(interval * steps as u32).await;
        return json_response(StatusCode::OK, &result);
    }
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    tokio::spawn(async move {
        for step in 1..=steps {
            tokio::time::sleep(interval).await;
            if let Some(t) = &token {
                let n = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": t, "progress": step, "total": steps, "message": format!("step {step} of {steps}")}});
                if tx.send_data(sse_event(&n)).await.is_err() {
                    return; // the client went away
                }
            }
        }
        let _ = tx.send_data(sse_event(&result)).await;
    });
    let mut r = Response::new(body.boxed());
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn sse_event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}
