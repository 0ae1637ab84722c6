//! `GET /v1/tokens/self`: a token checks itself, on either listener.
//!
//! The admin listener accepts workspace and admin tokens (contract §4). The
//! data listener accepts workspace tokens only, and counts the call against
//! the token's rate limit like any data-plane request: it is reachable from
//! everywhere the MCP endpoint is, and each call reads the store once (the
//! name is not in the index), so an admin token must not be probed there
//! and no token may use it for free.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::{CachedToken, Verifier, VerifyError};
use crate::config::Config;
use crate::error::{ApiError, Body, full};
use crate::limit::Limits;
use crate::store::TokenStore;
use crate::telemetry::AuthFailureReason;
use crate::telemetry::Metrics;
use crate::token::{self, TokenKind, now_unix};

/// What the answer reads: borrowed from the shared state
/// (`state::AppState::self_check`), so that `auth` does not import the state
/// that is built from it (no import cycle between `auth` and `state`).
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    pub config: &'a Config,
    pub store: &'a dyn TokenStore,
    pub verifier: &'a Verifier,
    pub limiter: &'a Limits,
    pub metrics: &'a Metrics,
}

/// Which listener is asking: what it accepts differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Data,
    Admin,
}

/// The bearer token of `headers`, verified (any kind).
pub async fn verify_bearer(state: Deps<'_>, headers: &HeaderMap, client: Option<IpAddr>) -> Result<Arc<CachedToken>, ApiError> {
    let Some(raw) = headers.get(http::header::AUTHORIZATION).and_then(super::bearer) else {
        state.verifier.reject(AuthFailureReason::Missing);
        return Err(ApiError::unauthorized());
    };
    match state.verifier.verify_from(raw, now_unix(), client).await {
        Ok(t) => Ok(t),
        Err(VerifyError::Rejected(_)) => Err(ApiError::unauthorized()),
        Err(VerifyError::StoreUnavailable) => Err(ApiError::unavailable()),
    }
}

/// The answer to `GET /v1/tokens/self` on `listener`.
pub async fn respond(state: Deps<'_>, headers: &HeaderMap, client: Option<IpAddr>, listener: Listener) -> Response<Body> {
    let mut retry_after = None;
    let checked = async {
        let t = verify_bearer(state, headers, client).await?;
        if listener == Listener::Data {
            if !t.kind.is_data_plane() {
                state.verifier.reject(AuthFailureReason::WrongKind);
                return Err(ApiError::unauthorized());
            }
            let workspace = t.workspace.as_deref().and_then(|w| state.config.workspace(w));
            let per_minute = state.config.requests_per_minute(workspace.map(|w| &**w), t.requests_per_minute);
            if let (_, Err(l)) = state.limiter.check(t.limiter_key, per_minute).await {
                if let Some(w) = workspace {
                    state.metrics.rate_limited(w.index);
                }
                retry_after = Some(l.retry_after_secs);
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("rate limit of {} requests per minute exceeded", l.limit),
                ));
            }
        }
        body(state, &t).await
    }
    .await;
    let (status, body) = match checked {
        Ok(body) => (StatusCode::OK, serde_json::to_vec(&body)),
        Err(e) => (e.status, serde_json::to_vec(&e.body())),
    };
    let mut resp = Response::new(full(body.expect("json")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match status {
        StatusCode::UNAUTHORIZED => {
            let realm = match listener {
                Listener::Data => r#"Bearer realm="portcullis", error="invalid_token""#,
                Listener::Admin => r#"Bearer realm="portcullis-admin""#,
            };
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(realm));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    if let Some(secs) = retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

// The OpenAPI document's `SelfCheck` schema is derived from this struct.
/// The answer to a valid token (contract §4).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = SelfCheck)]
pub struct SelfView {
    /// Always `true`: an invalid token gets 401.
    pub valid: bool,
    /// The token's public id (`tkn_…`).
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    /// `null` for a global admin token.
    #[schema(required = true)]
    pub workspace: Option<String>,
    /// RFC 3339 UTC; `null` = never expires.
    #[schema(required = true)]
    pub expires_at: Option<String>,
}

/// The token's own view of itself. The index keeps no names (memory per
/// token), so the name is read from the store: this endpoint is rare.
async fn body(state: Deps<'_>, t: &CachedToken) -> Result<SelfView, ApiError> {
    let name = match state.store.get(&t.id).await {
        Ok(Some(r)) => r.name,
        // Revoked and deleted cannot be: verification just passed; a record
        // gone in between is not worth a special answer.
        Ok(None) => String::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(SelfView {
        valid: true,
        id: t.id.to_string(),
        name,
        kind: t.kind,
        workspace: t.workspace.as_deref().map(str::to_string),
        expires_at: t.expires_at.map(token::format_rfc3339),
    })
}
