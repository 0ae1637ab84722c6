//! Single sign-on for members with any OpenID Connect provider (docs/sso.md),
//! on the data listener: `GET /signin/oidc` sends the browser to the provider
//! (authorization code flow, PKCE S256, `state`, `nonce`), and
//! `GET /signin/oidc/callback` exchanges the code, validates the ID token and
//! hands the identity to [`signin::sign_in`], the seam to members.
//!
//! Layering: below `web`, which mounts the two routes on the public
//! listener and starts the member session (`web/oidc.rs`); it uses
//! `config`, `state`, `store` (members), `error`, and nothing of the data
//! plane.

pub mod fetch;
mod flow;
pub mod id_token;
mod page;
pub mod provider;
pub mod signin;

use http::header::{HeaderMap, SET_COOKIE};
use http::{HeaderValue, Method, StatusCode, Uri};

use crate::config::OidcConfig;
use crate::error::Body;
use crate::state::AppState;
use crate::token::now_unix;
use fetch::{ClientAuth, Fetcher};
use flow::Flow;
use id_token::{Expect, IdTokenError};
use provider::{AuthMethod, Provider};
use signin::VerifiedIdentity;

pub const SIGNIN_PATH: &str = "/signin/oidc";
pub const CALLBACK_PATH: &str = "/signin/oidc/callback";
/// A callback's query longer than this is not a provider's.
const MAX_QUERY: usize = 8 * 1024;

pub struct Sso {
    cfg: OidcConfig,
    provider: Provider,
    redirect_uri: String,
    secure_cookie: bool,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

impl Sso {
    pub fn new(cfg: OidcConfig, public_url: &str) -> Sso {
        Sso {
            provider: Provider::new(cfg.issuer.clone(), Fetcher::new()),
            redirect_uri: format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/')),
            secure_cookie: public_url.starts_with("https://"),
            cfg,
        }
    }

    /// Serves `/signin/oidc` and its callback. A successful callback yields
    /// the member; the caller starts the member session and redirects.
    pub async fn handle(&self, state: &AppState, method: &Method, uri: &Uri, headers: &HeaderMap) -> Outcome {
        if method != Method::GET {
            let mut r = page::page(
                StatusCode::METHOD_NOT_ALLOWED,
                "sso-error",
                "Method not allowed",
                "Sign-in pages are opened with GET.",
                None,
            );
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            return r.into();
        }
        match uri.path() {
            SIGNIN_PATH => self.start().await.into(),
            _ => self.callback(state, uri, headers).await,
        }
    }

