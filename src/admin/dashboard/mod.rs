//! The web dashboard on the admin listener (docs/dashboard.md; contract §9):
//! server-rendered pages (`pages`, maud) plus one embedded script that
//! calls the JSON admin API with the session cookie (`crate::admin::session`).
//!
//! Routes: `GET /` (sign-in, or on to the workspaces when signed in),
//! `POST /signin`, `POST /signout`, `GET /workspaces`,
//! `GET /workspaces/{ws}[/{tab}]`, `GET /assets/*`. Every response of the
//! admin listener carries the security headers of [`security_headers`].

pub mod pages;

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use super::session::{self, Session, SignInError};
use crate::state::{AppState, PeerAddr};

type SharedState = Arc<AppState>;

use crate::ui::{APP_CSS, APP_JS};

pub fn routes() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/", get(home))
        .route("/signin", post(sign_in).get(|| async { Redirect::to("/") }))
        .route("/signout", post(sign_out))
        .route("/workspaces", get(workspaces))
        .route(
            "/workspaces/{ws}",
            get(|Path(ws): Path<String>| async move { Redirect::to(&format!("/workspaces/{ws}/tokens")) }),
        )
        .route("/workspaces/{ws}/{tab}", get(workspace))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/assets/icon.svg", get(|| async { asset("image/svg+xml", pages::ICON) }))
}

/// Added to every response of the admin listener (`auth::browser`).
pub use crate::auth::browser::security_headers;

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn html(status: StatusCode, m: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

/// What page handlers read of a request (its parts: a `Request` is not
/// `Sync`, so a reference to it cannot be held across an await).
type Req = axum::http::request::Parts;

fn client(req_ext: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    req_ext.get::<PeerAddr>().map(|p| p.0.ip())
}

/// The session of a page request, or the sign-in page to go to (clearing
/// a dead cookie on the way).
async fn page_session(state: &AppState, req: &Req) -> Result<Session, Response> {
    if !session::has_cookie(&req.headers) {
        return Err(Redirect::to("/").into_response());
    }
    match session::resolve(state, &req.headers, &req.method, client(&req.extensions), None).await {
        Ok(s) => Ok(s),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, session::clear_cookie(session::secure(state, &req.headers)));
            Err(r)
        }
        Err(e) => Err(html(e.status, pages::error_page(None, "Try again shortly", &e.message))),
    }
}

fn who(s: &Session) -> pages::Who<'_> {
    pages::Who {
        admin_id: &s.admin_id,
        scope: s.workspace.as_deref(),
        csrf: &s.csrf,
    }
}

async fn home(State(state): State<SharedState>, req: Req) -> Response {
    if session::has_cookie(&req.headers) && page_session(&state, &req).await.is_ok() {
        return Redirect::to("/workspaces").into_response();
    }
    html(StatusCode::OK, pages::sign_in(None))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

/// `POST /signin` (a form: the token travels in the body, never in a URL).
/// Refused from another origin, so no other site can sign a browser in.
async fn sign_in(
    State(state): State<SharedState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if session::check_origin(&headers).is_err() {
        return html(
            StatusCode::FORBIDDEN,
            pages::sign_in(Some(
                "This sign-in did not come from this dashboard's own page. Open the dashboard and sign in there.",
            )),
        );
    }
    let Ok(Form(form)) = form else {
        return html(StatusCode::BAD_REQUEST, pages::sign_in(Some("Enter an admin token.")));
    };
    let raw = form.token.trim();
    match session::check_sign_in(&state, raw, client(&ext)).await {
        Ok(admin_id) => match session::sign_in_success(&state, &admin_id, raw, session::secure(&state, &headers)).await {
            Ok(cookie) => {
                let mut r = Redirect::to("/workspaces").into_response();
                r.headers_mut().insert(header::SET_COOKIE, cookie);
                r
            }
            Err(e) => html(e.status, pages::sign_in(Some(&e.message))),
        },
        Err(SignInError::NotAdmin) => html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(
                "That is a workspace token (mwt_…), which connects MCP clients. Sign in with an admin token (mwa_…).",
            )),
        ),
        Err(SignInError::Rejected) => html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(
                "That admin token was not accepted: it is mistyped, unknown, revoked or expired. Check it, or create one with `portcullis admin token create`.",
            )),
        ),
        Err(SignInError::Unavailable) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::sign_in(Some("The token store cannot be reached right now; try again shortly.")),
        ),
    }
}

#[derive(Deserialize)]
struct SignOutForm {
    csrf: Option<String>,
}

/// `POST /signout`: a form with the CSRF field (or a script call with the
/// header); the session is deleted from the store, the cookie cleared.
async fn sign_out(
    State(state): State<SharedState>,
    headers: HeaderMap,
    method: axum::http::Method,
    ext: axum::http::Extensions,
    form: Result<Form<SignOutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.as_ref().ok().and_then(|f| f.csrf.as_deref());
    let secure = session::secure(&state, &headers);
    match session::resolve(&state, &headers, &method, client(&ext), csrf).await {
        Ok(s) => match session::sign_out_success(&state, &s, secure).await {
            Ok(cookie) => {
                let mut r = Redirect::to("/").into_response();
                r.headers_mut().insert(header::SET_COOKIE, cookie);
                r
            }
            Err(e) => e.into_response(),
        },
        // Already ended: the person is signed out either way.
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(secure));
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn workspaces(State(state): State<SharedState>, req: Req) -> Response {
    let s = match page_session(&state, &req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let list: Vec<_> = state
        .config
        .workspaces
        .iter()
        .filter(|w| s.workspace.as_deref().is_none_or(|o| o == w.slug))
        .map(|w| (&**w, format!("{}/ws/{}", state.config.server.public_url, w.slug)))
        .collect();
    html(StatusCode::OK, pages::workspaces(&who(&s), &list))
}

async fn workspace(State(state): State<SharedState>, Path((ws, tab)): Path<(String, String)>, req: Req) -> Response {
    let s = match page_session(&state, &req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let who = who(&s);
    // As in the API: another workspace is refused before it is looked up,
    // so a scoped admin learns nothing of which others exist.
    if s.workspace.as_deref().is_some_and(|o| o != ws) {
        return html(
            StatusCode::FORBIDDEN,
            pages::error_page(Some(&who), "Not this workspace", "This admin token is scoped to another workspace."),
        );
    }
    let Some(w) = state.config.workspace(&ws) else {
        return html(
            StatusCode::NOT_FOUND,
            pages::error_page(Some(&who), "No such workspace", "No workspace of that name is configured."),
        );
    };
    if !pages::TABS.iter().any(|t| t.0 == tab) {
        return html(
            StatusCode::NOT_FOUND,
            pages::error_page(Some(&who), "No such page", "That workspace page does not exist."),
        );
    }
    html(StatusCode::OK, pages::workspace(&who, w, &tab))
}
