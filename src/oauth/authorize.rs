//! `/oauth/authorize`: the authorization request (GET) and the consent
//! decision (POST from the consent page).
//!
//! Until the client and its redirect URI are known good, errors are
//! answered here (never redirected: an open redirector otherwise); after,
//! they go back to the redirect URI with `error`, `state` and `iss`.
//! The consent form carries the checked request, signed (HMAC) together
//! with the signed-in person's id: a POST whose request was altered (a
//! forged `state`, another redirect URI) or made for someone else fails
//! the signature. Cross-site POSTs are refused by `Origin` /
//! `Sec-Fetch-Site`.

use http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use http::{HeaderValue, Response, StatusCode};
use maud::{Markup, html};

use crate::ui::shell::{self, Shell};
use serde::{Deserialize, Serialize};

use super::form::Form;
use super::member::{self, Member};
use super::register::Client;
use super::{OAuthError, Req, Server, b64, ct_eq, reply, unb64};
use crate::audit::EventType;
use crate::error::{Body, full};
use crate::store::grants::{Grant, Secret, SecretKind};
use crate::token::{self, now_unix};

/// Prefix of authorization codes (same format as tokens; never a bearer).
const CODE_PREFIX: &str = "mwc_";

/// An authorization request, checked; what the consent form carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checked {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    state: Option<String>,
    workspace: String,
}

/// What an authorization code stands for (stored as its payload).
#[derive(Debug, Serialize, Deserialize)]
pub struct CodePayload {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
}

/// `GET /oauth/authorize`.
pub async fn get(s: &Server, req: &Req<'_>) -> Response<Body> {
    let Ok(q) = Form::parse(req.query.as_bytes()) else {
        return reply::error(OAuthError::InvalidRequest("the query is malformed or repeats a parameter"));
    };
    let (client, redirect_uri) = match client_and_redirect(s, &q).await {
        Ok(v) => v,
        Err(e) => return reply::error(e),
    };
    let state = q.get("state");
    let back = |e: OAuthError| error_redirect(s, &redirect_uri, e, state);
    if q.get("response_type") != Some("code") {
        return back(OAuthError::UnsupportedResponseType);
    }
    let challenge = match (q.get("code_challenge"), q.get("code_challenge_method")) {
        (Some(c), Some("S256")) if c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => c,
        _ => {
            return back(OAuthError::InvalidRequest(
                "PKCE is required: code_challenge (43 base64url characters) with code_challenge_method=S256",
            ));
        }
    };
    if state.is_some_and(|st| st.len() > 1024) {
        return back(OAuthError::InvalidRequest("state is too long"));
    }
    let Some(ws) = q.get("resource").and_then(|r| s.workspace_of_resource(r)) else {
        return back(OAuthError::InvalidTarget);
    };
    let m = match member::current(&s.state, req.headers).await {
        Some(m) if m.may_use(&ws.slug) => m,
        other => {
            let here = format!("/oauth/authorize?{}", req.query);
            let mut resp = page(
                StatusCode::UNAUTHORIZED,
                sign_in_page(&client, &ws.slug, &here, other.is_some(), s.state.config.oidc.is_some()),
                &redirect_uri,
            );
            if let Some(c) = member::next_cookie(&s.state, req.headers, &here) {
                resp.headers_mut().insert(http::header::SET_COOKIE, c);
            }
            return resp;
        }
    };
    let checked = Checked {
        client_id: q.get("client_id").unwrap_or_default().to_owned(),
        redirect_uri: redirect_uri.clone(),
        code_challenge: challenge.to_owned(),
        state: state.map(str::to_owned),
        workspace: ws.slug.to_string(),
    };
    let request = b64(&serde_json::to_vec(&checked).expect("serializable"));
    let sig = b64(&s.mac("consent", format!("{}\0{request}", m.id).as_bytes()));
    let servers: Vec<&str> = ws.servers.iter().map(|sv| &*sv.name).collect();
    page(
        StatusCode::OK,
        consent_page(&client, &redirect_uri, &ws.slug, &servers, &request, &sig),
        &redirect_uri,
    )
}

