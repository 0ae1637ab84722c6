//! RFC 7591 dynamic client registration, public clients only.
//!
//! Stateless: the client id is the registered metadata (name and redirect
//! URIs) itself, base64url, followed by an HMAC under the server's key
//! (`mcc_<payload>.<mac>`). Nothing is stored, so an unauthenticated
//! endpoint cannot fill the store however often it is called (it is rate
//! limited per address all the same), and every instance reads any id.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{OAuthError, Req, Server, b64, ct_eq, unb64};
use crate::token::{is_forbidden_char, now_unix};

/// Redirect URIs per client.
const MAX_REDIRECT_URIS: usize = 8;
/// Length of one redirect URI.
const MAX_URI_LEN: usize = 512;
/// Length of a client name (longer ones are cut).
const MAX_NAME_CHARS: usize = 80;
/// Registration body; larger is `invalid_client_metadata`.
pub const MAX_REGISTRATION_BYTES: usize = 8 * 1024;
const PREFIX: &str = "mcc_";

/// A client, registered or from its metadata document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Client {
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "r")]
    pub redirect_uris: Vec<String>,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
}

/// `POST /oauth/register`.
pub fn handle(s: &Server, req: &Req<'_>) -> Result<serde_json::Value, OAuthError> {
    if req.body.len() > MAX_REGISTRATION_BYTES {
        return Err(OAuthError::InvalidClientMetadata("the registration request is too large"));
    }
    let r: Request = serde_json::from_slice(&req.body)
        .map_err(|_| OAuthError::InvalidClientMetadata("the body must be a JSON object of client metadata"))?;
    if r.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
        return Err(OAuthError::InvalidClientMetadata(
            "only public clients are registered: token_endpoint_auth_method must be none",
        ));
    }
    if r.grant_types
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g != "authorization_code" && g != "refresh_token"))
    {
        return Err(OAuthError::InvalidClientMetadata(
            "grant_types may hold authorization_code and refresh_token only",
        ));
    }
    if r.response_types.as_ref().is_some_and(|t| t.iter().any(|t| t != "code")) {
        return Err(OAuthError::InvalidClientMetadata("response_types may hold code only"));
    }
    if r.redirect_uris.is_empty() || r.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::InvalidRedirectUri("give 1 to 8 redirect_uris"));
    }
    for u in &r.redirect_uris {
        check_redirect_uri(u)?;
    }
    let name = clean_name(r.client_name.as_deref().unwrap_or("unnamed client"));
    let client = Client {
        name,
        redirect_uris: r.redirect_uris,
    };
    let id = s.client_id(&client);
    let now = now_unix();
    Ok(json!({
        "client_id": id,
        "client_id_issued_at": now,
        "client_name": client.name,
        "redirect_uris": client.redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }))
}

/// A redirect URI must be https, or http on a loopback host (any port:
/// native apps listen on one chosen at run time, RFC 8252 §7.3); never
/// with a fragment.
pub fn check_redirect_uri(u: &str) -> Result<(), OAuthError> {
    if u.len() > MAX_URI_LEN || u.contains('#') || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(OAuthError::InvalidRedirectUri(
            "redirect URIs must be absolute URLs without a fragment",
        ));
    }
    let Ok(parsed) = u.parse::<http::Uri>() else {
        return Err(OAuthError::InvalidRedirectUri("a redirect URI is not a URL"));
    };
    let host = parsed.host().unwrap_or("");
    if host.is_empty() {
        return Err(OAuthError::InvalidRedirectUri("a redirect URI has no host"));
    }
    match parsed.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if matches!(host, "localhost" | "127.0.0.1" | "[::1]") => Ok(()),
        _ => Err(OAuthError::InvalidRedirectUri(
            "redirect URIs must be https, or http on localhost, 127.0.0.1 or [::1]",
        )),
    }
}

/// A name as shown on the consent page: no control or format characters,
/// at most [`MAX_NAME_CHARS`].
pub fn clean_name(n: &str) -> String {
    let cleaned: String = n.chars().filter(|c| !is_forbidden_char(*c)).take(MAX_NAME_CHARS).collect();
    let t = cleaned.trim();
    if t.is_empty() { "unnamed client".into() } else { t.to_owned() }
}

impl Server {
    fn client_id(&self, c: &Client) -> String {
        let payload = b64(&serde_json::to_vec(c).expect("serializable"));
        let mac = self.mac("client", payload.as_bytes());
        format!("{PREFIX}{payload}.{}", b64(&mac[..16]))
    }

    /// The client of a registered id, if it is one we issued.
    pub(super) fn registered_client(&self, id: &str) -> Option<Client> {
        let (payload, mac) = id.strip_prefix(PREFIX)?.split_once('.')?;
        if id.len() > 8 * 1024 || !ct_eq(&unb64(mac)?, &self.mac("client", payload.as_bytes())[..16]) {
            return None;
        }
        serde_json::from_slice(&unb64(payload)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_http() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:53121/callback",
            "http://localhost:9/x",
            "http://[::1]:80/",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "custom:/cb",
            "https:///nohost",
            "",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name(" Claude\u{202E} "), "Claude");
        assert_eq!(clean_name("\n"), "unnamed client");
        assert_eq!(clean_name(&"x".repeat(200)).len(), MAX_NAME_CHARS);
    }
}
