//! Dashboard sessions on the admin listener (docs/dashboard.md): sign-in
//! with an admin token, the session cookie, and what every request made
//! with it is checked against.
//!
//! - The session id is 32 bytes from the OS CSPRNG, sent as 64 hex digits
//!   in a cookie that is `HttpOnly`, `SameSite=Strict`, `Path=/`, and
//!   `Secure` per `dashboard.secure_cookie`. The store keeps its SHA-256.
//! - The session keeps the admin token's id and hash, never the token, and
//!   each request re-verifies that hash through the token index
//!   (`Verifier::verify_hash`): revoking the admin token ends its sessions
//!   at once, on every instance that has learnt of the revocation, which is
//!   every live one by the time the revoke call returns.
//! - Idle and absolute expiry come from `[dashboard]`.
//! - CSRF: a request that changes state (anything but GET, HEAD, OPTIONS)
//!   must carry `X-CSRF-Token` (or, for the sign-out form, a `csrf` field)
//!   equal to the session's CSRF secret, compared in constant time, and an
//!   `Origin` / `Sec-Fetch-Site` that is not another site's. The secret is
//!   derived from the session id (SHA-256 under its own label), so it is
//!   unguessable without the cookie and needs no storage. Bearer-token
//!   requests are unaffected: a browser never adds that header by itself.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, Method};

use crate::auth::VerifyError;
use crate::auth::browser::{self, check_csrf, cookie_value, hex, parse_id, sha256};
pub use crate::auth::browser::{CSRF_HEADER, changes_state, check_origin, csrf_error, ct_eq};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::audit::{AuditEvent, EventType};
use crate::store::sessions::{SessionHash, SessionRecord};
use crate::token::{TokenKind, now_unix};

/// The dashboard's cookie (members' on the public listener is another:
/// cookies are not kept apart by port).
pub const COOKIE: &str = "portcullis_session";

/// A live session, checked.
pub struct Session {
    pub admin_id: Box<str>,
    pub workspace: Option<Box<str>>,
    pub id_hash: SessionHash,
    /// The CSRF secret the page hands its script (and the sign-out form).
    pub csrf: String,
}

/// Whether the request carries our session cookie at all.
pub fn has_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers, COOKIE).is_some()
}

fn id_hash(id: &[u8; 32]) -> SessionHash {
    sha256(id)
}

fn csrf_of(id: &[u8; 32]) -> String {
    browser::csrf_of(b"portcullis dashboard csrf\0", id)
}

fn session_ended() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "session_expired",
        "the dashboard session has ended (signed out, expired, or its admin token was revoked); sign in again",
    )
}

/// The session of the request's cookie, checked: exists, not idle or past
/// its absolute end, its admin token still valid; and, when the request
/// changes state, its CSRF token (`form_csrf`: the sign-out form's field,
/// used when there is no header) and origin. Touches the session.
pub async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    client: Option<IpAddr>,
    form_csrf: Option<&str>,
) -> Result<Session, ApiError> {
    let id = cookie_value(headers, COOKIE).and_then(parse_id).ok_or_else(session_ended)?;
    let sessions = state.store.sessions().ok_or_else(session_ended)?;
    let hash = id_hash(&id);
    let record = sessions.get_session(&hash).await?.ok_or_else(session_ended)?;
    let now = now_unix();
    let idle = state.config.dashboard.idle_timeout;
    if now >= record.expires_at || now - record.last_seen_at >= idle.as_secs() as i64 {
        sessions.delete_session(&hash).await?;
        return Err(session_ended());
    }
    let csrf = csrf_of(&id);
    if changes_state(method) {
        check_csrf(headers, form_csrf, &csrf)?;
    }
    let token = match state.verifier.verify_hash(&record.admin_token_hash, now, client).await {
        Ok(t) if t.kind == TokenKind::Admin && *t.id == *record.admin_token_id => t,
        Ok(_) | Err(VerifyError::Rejected(_)) => {
            // Revoked or expired: the session goes with it.
            sessions.delete_session(&hash).await?;
            return Err(session_ended());
        }
        Err(VerifyError::StoreUnavailable) => return Err(ApiError::unavailable()),
    };
    // Write the use down at most every 1/20 of the idle timeout: idle expiry
    // is that much coarse, and a page's burst of calls costs one write.
    let step = (idle.as_secs() as i64 / 20).max(1);
    if now - record.last_seen_at >= step {
        sessions.touch_session(&hash, now, idle).await?;
    }
    Ok(Session {
        admin_id: token.id.clone(),
        workspace: token.workspace.clone(),
        id_hash: hash,
        csrf,
    })
}