/// `POST /oauth/authorize`: the consent decision.
pub async fn post(s: &Server, req: &Req<'_>) -> Response<Body> {
    if cross_site(req.headers) {
        return reply::error(OAuthError::InvalidRequest("cross-site requests are refused"));
    }
    let Ok(f) = Form::parse(&req.body) else {
        return reply::error(OAuthError::InvalidRequest("the form is malformed"));
    };
    let Some(m) = member::current(&s.state, req.headers).await else {
        return reply::error(OAuthError::AccessDenied);
    };
    let (Some(request), Some(sig)) = (f.get("request"), f.get("sig")) else {
        return reply::error(OAuthError::InvalidRequest("the consent form is incomplete"));
    };
    let expected = s.mac("consent", format!("{}\0{request}", m.id).as_bytes());
    if !unb64(sig).is_some_and(|sig| ct_eq(&sig, &expected)) {
        return reply::error(OAuthError::InvalidRequest("the consent form was altered or is not yours"));
    }
    let Some(c) = unb64(request).and_then(|r| serde_json::from_slice::<Checked>(&r).ok()) else {
        return reply::error(OAuthError::InvalidRequest("the consent form is malformed"));
    };
    let state = c.state.as_deref();
    let Some(ws) = s.state.config.workspace(&c.workspace).cloned() else {
        return error_redirect(s, &c.redirect_uri, OAuthError::InvalidTarget, state);
    };
    let Some(client) = s.client(&c.client_id).await else {
        return reply::error(OAuthError::InvalidClient("unknown client_id"));
    };
    if f.get("decision") != Some("allow") {
        tracing::info!(workspace = %ws.slug, member = %m.id, "oauth consent denied");
        super::audit(s, EventType::ConsentDenied, &ws.slug, &m.id, &client.name).await;
        return error_redirect(s, &c.redirect_uri, OAuthError::AccessDenied, state);
    }
    let chosen: Vec<String> = f
        .with_prefix("server_")
        .filter(|n| ws.servers.iter().any(|sv| *sv.name == **n))
        .map(str::to_owned)
        .collect();
    if chosen.is_empty() {
        return error_redirect(s, &c.redirect_uri, OAuthError::AccessDenied, state);
    }
    let servers = (chosen.len() < ws.servers.len()).then_some(chosen);
    match issue_code(s, &m, &client, &c, servers).await {
        Ok(code) => {
            let mut params = vec![("code", code.as_str()), ("iss", s.issuer.as_str())];
            if let Some(st) = state {
                params.push(("state", st));
            }
            reply::redirect(&reply::with_query(&c.redirect_uri, &params))
        }
        Err(e) => error_redirect(s, &c.redirect_uri, e, state),
    }
}

/// Creates the grant and a code for it; returns the raw code.
async fn issue_code(s: &Server, m: &Member, client: &Client, c: &Checked, servers: Option<Vec<String>>) -> Result<String, OAuthError> {
    let grants = s.state.store.grants().ok_or(OAuthError::TemporarilyUnavailable)?;
    let now = now_unix();
    let grant = Grant {
        id: format!("grt_{}", &token::generate_id()[4..]),
        client_id: c.client_id.clone(),
        client_name: client.name.clone(),
        member_id: m.id.clone(),
        email: m.email.clone(),
        workspace: c.workspace.clone(),
        servers,
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    grants.create_grant(&grant).await?;
    let code = token::generate_with_prefix(CODE_PREFIX);
    let payload = CodePayload {
        client_id: c.client_id.clone(),
        redirect_uri: c.redirect_uri.clone(),
        code_challenge: c.code_challenge.clone(),
    };
    grants
        .put_secret(
            &code.hash,
            &Secret {
                kind: SecretKind::Code,
                grant_id: grant.id.clone(),
                payload: serde_json::to_string(&payload).expect("serializable"),
                expires_at: now + super::CODE_TTL_SECS,
            },
        )
        .await?;
    tracing::info!(grant = %grant.id, workspace = %grant.workspace, member = %m.id, "oauth consent given");
    super::audit(s, EventType::GrantCreated, &grant.workspace, &m.id, &grant.client_name).await;
    Ok(code.raw)
}

/// The client and the redirect URI to use, or the error to answer here.
async fn client_and_redirect(s: &Server, q: &Form) -> Result<(Client, String), OAuthError> {
    let id = q.get("client_id").ok_or(OAuthError::InvalidRequest("client_id is required"))?;
    let client = s.client(id).await.ok_or(OAuthError::InvalidClient("unknown client_id"))?;
    let redirect = match q.get("redirect_uri") {
        Some(r) if client.redirect_uris.iter().any(|u| u == r) => r.to_owned(),
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        _ => return Err(OAuthError::InvalidRequest("redirect_uri is not one registered for this client")),
    };
    Ok((client, redirect))
}

impl Server {
    /// A client by id: one we registered, or a metadata-document URL.
    pub(super) async fn client(&self, id: &str) -> Option<Client> {
        if id.starts_with("https://") || id.starts_with("http://") {
            return self.cimd.resolve(id).await;
        }
        self.registered_client(id)
    }
}

fn error_redirect(s: &Server, redirect_uri: &str, e: OAuthError, state: Option<&str>) -> Response<Body> {
    let (_, code, description) = e.parts();
    let mut params = vec![("error", code), ("error_description", description), ("iss", s.issuer.as_str())];
    if let Some(st) = state {
        params.push(("state", st));
    }
    reply::redirect(&reply::with_query(redirect_uri, &params))
}

/// A browser's cross-site request (the consent POST must come from our
/// page). `Sec-Fetch-Site` decides when the browser sends it; otherwise
/// `Origin`, when sent, must be this host's. (With `Referrer-Policy:
/// no-referrer`, Chrome sends `Origin: null` even on a same-origin POST,
/// so `null` is judged by `Sec-Fetch-Site` alone.)
fn cross_site(h: &http::HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site") {
        return site != "same-origin";
    }
    match (h.get(http::header::ORIGIN).and_then(|o| o.to_str().ok()), h.get(http::header::HOST)) {
        (Some("null"), _) => true,
        (Some(o), Some(host)) => o.split_once("://").map(|(_, a)| a) != host.to_str().ok(),
        _ => false,
    }
}

