//! The one place that decides what a client sees when something fails.
//!
//! Data-plane failures ([`GatewayError`]) become an HTTP status plus a
//! JSON-RPC error body (contract §3); control-plane failures ([`ApiError`])
//! become `{"error":{"code","message"}}` (contract §4). Messages are fixed
//! strings: they never echo a token or carry internal detail.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;

/// The JSON-RPC error body `{"jsonrpc":"2.0","id":…,"error":{…}}`.
pub fn jsonrpc_error_body(id: Option<&RawValue>, code: i32, message: &str, data: Option<&serde_json::Value>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct ErrorObject<'a> {
        code: i32,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a serde_json::Value>,
    }
    #[derive(serde::Serialize)]
    struct ErrorResponse<'a> {
        jsonrpc: &'static str,
        id: Option<&'a RawValue>,
        error: ErrorObject<'a>,
    }
    serde_json::to_vec(&ErrorResponse {
        jsonrpc: "2.0",
        id,
        error: ErrorObject { code, message, data },
    })
    .expect("serializable")
}

/// Response body type of the data plane: either our own bytes or an
/// upstream's streamed body.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A body from bytes we produced.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No usable credential; `header_missing` drops the `error` parameter
    /// from `WWW-Authenticate` as RFC 6750 §3.1 asks.
    Unauthorized {
        header_missing: bool,
    },
    RateLimited {
        limit: u32,
        retry_after_secs: u64,
    },
    ParseError,
    InvalidRequest,
    TooLarge,
    Forbidden,
    UpstreamUnavailable {
        upstream_status: Option<u16>,
    },
    UpstreamTimeout,
    /// Revocation state cannot be trusted (the store is unreachable).
    ServiceUnavailable {
        retry_after_secs: u64,
    },
    MethodNotAllowed,
    NotFound,
    /// The client did not send its body in time.
    BodyTimeout,
    /// Aggregating workspace: a method the gateway does not serve.
    MethodNotFound,
    /// Aggregating workspace: unknown tool, prompt or resource, bad cursor.
    InvalidParams,
    /// Aggregating workspace: a request other than `initialize` without
    /// `Mcp-Session-Id`.
    SessionRequired,
    /// Aggregating workspace: a session id we did not issue (or sealed under
    /// a key no longer configured); the client starts a new session.
    SessionNotFound,
    /// Aggregating workspace: a tool, prompt or resource no server of the
    /// session has. The name (the client's own input, cut to 128 bytes) goes
    /// into `data`, as the MCP spec's "Unknown tool" example does.
    UnknownName {
        kind: &'static str,
        name: String,
    },
    /// Stateless revision (2026-07-28): `Mcp-Method` / `Mcp-Name` missing or
    /// not what the body says.
    HeaderMismatch,
}

