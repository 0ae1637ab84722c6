//! Member sessions on the public listener (docs/members.md). Same machinery
//! as the dashboard's admin sessions (`auth::browser`: random id hashed at
//! rest, HttpOnly SameSite=Strict cookie, CSRF secret derived from the id,
//! idle and absolute expiry from `[dashboard]`), but the principal is a
//! member of a workspace, not an admin token.
//!
//! Stable interface (the oauth and oidc branches call it):
//! - [`current_member`]`(state, headers) -> Option<MemberSession>`: the
//!   signed-in member of a page request (no CSRF check: for GET pages).
//! - [`resolve`]`(state, headers, method, form_csrf)`: the same, checked,
//!   with CSRF and origin when the request changes state.
//! - [`sign_in_member`]`(state, workspace, member_id, headers) ->
//!   Set-Cookie`: starts a session for a member whose identity has been
//!   verified (a sign-in link, an OpenID provider).
//! - [`sign_out`]`(state, session, headers) -> Set-Cookie` (clears it).
//!
//! Every request re-reads the member from the store: removing a member
//! ends their sessions on every instance at once (the store is shared).

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::auth::browser::{self, changes_state, check_csrf, cookie_value, parse_id, sha256};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::members::{MemberSessionRecord, MemberStore, Role, SecretHash};
use crate::token::now_unix;

/// Members' cookie; the dashboard's is `portcullis_session` (cookies are
/// not kept apart by port, so the two must differ).
pub const COOKIE: &str = "portcullis_member";

/// A signed-in member, checked against the store on this request.
#[derive(Debug, Clone)]
pub struct MemberSession {
    pub member_id: String,
    pub workspace: String,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    /// SHA-256 of the session id (for sign-out).
    pub id_hash: SecretHash,
    /// The CSRF secret the page hands its script and forms.
    pub csrf: String,
}

fn csrf_of(id: &[u8; 32]) -> String {
    browser::csrf_of(b"portcullis member csrf\0", id)
}

fn ended() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "session_expired",
        "you are not signed in (signed out, expired, or no longer a member); open a new sign-in link",
    )
}

pub fn has_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers, COOKIE).is_some()
}

fn members(state: &AppState) -> Result<&dyn MemberStore, ApiError> {
    state.store.members().ok_or_else(ApiError::unavailable)
}

/// The signed-in member of a page request, if any (see [`resolve`]; no
/// CSRF check, so only for requests that change nothing).
pub async fn current_member(state: &AppState, headers: &HeaderMap) -> Option<MemberSession> {
    resolve(state, headers, &Method::GET, None).await.ok()
}

/// The request's member session, checked: exists, not idle or past its
/// end, the member still exists; and, when `method` changes state, the
/// CSRF token (`X-CSRF-Token`, or `form_csrf` from a form) and origin.
pub async fn resolve(state: &AppState, headers: &HeaderMap, method: &Method, form_csrf: Option<&str>) -> Result<MemberSession, ApiError> {
    let id = cookie_value(headers, COOKIE).and_then(parse_id).ok_or_else(ended)?;
    let store = members(state)?;
    let hash = sha256(&id);
    let s = store.get_member_session(&hash).await?.ok_or_else(ended)?;
    let now = now_unix();
    let idle = state.config.dashboard.idle_timeout.as_secs() as i64;
    if now >= s.expires_at || now - s.last_seen_at >= idle {
        store.delete_member_session(&hash).await?;
        return Err(ended());
    }
    let csrf = csrf_of(&id);
    if changes_state(method) {
        check_csrf(headers, form_csrf, &csrf)?;
    }
    let Some(m) = store.get_member(&s.workspace, &s.member_id).await? else {
        // Removed: the session goes with the member.
        store.delete_member_session(&hash).await?;
        return Err(ended());
    };
    // A workspace taken out of the configuration takes its members' access.
    if state.config.workspace(&m.workspace).is_none() {
        return Err(ended());
    }
    let step = (idle / 20).max(1);
    if now - s.last_seen_at >= step {
        store.touch_member_session(&hash, now, idle).await?;
    }
    Ok(MemberSession {
        member_id: m.id,
        workspace: m.workspace,
        email: m.email,
        name: m.name,
        role: m.role,
        id_hash: hash,
        csrf,
    })
}

/// Starts a session for member `member_id` of `workspace`, whose identity
/// the caller has verified. Returns the `Set-Cookie` value. 404-shaped
/// error when there is no such member.
pub async fn sign_in_member(state: &AppState, workspace: &str, member_id: &str, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let store = members(state)?;
    if store.get_member(workspace, member_id).await?.is_none() {
        return Err(ApiError::not_found("member_not_found", "no such member"));
    }
    let id = browser::random_id()?;
    let now = now_unix();
    let d = &state.config.dashboard;
    let record = MemberSessionRecord {
        workspace: workspace.to_owned(),
        member_id: member_id.to_owned(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + d.absolute_timeout.as_secs() as i64,
    };
    store
        .create_member_session(&sha256(&id), &record, d.idle_timeout.as_secs() as i64)
        .await?;
    tracing::info!(member_id, workspace, "member sign-in");
    Ok(browser::cookie(
        COOKIE,
        &browser::hex(&id),
        d.absolute_timeout.as_secs(),
        browser::secure(&state.config, headers),
    ))
}

/// Ends the session; returns the `Set-Cookie` value that clears the cookie.
pub async fn sign_out(state: &AppState, session: &MemberSession, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    members(state)?.delete_member_session(&session.id_hash).await?;
    Ok(clear_cookie(state, headers))
}

pub fn clear_cookie(state: &AppState, headers: &HeaderMap) -> HeaderValue {
    browser::cookie(COOKIE, "", 0, browser::secure(&state.config, headers))
}