fn page(status: StatusCode, markup: Markup, redirect_uri: &str) -> Response<Body> {
    let mut resp = Response::new(full(markup.into_string()));
    *resp.status_mut() = status;
    // Stricter than the dashboard: no script at all (only the shell's
    // stylesheet and icon), forms only to us and to the client's redirect
    // origin (Chrome applies form-action to the redirect that follows the
    // POST).
    let origin = redirect_uri
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'"
    );
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(CONTENT_SECURITY_POLICY, v);
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The members' page shell (stylesheet and icon of the public listener's
/// `/me/assets`) without its script: a page that grants access runs none.
fn consent_shell(title: &str, main: Markup) -> Markup {
    let shell = Shell {
        home: "/me",
        assets: "/me/assets",
        csrf: None,
        top: html! {},
        script: false,
    };
    shell::page(shell, title, &[], main)
}

/// Not signed in (or signed in to another workspace): how to sign in, and
/// a link back here for when it is done. With single sign-on configured,
/// its link comes first: the `portcullis_next` cookie set with this page
/// brings the person back here from the provider too (`web::oidc`).
fn sign_in_page(client: &Client, ws: &str, here: &str, other_workspace: bool, sso: bool) -> Markup {
    let main = html! {
                    h1 { "Sign in to continue" }
                    p {
                        strong data-testid="consent-client" { (client.name) }
                        " asks for access to workspace "
                        code data-testid="consent-workspace" { (ws) } "."
                    }
                    @if other_workspace {
                        p { "You are signed in to another workspace. Sign in as a member of this one." }
                    }
                    @if sso {
                        p {
                            a href=(crate::web::oidc::SIGNIN_PATH) data-testid="signin-sso" { "Sign in with single sign-on" }
                            " (you will come back here to allow or deny)."
                        }
                        p { "Or open a sign-in link your workspace's owner sent you, in this browser, within ten minutes." }
                    } @else {
                        p {
                            "Open the sign-in link your workspace's owner sent you (in this browser, within ten minutes): "
                            "you will come back here to allow or deny. No link? Ask an owner for one ("
                            code { "portcullis member invite" } ")."
                        }
                    }
                    p { a href=(here) data-testid="consent-retry" { "I have signed in: continue" } }
    };
    consent_shell("Sign in to continue", main)
}

fn consent_page(client: &Client, redirect_uri: &str, ws: &str, servers: &[&str], request: &str, sig: &str) -> Markup {
    let host = redirect_uri
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_default();
    let main = html! {
                    h1 { "Allow access to workspace " span data-testid="consent-workspace" { (ws) } "?" }
                    p {
                        strong data-testid="consent-client" { (client.name) }
                        " wants to use this workspace's MCP servers on your behalf. It will receive its answer at "
                        code data-testid="consent-redirect-host" { (host) } "."
                    }
                    form method="post" action="/oauth/authorize" {
                        input type="hidden" name="request" value=(request);
                        input type="hidden" name="sig" value=(sig);
                        fieldset {
                            legend { "Servers it may use" }
                            @for s in servers {
                                label {
                                    input type="checkbox" name={ "server_" (s) } checked data-testid={ "consent-server-" (s) };
                                    " " (s)
                                }
                                br;
                            }
                        }
                        p {
                            button type="submit" name="decision" value="allow" data-testid="consent-allow" { "Allow" }
                            " "
                            button type="submit" name="decision" value="deny" data-testid="consent-deny" { "Deny" }
                        }
                    }
                    p { small { "You can disconnect it at any time under Connected apps." } }
    };
    consent_shell("Allow access?", main)
}
