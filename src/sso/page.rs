//! The few pages single sign-on shows itself: each refusal or failure is a
//! page a person reads, with a heading, a reason and a way back.

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE, X_FRAME_OPTIONS};
use http::{HeaderValue, Response, StatusCode};
use maud::{DOCTYPE, html};

use crate::error::{Body, full};

/// An HTML page with `status`; `testid` names the kind of outcome for tests.
pub fn page(status: StatusCode, testid: &str, title: &str, message: &str, set_cookie: Option<&str>) -> Response<Body> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) " · Portcullis" } }
            body {
                main data-testid=(testid) {
                    h1 { (title) }
                    p data-testid="sso-message" { (message) }
                    p { a href="/signin/oidc" data-testid="sso-retry" { "Sign in again" } }
                }
            }
        }
    };
    let mut resp = Response::new(full(markup.into_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(h);
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        h.append(SET_COOKIE, c);
    }
    resp
}

/// A redirect that sets `cookies`.
pub fn redirect(location: &str, cookies: &[HeaderValue]) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    if let Ok(l) = HeaderValue::try_from(location) {
        h.insert(http::header::LOCATION, l);
    }
    for c in cookies {
        h.append(SET_COOKIE, c.clone());
    }
    secure_headers(h);
    resp
}

fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; form-action 'none'"),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}
