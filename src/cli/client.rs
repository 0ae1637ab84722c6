//! A small JSON-over-HTTP client for the admin API and the gateway.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::CliError;

pub struct ApiClient {
    base: String,
    token: String,
    what: &'static str,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// A client for the admin API, with the token from `PORTCULLIS_ADMIN_TOKEN`.
    pub fn admin(base: &str) -> Result<Self, CliError> {
        let token = std::env::var("PORTCULLIS_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
            CliError::usage("PORTCULLIS_ADMIN_TOKEN is not set. Create an admin token with `portcullis admin token create --name NAME` and export it.")
        })?;
        Self::new(base, token, "admin API")
    }

    pub fn new(base: &str, token: String, what: &'static str) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(CliError::usage(format!("`{base}` is not an http:// URL")));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        Ok(ApiClient {
            base,
            token,
            what,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request; returns the status and the JSON body. An unreachable
    /// server is a usage error (exit 2) with a hint.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), CliError> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).expect("json"))).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| CliError::usage(format!("invalid URL {url}: {e}")))?;
        let send = tokio::time::timeout(std::time::Duration::from_secs(30), self.client.request(req));
        let resp = match send.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(CliError::unreachable(format!(
                    "cannot reach the {} at {}: {}. Is `portcullis serve` running? Point --admin-url / PORTCULLIS_ADMIN_URL (or --gateway-url for the gateway) at it.",
                    self.what,
                    self.base,
                    root_cause(&e)
                )));
            }
            Err(_) => {
                return Err(CliError::unreachable(format!(
                    "the {} at {} did not answer within 30 s",
                    self.what, self.base
                )));
            }
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::unreachable(format!("reading the answer from {}: {e}", self.base)))?
            .to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Ok((status, value))
    }

    /// Like [`call`](Self::call) but turns a non-2xx answer into an error
    /// (exit 1) carrying the server's message and what to do about it.
    pub async fn expect(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), CliError> {
        let (status, v) = self.call(method, path, body).await?;
        if status.is_success() {
            return Ok((status, v));
        }
        let message = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        let hint = match status.as_u16() {
            401 => " (check PORTCULLIS_ADMIN_TOKEN: it must be a valid, unrevoked admin token)",
            403 => " (this admin token is scoped to another workspace)",
            404 => " (`portcullis workspace list` shows the workspaces; `portcullis workspace token list WS` the tokens)",
            _ => "",
        };
        let code = v.pointer("/error/code").and_then(Value::as_str).unwrap_or("failed").to_string();
        Err(CliError::failed(format!("{message}{hint}"))
            .with_code(code)
            .with_extra(serde_json::json!({"status": status.as_u16()})))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One segment of an admin API path (a workspace slug, a token or member
/// id), refused when it would change the path.
pub(super) fn seg(s: &str) -> Result<&str, CliError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(CliError::usage(format!("`{s}` is not a valid workspace slug or id")));
    }
    Ok(s)
}
