//! What both kinds of browser session share (the admin dashboard's,
//! `admin::session`, and members' on the public listener, `web::session`):
//! the random id and its hash, the cookie, the CSRF secret and checks, and
//! the security headers of every page. Below both planes so that neither
//! imports the other.
//!
//! - A session id is 32 bytes from the OS CSPRNG, sent as 64 hex digits in
//!   a cookie that is `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` per
//!   `dashboard.secure_cookie`; the store keeps its SHA-256 only.
//! - The CSRF secret is SHA-256 of the id under a label of its own: it
//!   needs no storage and is unguessable without the cookie.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::config::{Config, SecureCookie};
use crate::error::ApiError;

/// The value of cookie `name` in the request, if any.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// 64 lowercase hex digits, or nothing: anything else is not ours.
pub fn parse_id(v: &str) -> Option<[u8; 32]> {
    if v.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(v.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256: what the store keeps of a session id or a sign-in link code.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// 32 random bytes from the OS.
pub fn random_id() -> Result<[u8; 32], ApiError> {
    let mut id = [0u8; 32];
    getrandom::fill(&mut id).map_err(|_| ApiError::unavailable())?;
    Ok(id)
}

/// The CSRF secret of session `id`, under `label` (one per kind of session).
pub fn csrf_of(label: &[u8], id: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(label);
    h.update(id);
    hex(&h.finalize())
}

/// Equal-length byte strings compared without an early exit.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a request another site made the browser send: an `Origin` other
/// than this listener's own (as the `Host` header names it), or a
/// `Sec-Fetch-Site` other than `same-origin` (or `none`: typed by the
/// person). Absent headers pass: non-browser clients send neither, and a
/// browser that sends neither cannot add our CSRF header either.
///
/// `Origin: null` is what a browser sends for a form of our own pages under
/// `Referrer-Policy: no-referrer` (and also for sandboxed or opaque
/// documents): it passes only with `Sec-Fetch-Site: same-origin`.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if site.is_some_and(|s| !matches!(s, b"same-origin" | b"none")) {
        return Err(csrf_error());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        if origin.as_bytes() == b"null" {
            return if site == Some(b"same-origin") { Ok(()) } else { Err(csrf_error()) };
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !ok {
            return Err(csrf_error());
        }
    }
    Ok(())
}

/// Checks a state-changing request's CSRF token (header, or a form field
/// when there is none) and origin against the session's `csrf`.
pub fn check_csrf(headers: &HeaderMap, form_csrf: Option<&str>, csrf: &str) -> Result<(), ApiError> {
    check_origin(headers)?;
    let presented = headers
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .or(form_csrf.map(str::as_bytes))
        .ok_or_else(csrf_error)?;
    if ct_eq(presented, csrf.as_bytes()) {
        Ok(())
    } else {
        Err(csrf_error())
    }
}

/// The header a cookie-authenticated state-changing request carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn csrf_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "this request changes state and needs the page's X-CSRF-Token header from the same origin; reload the page and try again",
    )
}

/// `Set-Cookie` for session cookie `name`.
pub fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("ascii cookie")
}

/// Whether the cookie gets `Secure` (`dashboard.secure_cookie`): always,
/// never, or (auto) when the gateway's public URL is https or a proxy in
/// front says the request came over TLS.
pub fn secure(config: &Config, headers: &HeaderMap) -> bool {
    match config.dashboard.secure_cookie {
        SecureCookie::Always => true,
        SecureCookie::Never => false,
        SecureCookie::Auto => {
            config.server.public_url.starts_with("https://")
                || headers
                    .get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
        }
    }
}

/// Added to every browser-facing response: pages allow only their own
/// script and style (no inline script), may not be framed, and the browser
/// neither guesses types nor sends the URL to anyone.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages and API answers are per-session (and one holds a new token):
    // nothing is kept in a cache. Assets set their own.
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_is_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn only_the_named_cookie_of_the_right_shape_is_read() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; portcullis_session=zz"));
        assert_eq!(cookie_value(&h, "portcullis_session"), Some("zz"));
        assert_eq!(cookie_value(&h, "portcullis_member"), None);
        assert!(parse_id("zz").is_none());
        assert!(parse_id(&"ab".repeat(32)).is_some());
    }

    #[test]
    fn other_origins_and_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9090"));
        assert!(check_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9090"));
        assert!(check_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9091"));
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9090"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_origin(&h).is_ok());
        h.remove("sec-fetch-site");
        assert!(check_origin(&h).is_err());
    }
}
