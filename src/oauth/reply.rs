//! What the authorization server answers: RFC 6749 error JSON
//! (`{"error","error_description"}`, fixed descriptions that never echo
//! input or internal detail) and JSON documents, never cached.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::error::{Body, full};
use crate::store::StoreError;

/// Every failure an OAuth endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest(&'static str),
    InvalidClient(&'static str),
    InvalidGrant(&'static str),
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidTarget,
    InvalidRedirectUri(&'static str),
    InvalidClientMetadata(&'static str),
    AccessDenied,
    /// Per-address or per-client limit.
    SlowDown,
    TemporarilyUnavailable,
    NotFound,
    MethodNotAllowed,
}

impl OAuthError {
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use OAuthError::*;
        match self {
            InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d),
            InvalidClient(d) => (StatusCode::UNAUTHORIZED, "invalid_client", d),
            InvalidGrant(d) => (StatusCode::BAD_REQUEST, "invalid_grant", d),
            UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            ),
            UnsupportedResponseType => (StatusCode::BAD_REQUEST, "unsupported_response_type", "response_type must be code"),
            InvalidTarget => (
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource must be the URL of one workspace of this gateway",
            ),
            InvalidRedirectUri(d) => (StatusCode::BAD_REQUEST, "invalid_redirect_uri", d),
            InvalidClientMetadata(d) => (StatusCode::BAD_REQUEST, "invalid_client_metadata", d),
            AccessDenied => (StatusCode::FORBIDDEN, "access_denied", "the request was denied"),
            SlowDown => (StatusCode::TOO_MANY_REQUESTS, "slow_down", "too many requests; retry later"),
            TemporarilyUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the authorization server cannot reach its store; retry shortly",
            ),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "method not allowed"),
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        // Logged once here; the client gets no detail.
        tracing::error!(error = %e, "store failure in the authorization server");
        OAuthError::TemporarilyUnavailable
    }
}

fn no_store(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The RFC 6749 §5.2 error answer.
pub fn error(e: OAuthError) -> Response<Body> {
    let (status, code, description) = e.parts();
    let body = serde_json::json!({ "error": code, "error_description": description });
    let mut resp = Response::new(full(serde_json::to_vec(&body).expect("serializable")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if e == OAuthError::SlowDown || e == OAuthError::TemporarilyUnavailable {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let OAuthError::InvalidClient(_) = e {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="portcullis""#),
        );
    }
    no_store(&mut resp);
    resp
}

/// A JSON document with `status`, never cached.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).expect("serializable")));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(&mut resp);
    resp
}

/// A 303 to `location` (a redirect URI with the answer in its query).
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(LOCATION, v);
        }
        Err(_) => return error(OAuthError::InvalidRequest("redirect_uri is not a valid URL")),
    }
    no_store(&mut resp);
    resp
}

/// `uri` with `params` appended to its query, percent-encoded.
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = String::from(uri);
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        sep = '&';
        out.push_str(&super::form::encode(k));
        out.push('=');
        out.push_str(&super::form::encode(v));
    }
    out
}