impl GatewayError {
    fn parts(&self) -> (StatusCode, i32, &'static str) {
        match self {
            GatewayError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, -31001, "Unauthorized"),
            GatewayError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, -32000, "Rate limit exceeded"),
            GatewayError::ParseError => (StatusCode::BAD_REQUEST, -32700, "Parse error"),
            GatewayError::InvalidRequest => (StatusCode::BAD_REQUEST, -32600, "Invalid Request"),
            GatewayError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, -32600, "Request too large"),
            GatewayError::Forbidden => (StatusCode::FORBIDDEN, -31003, "Forbidden"),
            GatewayError::UpstreamUnavailable { .. } => (StatusCode::BAD_GATEWAY, -32603, "Upstream unavailable"),
            GatewayError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, -32603, "Upstream timeout"),
            GatewayError::ServiceUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, -32603, "Service unavailable"),
            GatewayError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, -32600, "Method not allowed"),
            GatewayError::NotFound => (StatusCode::NOT_FOUND, -32600, "Not found"),
            GatewayError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, -32600, "Request timeout"),
            // 400, not 404: with a session, MCP clients read a bare 404 as
            // "session expired" and start over.
            GatewayError::MethodNotFound => (StatusCode::BAD_REQUEST, -32601, "Method not found"),
            GatewayError::InvalidParams | GatewayError::UnknownName { .. } => (StatusCode::BAD_REQUEST, -32602, "Invalid params"),
            GatewayError::SessionRequired => (StatusCode::BAD_REQUEST, -32600, "Bad Request: Mcp-Session-Id header is required"),
            GatewayError::SessionNotFound => (StatusCode::NOT_FOUND, -32600, "Session not found"),
            GatewayError::HeaderMismatch => (StatusCode::BAD_REQUEST, -32020, "Header mismatch"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The `data` member of this failure's JSON-RPC error, if it has one.
    fn data(&self) -> Option<serde_json::Value> {
        match self {
            GatewayError::RateLimited { retry_after_secs, .. } | GatewayError::ServiceUnavailable { retry_after_secs } => {
                Some(serde_json::json!({ "retryAfter": retry_after_secs }))
            }
            GatewayError::UpstreamUnavailable { upstream_status: Some(s) } => Some(serde_json::json!({ "upstreamStatus": s })),
            GatewayError::UnknownName { kind, name } => {
                let mut end = name.len().min(128);
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                Some(serde_json::json!({ "detail": format!("Unknown {kind}: {}", &name[..end]) }))
            }
            _ => None,
        }
    }

    /// The JSON-RPC error body an answer to this failure carries; `id` is the
    /// request's, where it has one. A stream cut short sends it as its last
    /// event (`mcp::Revocable`).
    pub fn jsonrpc_body(&self, id: Option<&RawValue>) -> Vec<u8> {
        let (_, code, message) = self.parts();
        jsonrpc_error_body(id, code, message, self.data().as_ref())
    }

    /// The response for this failure; `id` is the request's JSON-RPC id when
    /// it could be read.
    pub fn into_response(self, id: Option<&RawValue>) -> Response<Body> {
        let (status, code, message) = self.parts();
        let data = self.data();
        let mut resp = Response::new(full(jsonrpc_error_body(id, code, message, data.as_ref())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            GatewayError::Unauthorized { header_missing } => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(if header_missing {
                        r#"Bearer realm="portcullis""#
                    } else {
                        r#"Bearer realm="portcullis", error="invalid_token""#
                    }),
                );
            }
            GatewayError::RateLimited { limit, retry_after_secs } => {
                h.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
                // IETF draft-ietf-httpapi-ratelimit-headers structured fields.
                if let Ok(v) = HeaderValue::from_str(&format!("\"per-token\";q={limit};w=60")) {
                    h.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!("\"per-token\";r=0;t={retry_after_secs}")) {
                    h.insert("ratelimit", v);
                }
            }
            GatewayError::ServiceUnavailable { retry_after_secs } => {
                h.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            GatewayError::MethodNotAllowed => {
                h.insert(http::header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            }
            _ => {}
        }
        resp
    }
}

/// `WWW-Authenticate` of a data-plane 401 when the authorization server is
/// on: the contract's value plus `resource_metadata` (RFC 9728 §5.1),
/// pointing at `metadata_url`. `None` if the URL cannot be a header value.
pub fn www_authenticate_with_metadata(header_missing: bool, metadata_url: &str) -> Option<HeaderValue> {
    let base = if header_missing {
        r#"Bearer realm="portcullis""#
    } else {
        r#"Bearer realm="portcullis", error="invalid_token""#
    };
    HeaderValue::from_str(&format!(r#"{base}, resource_metadata="{metadata_url}""#)).ok()
}

// `IntoResponse for ApiError` serializes this struct, and the OpenAPI
// document derives its `Error` schema from it.
/// The body of every admin API error (contract §4): `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ApiErrorBody<'a> {
    pub error: ApiErrorDetail<'a>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ApiErrorDetail<'a> {
    /// Stable snake_case code for scripts (`unauthorized`, `forbidden`,
    /// `bad_request`, `invalid_field`, `workspace_not_found`,
    /// `token_not_found`, `cannot_revoke_self`, `conflict`,
    /// `store_unavailable`, `not_found`, `method_not_allowed`, …).
    #[schema(example = "token_not_found")]
    pub code: &'a str,
    /// For people; never echoes a token.
    pub message: &'a str,
}

/// A control-plane failure: status, stable snake_case code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required: Authorization: Bearer mwa_…",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }
    /// The JSON body this error is answered with.
    pub fn body(&self) -> ApiErrorBody<'_> {
        ApiErrorBody {
            error: ApiErrorDetail {
                code: self.code,
                message: &self.message,
            },
        }
    }
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the token store is unavailable; try again shortly",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::InvalidCursor => {
                ApiError::bad_request("invalid cursor: pass the next_cursor value of a previous page")
            }
            crate::store::StoreError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "a token with the same id already exists; retry")
            }
            crate::store::StoreError::LogTruncated => ApiError::unavailable(),
            crate::store::StoreError::Unavailable(detail) => {
                // Logged here, once; the client gets no internal detail.
                tracing::error!(error = %detail, "store failure in the admin API");
                ApiError::unavailable()
            }
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="portcullis-admin""#));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(r: Response<Body>) -> serde_json::Value {
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn unauthorized_has_the_contract_headers() {
        let r = GatewayError::Unauthorized { header_missing: true }.into_response(None);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="portcullis""#);
        let r = GatewayError::Unauthorized { header_missing: false }.into_response(None);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], r#"Bearer realm="portcullis", error="invalid_token""#);
        assert_eq!(body_json(r).await["error"]["code"], -31001);
    }

    #[tokio::test]
    async fn rate_limited_carries_retry_headers_and_id() {
        let id = RawValue::from_string("\"abc\"".into()).unwrap();
        let r = GatewayError::RateLimited {
            limit: 120,
            retry_after_secs: 2,
        }
        .into_response(Some(&id));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        assert_eq!(r.headers()["ratelimit-policy"], "\"per-token\";q=120;w=60");
        assert_eq!(r.headers()["ratelimit"], "\"per-token\";r=0;t=2");
        let v = body_json(r).await;
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["message"], "Rate limit exceeded");
        assert_eq!(v["error"]["data"]["retryAfter"], 2);
    }
}