    async fn start(&self) -> http::Response<Body> {
        let d = match self.provider.discovery().await {
            Ok(d) => d,
            Err(e) => return self.provider_failed("discovery", &e.to_string()),
        };
        let flow = Flow::start(unix_now());
        let sep = if d.authorization_endpoint.contains('?') { '&' } else { '?' };
        let params = [
            ("response_type", "code"),
            ("client_id", self.cfg.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", "openid email profile"),
            ("state", &flow.state()),
            ("nonce", &flow.nonce()),
            ("code_challenge", &flow.pkce_challenge()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", fetch::form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let location = format!("{}{sep}{params}", d.authorization_endpoint);
        match HeaderValue::try_from(flow.set_cookie(self.secure_cookie)) {
            Ok(cookie) => page::redirect(&location, &[cookie]),
            Err(_) => self.provider_failed("start", "cookie"),
        }
    }

    async fn callback(&self, state: &AppState, uri: &Uri, headers: &HeaderMap) -> Outcome {
        let clear = flow::clear_cookie(self.secure_cookie);
        let bad = |title: &str, message: &str| {
            Outcome::Page(page::page(StatusCode::BAD_REQUEST, "sso-bad-request", title, message, Some(&clear)))
        };
        let query = uri.query().unwrap_or("");
        if query.len() > MAX_QUERY {
            return bad("Sign-in failed", "The answer from the identity provider is too long.");
        }
        let param = |name: &str| query_param(query, name);
        let Some(flow) = flow::cookie(headers, flow::COOKIE).and_then(|c| Flow::from_cookie(c, unix_now())) else {
            return bad(
                "Sign-in expired",
                "This sign-in was not started in this browser, or took longer than 10 minutes. Start again.",
            );
        };
        let state_ok = param("state").is_some_and(|s| id_token::constant_time_eq(s.as_bytes(), flow.state().as_bytes()));
        if !state_ok {
            return bad(
                "Sign-in failed",
                "The answer does not belong to the sign-in this browser started. Start again.",
            );
        }
        // RFC 9207: a provider that names itself in the answer must name the
        // configured one (an answer from another provider, mixed up).
        if param("iss").is_some_and(|iss| iss != self.cfg.issuer) {
            return bad(
                "Sign-in failed",
                "The answer came from another identity provider than the one configured.",
            );
        }
        if let Some(error) = param("error") {
            // The provider's own code (e.g. access_denied), not its free text.
            let error: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            return page::page(
                StatusCode::FORBIDDEN,
                "sso-provider-refused",
                "The identity provider did not sign you in",
                &format!("It answered `{error}`."),
                Some(&clear),
            )
            .into();
        }
        let Some(code) = param("code").filter(|c| !c.is_empty()) else {
            return bad("Sign-in failed", "The identity provider sent no authorization code.");
        };
        let identity = match self.redeem(&code, &flow).await {
            Ok(id) => id,
            Err(Failure::Provider(step, message)) => return self.provider_failed(step, &message).with_cookie(&clear).into(),
            Err(Failure::Token(e)) => {
                tracing::warn!(error = %e, "an ID token was refused");
                return page::page(
                    StatusCode::FORBIDDEN,
                    "sso-invalid-token",
                    "Sign-in failed",
                    &format!("The identity provider's answer could not be trusted: {e}."),
                    Some(&clear),
                )
                .into();
            }
        };
        match signin::sign_in(state, &self.cfg, &identity).await {
            Ok(member) => Outcome::SignedIn {
                member,
                clear_cookie: HeaderValue::try_from(clear.as_str()).expect("ascii cookie"),
            },
            Err(refusal) => {
                let (title, message) = refusal.page();
                tracing::info!(reason = refusal.code(), issuer = %identity.issuer, "sign-in refused");
                let status = if refusal == signin::Refusal::Unavailable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::FORBIDDEN
                };
                page::page(status, "sso-refused", title, &message, Some(&clear)).into()
            }
        }
    }

    /// Code → tokens → validated ID token → identity.
    async fn redeem(&self, code: &str, flow: &Flow) -> Result<VerifiedIdentity, Failure> {
        let d = self
            .provider
            .discovery()
            .await
            .map_err(|e| Failure::Provider("discovery", e.to_string()))?;
        let method = d.auth_method().map_err(|e| Failure::Provider("discovery", e.to_string()))?;
        let verifier = flow.pkce_verifier();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let auth = match method {
            AuthMethod::Basic => ClientAuth::Basic {
                id: &self.cfg.client_id,
                secret: self.cfg.client_secret.expose(),
            },
            AuthMethod::Post => {
                form.push(("client_id", &self.cfg.client_id));
                form.push(("client_secret", self.cfg.client_secret.expose()));
                ClientAuth::InForm
            }
        };
        let answer: TokenAnswer = self
            .provider
            .fetcher()
            .post_form(&d.token_endpoint, &form, auth)
            .await
            .map_err(|e| Failure::Provider("token", e.to_string()))?;
        let token = answer.id_token.ok_or(Failure::Token(IdTokenError::Missing("id_token")))?;
        let peeked = id_token::peek(&token).map_err(Failure::Token)?;
        let key = self
            .provider
            .key(&d.jwks_uri, peeked.kid.as_deref())
            .await
            .map_err(|e| Failure::Provider("keys", e.to_string()))?
            .ok_or(Failure::Token(IdTokenError::UnknownKey))?;
        let nonce = flow.nonce();
        let expect = Expect {
            issuer: self.provider.issuer(),
            client_id: &self.cfg.client_id,
            nonce: &nonce,
            now: unix_now(),
        };
        let claims = id_token::verify(&token, &peeked, &key, &expect).map_err(Failure::Token)?;
        Ok(VerifiedIdentity {
            email: claims.email,
            email_verified: claims.email_verified,
            name: claims.name,
            issuer: claims.iss,
            subject: claims.sub,
        })
    }

    fn provider_failed(&self, step: &str, message: &str) -> http::Response<Body> {
        tracing::warn!(step, error = message, issuer = %self.cfg.issuer, "OpenID provider call failed");
        page::page(
            StatusCode::BAD_GATEWAY,
            "sso-provider-error",
            "The identity provider could not be reached",
            "Sign-in with your identity provider failed on its side or on the way. Try again in a minute; if it persists, tell your administrator (the gateway's log says why).",
            None,
        )
    }
}

/// What a sign-in request came to.
pub enum Outcome {
    /// A page (a redirect to the provider, or why sign-in stopped).
    Page(http::Response<Body>),
    /// The provider vouched for a member: start their session, send them on,
    /// and clear the flow cookie with `clear_cookie`.
    SignedIn {
        member: signin::MemberRef,
        clear_cookie: HeaderValue,
    },
}

impl From<http::Response<Body>> for Outcome {
    fn from(r: http::Response<Body>) -> Self {
        Outcome::Page(r)
    }
}

impl Sso {
    /// The page shown when the member session cannot be started after all.
    pub fn session_failed(&self, clear_cookie: &HeaderValue) -> http::Response<Body> {
        let mut r = page::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "sso-refused",
            "Sign-in is unavailable",
            "Your identity was confirmed, but a session could not be started. Try again in a minute.",
            None,
        );
        r.headers_mut().append(SET_COOKIE, clear_cookie.clone());
        r
    }
}

enum Failure {
    Provider(&'static str, String),
    Token(IdTokenError),
}

trait WithCookie {
    fn with_cookie(self, cookie: &str) -> Self;
}

impl WithCookie for http::Response<Body> {
    fn with_cookie(mut self, cookie: &str) -> Self {
        if let Ok(v) = HeaderValue::try_from(cookie) {
            self.headers_mut().append(SET_COOKIE, v);
        }
        self
    }
}

/// The first value of `name` in a query string, percent- and `+`-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The clock, unsigned (a clock before 1970 reads as 1970).
fn unix_now() -> u64 {
    u64::try_from(now_unix()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param("a=1&state=x%2By+z&code=", "state").as_deref(), Some("x+y z"));
        assert_eq!(query_param("a=1&code=", "code").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "state"), None);
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%"), "%");
    }
}
