//! Sign-in links: `GET /signin/link/{code}` shows a page with a button;
//! only its `POST` uses the link (link scanners in mail systems prefetch
//! GETs) and signs the person in as the member it was made for.
//!
//! A code is 32 random bytes (64 hex digits); the store keeps its SHA-256
//! only, valid 24 hours, single use. A used or expired link answers 410, an
//! unknown or malformed one 404, each with a page that says what to do and
//! nothing about the member or workspace.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::pages::{self, html, layout};
use super::{SharedState, session};
use crate::auth::browser::{check_origin, parse_id, sha256};
use crate::store::members::LinkState;
use crate::token::now_unix;

fn refused(state: &LinkState) -> Response {
    let (status, title, text) = match state {
        LinkState::Used => (
            StatusCode::GONE,
            "This sign-in link has been used",
            "Each sign-in link works once. Ask your workspace's owner or administrator for a new one.",
        ),
        LinkState::Expired => (
            StatusCode::GONE,
            "This sign-in link has expired",
            "Sign-in links are valid for 24 hours. Ask your workspace's owner or administrator for a new one.",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "This sign-in link is not valid",
            "Check that you opened the whole link from your message, or ask for a new one.",
        ),
    };
    html(status, pages::message(None, title, text))
}

fn unavailable() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(None, "Try again in a moment", "The gateway cannot reach its store right now."),
    )
}

/// `GET`: the link's page. Uses nothing.
pub async fn show(State(state): State<SharedState>, Path(code): Path<String>) -> Response {
    let Some(store) = state.store.members() else { return unavailable() };
    let Some(raw) = parse_id(&code) else {
        return refused(&LinkState::Unknown);
    };
    let link = match store.peek_link(&sha256(&raw), now_unix()).await {
        Ok(LinkState::Valid(l)) => l,
        Ok(other) => return refused(&other),
        Err(_) => return unavailable(),
    };
    let email = match store.get_member(&link.workspace, &link.member_id).await {
        Ok(Some(m)) => m.email,
        Ok(None) => return refused(&LinkState::Unknown),
        Err(_) => return unavailable(),
    };
    html(
        StatusCode::OK,
        layout(
            "Sign in",
            None,
            &[("page", "signin-link")],
            html! {
                h1 { "Sign in to Portcullis" }
                p { "You are signing in as " strong { (email) } " to workspace " code { (link.workspace) } "." }
                form.card method="post" action={ "/signin/link/" (code) } {
                    button type="submit" data-testid="signin-link-continue" { "Continue" }
                }
                p.note { "The link works once. After signing in you can create and revoke your own tokens." }
            },
        ),
    )
}

/// `POST`: uses the link and starts a member session; on to `/me`.
pub async fn consume(State(state): State<SharedState>, Path(code): Path<String>, headers: HeaderMap) -> Response {
    // No other site may sign a browser in (as someone else).
    if check_origin(&headers).is_err() {
        return html(
            StatusCode::FORBIDDEN,
            pages::message(
                None,
                "Open the link yourself",
                "This sign-in did not come from the link's own page. Open the link again and press Continue.",
            ),
        );
    }
    let Some(store) = state.store.members() else { return unavailable() };
    let Some(raw) = parse_id(&code) else {
        return refused(&LinkState::Unknown);
    };
    let link = match store.consume_link(&sha256(&raw), now_unix()).await {
        Ok(LinkState::Valid(l)) => l,
        Ok(other) => return refused(&other),
        Err(_) => return unavailable(),
    };
    match session::sign_in_member(&state, &link.workspace, &link.member_id, &headers).await {
        Ok(cookie) => {
            audit_signin(&state, &link.workspace, &link.member_id).await;
            // Back to an authorization request that sent the person to
            // sign in (`oauth::member`), or on to their own page.
            let next = return_path(&headers);
            let mut r = Redirect::to(next.as_deref().unwrap_or("/me")).into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            if next.is_some() {
                r.headers_mut().append(header::SET_COOKIE, CLEAR_NEXT);
            }
            r
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => refused(&LinkState::Unknown),
        Err(_) => unavailable(),
    }
}

/// Ends the `portcullis_next` cookie once a sign-in has followed it.
pub(super) const CLEAR_NEXT: axum::http::HeaderValue =
    axum::http::HeaderValue::from_static("portcullis_next=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");

/// The path in the `portcullis_next` cookie, decoded, if it is one a
/// sign-in may return to (`super::is_return_path`). Both ways of signing
/// in follow it: the link here and single sign-on (`super::oidc`).
pub(super) fn return_path(headers: &HeaderMap) -> Option<String> {
    let raw = crate::auth::browser::cookie_value(headers, super::NEXT_COOKIE)?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let p = String::from_utf8(out).ok()?;
    super::is_return_path(&p).then_some(p)
}

/// Audit hook: a member signed in with a link (`signin`; actor: the member
/// id). `crate::audit` was not on main when this branch started; at merge
/// this records the event with `state.audit.record`.
pub async fn audit_signin(state: &crate::state::AppState, workspace: &str, member_id: &str) {
    use crate::store::audit::{AuditEvent, EventType};
    let event = AuditEvent {
        actor: Some(member_id.to_owned()),
        workspace: Some(workspace.to_owned()),
        member_id: Some(member_id.to_owned()),
        method: Some("signin_link".to_owned()),
        ..AuditEvent::new(EventType::Signin, 0)
    };
    state.audit.record(event).await;
}
