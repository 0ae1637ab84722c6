//! People-facing pages on the public listener (`server.public_url`, the
//! data listener): members sign in and manage their own tokens here, never
//! on the admin listener (docs/members.md).
//!
//! Mount (stable; the oauth and oidc branches add routes to [`router`]):
//! `app.rs` sends a data-listener request here when [`is_people_path`]
//! says so, and every other one to the gateway. Only hyper's path gets
//! there: the fast path (`server::fast`) takes `POST /ws/...` only, so the
//! data plane's hot path is untouched. Paths:
//! - `/signin/...`: sign-in links (`signin`);
//! - `/me`, `/me/...`: the member's pages and their JSON (`me`);
//! - `/oauth/...`: reserved for the OAuth authorization server (404 here
//!   until it lands). `/.well-known/oauth-*` stays with the gateway, which
//!   answers its quick 404 while OAuth is off.
//!
//! Every response carries the dashboard's security headers (strict CSP,
//! no framing, nosniff, no-referrer, no-store); state-changing requests
//! need the session's CSRF token and a same-origin `Origin`
//! (`auth::browser`).

pub mod me;
pub mod oidc;
pub mod pages;
pub mod session;
pub mod signin;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::service::TowerToHyperService;

pub use session::{MemberSession, current_member, resolve, sign_in_member, sign_out};

use crate::state::AppState;

type SharedState = Arc<AppState>;

/// Whether a data-listener request is for the people-facing pages (one
/// prefix test, on paths other than `/ws/...`).
pub fn is_people_path(path: &str) -> bool {
    path == "/me" || path.starts_with("/me/") || path.starts_with("/signin/") || path.starts_with("/oauth/")
}

/// The people-facing router, with its state.
pub fn router(state: SharedState) -> Router {
    let routes = Router::new()
        .route("/signin/link/{code}", get(signin::show).post(signin::consume))
        .route("/me", get(me::page))
        .route("/me/", get(|| async { axum::response::Redirect::to("/me") }))
        .route("/me/signout", post(me::sign_out))
        .route("/me/api/tokens", get(me::list_tokens).post(me::create_token))
        .route("/me/api/tokens/{id}", axum::routing::delete(me::revoke_token))
        .route(
            "/me/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", crate::ui::APP_JS) }),
        )
        .route(
            "/me/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", crate::ui::APP_CSS) }),
        )
        .route("/me/assets/icon.svg", get(|| async { asset("image/svg+xml", crate::ui::ICON) }));
    oidc::mount(routes, &state)
        .fallback(|| async {
            pages::html(
                StatusCode::NOT_FOUND,
                pages::message(None, "Not found", "There is no page at this address."),
            )
        })
        // Forms and token requests are small.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(crate::auth::browser::security_headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The router as a hyper service (build once, clone per connection).
pub type Service = TowerToHyperService<Router>;

pub fn service(state: SharedState) -> Service {
    TowerToHyperService::new(router(state))
}

/// Serves one data-listener request on the people-facing router.
pub async fn handle(svc: &Service, req: hyper::Request<hyper::body::Incoming>) -> Result<hyper::Response<crate::error::Body>, Infallible> {
    let resp = hyper::service::Service::call(svc, req).await?;
    // Our pages and JSON are small and whole: collected, then handed on as
    // the data plane's body type.
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    Ok(hyper::Response::from_parts(parts, crate::error::full(bytes)))
}