/// Why a sign-in failed, in words for the sign-in page.
pub enum SignInError {
    NotAdmin,
    Rejected,
    Unavailable,
}

/// Sign-in succeeded: a new session for the admin token `raw`. Returns the
/// `Set-Cookie` value. (The audit trail's `signin` event belongs here.)
pub async fn sign_in_success(state: &AppState, admin_token_id: &str, raw: &str, secure: bool) -> Result<HeaderValue, ApiError> {
    let sessions = state.store.sessions().ok_or_else(ApiError::unavailable)?;
    let id = browser::random_id()?;
    let now = now_unix();
    let d = &state.config.dashboard;
    let record = SessionRecord {
        admin_token_id: admin_token_id.to_string(),
        admin_token_hash: crate::token::hash(raw),
        created_at: now,
        last_seen_at: now,
        expires_at: now + d.absolute_timeout.as_secs() as i64,
    };
    sessions.create_session(&id_hash(&id), &record, d.idle_timeout).await?;
    tracing::info!(admin_token_id, "dashboard sign-in");
    // A scoped admin's sign-in shows in its workspace's trail; a global
    // admin's in the global one (`GET /v1/audit`).
    let workspace = match state.store.get(admin_token_id).await {
        Ok(Some(t)) => t.workspace,
        _ => None,
    };
    audit_session(state, EventType::Signin, admin_token_id, workspace).await;
    Ok(cookie(&hex(&id), d.absolute_timeout.as_secs(), secure))
}

/// Checks an admin token presented on the sign-in page.
pub async fn check_sign_in(state: &AppState, raw: &str, client: Option<IpAddr>) -> Result<Box<str>, SignInError> {
    let raw = raw.trim();
    if raw.starts_with("mwt_") {
        return Err(SignInError::NotAdmin);
    }
    match state.verifier.verify_from(raw, now_unix(), client).await {
        Ok(t) if t.kind == TokenKind::Admin => Ok(t.id.clone()),
        Ok(_) => Err(SignInError::NotAdmin),
        Err(VerifyError::Rejected(_)) => Err(SignInError::Rejected),
        Err(VerifyError::StoreUnavailable) => Err(SignInError::Unavailable),
    }
}

/// Sign-out succeeded: the session is gone. Returns the `Set-Cookie` value
/// that clears the cookie. (The audit trail's `signout` event belongs here.)
pub async fn sign_out_success(state: &AppState, session: &Session, secure: bool) -> Result<HeaderValue, ApiError> {
    if let Some(s) = state.store.sessions() {
        s.delete_session(&session.id_hash).await?;
    }
    tracing::info!(admin_token_id = %session.admin_id, "dashboard sign-out");
    audit_session(
        state,
        EventType::Signout,
        &session.admin_id,
        session.workspace.as_deref().map(str::to_owned),
    )
    .await;
    Ok(clear_cookie(secure))
}

/// Records a dashboard sign-in or sign-out in the audit trail, with the
/// admin token as actor (never the token itself, nor the session id).
async fn audit_session(state: &AppState, kind: EventType, admin_token_id: &str, workspace: Option<String>) {
    let event = AuditEvent {
        actor: Some(admin_token_id.to_owned()),
        token_id: Some(admin_token_id.to_owned()),
        workspace,
        method: Some("dashboard".to_owned()),
        ..AuditEvent::new(kind, 0)
    };
    state.audit.record(event).await;
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    browser::cookie(COOKIE, value, max_age, secure)
}

pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie("", 0, secure)
}

/// Whether the cookie gets `Secure` (`dashboard.secure_cookie`; see
/// `auth::browser::secure`). The admin listener itself speaks plain HTTP;
/// over TLS it is always behind a proxy.
pub fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    browser::secure(&state.config, headers)
}
