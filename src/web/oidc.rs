//! The mount of single sign-on (`crate::sso`, docs/sso.md) on the
//! people-facing router: `/signin/oidc` and `/signin/oidc/callback`, served
//! only when `[auth.oidc]` is configured. `sso` proves who the person is and
//! which member that is; this file starts the member session, as the
//! sign-in link does.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;

use super::{SharedState, session};
use crate::sso::{CALLBACK_PATH, Outcome, Sso};

/// Where single sign-on starts, for pages above `sso` that link to it (the
/// consent page's "Sign in to continue").
pub use crate::sso::SIGNIN_PATH;

/// Adds the sign-in routes when single sign-on is configured.
pub fn mount(router: Router<SharedState>, state: &SharedState) -> Router<SharedState> {
    let Some(cfg) = state.config.oidc.clone() else { return router };
    let sso = Arc::new(Sso::new(cfg, &state.config.server.public_url));
    let handler = move |State(state): State<SharedState>, method: Method, uri: Uri, headers: HeaderMap| {
        let sso = Arc::clone(&sso);
        async move { serve(&sso, &state, &method, &uri, &headers).await }
    };
    router.route(SIGNIN_PATH, any(handler.clone())).route(CALLBACK_PATH, any(handler))
}

async fn serve(sso: &Sso, state: &SharedState, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    match sso.handle(state, method, uri, headers).await {
        Outcome::Page(resp) => resp.map(Body::new),
        Outcome::SignedIn { member, clear_cookie } => {
            match session::sign_in_member(state, &member.workspace, &member.member_id, headers).await {
                Ok(cookie) => {
                    crate::sso::signin::record_signin_audit(state, &member, "oidc").await;
                    // Back to the authorization request that sent the person
                    // to sign in (docs/oauth.md), as after a sign-in link;
                    // otherwise on to their own page.
                    let next = super::signin::return_path(headers);
                    let mut r = Redirect::to(next.as_deref().unwrap_or("/me")).into_response();
                    r.headers_mut().append(header::SET_COOKIE, clear_cookie);
                    r.headers_mut().append(header::SET_COOKIE, cookie);
                    if next.is_some() {
                        r.headers_mut().append(header::SET_COOKIE, super::signin::CLEAR_NEXT);
                    }
                    r
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "member session could not start after single sign-on");
                    sso.session_failed(&clear_cookie).map(Body::new)
                }
            }
        }
    }
}
