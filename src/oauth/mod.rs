//! The built-in OAuth 2.1 authorization server (`[oauth] enabled = true`,
//! docs/oauth.md), served on the data listener, the URL clients know.
//!
//! One idea per file: `metadata` (RFC 9728 and RFC 8414 discovery),
//! `register` (RFC 7591 dynamic registration, stateless client ids),
//! `client_metadata` (Client ID Metadata Documents), `authorize` (the
//! authorization request and the consent page), `token` (the
//! authorization-code grant), `refresh` (the refresh-token grant, rotation
//! and reuse detection), `revoke` (RFC 7009),
//! `member` (who is signed in: the seam to member sessions), `form` (the
//! urlencoded bodies and queries), `reply` (OAuth error and JSON answers).
//!
//! The gateway hands this module every request whose path is under
//! `/oauth/` or `/.well-known/oauth-` ([`owns`]), with its body already
//! read (bounded by [`MAX_BODY`]); `/ws/{slug}` never comes here.

mod authorize;
mod client_metadata;
mod form;
mod member;
mod metadata;
mod refresh;
mod register;
mod reply;
mod revoke;
mod token;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use sha2::{Digest, Sha256};

use crate::audit::{AuditEvent, EventType};
use crate::error::Body;
use crate::limit::Limiter;
use crate::state::AppState;

pub use reply::OAuthError;

/// Largest body any OAuth endpoint reads (registration included): a
/// registration request of a few redirect URIs is well under 4 KiB.
pub const MAX_BODY: usize = 32 * 1024;
/// Requests per minute per client address, over all OAuth endpoints.
const PER_IP_PER_MINUTE: u32 = 60;
/// Requests per minute per client id at the token endpoint.
const PER_CLIENT_PER_MINUTE: u32 = 30;
/// Rate-limit keys tracked before the idle ones are swept.
const MAX_LIMIT_KEYS: usize = 50_000;
/// How long an authorization code lives: the client exchanges it at once.
const CODE_TTL_SECS: i64 = 60;

/// Whether a data-listener path belongs to the authorization server.
pub fn owns(path: &str) -> bool {
    path.starts_with("/oauth/") || path.starts_with("/.well-known/oauth-")
}

/// The answer to a body over [`MAX_BODY`]: a registration gets
/// `invalid_client_metadata` (RFC 7591 §3.2.2), anything else
/// `invalid_request`; both 400.
pub fn too_large(path: &str) -> Response<Body> {
    reply::error(if path == "/oauth/register" {
        OAuthError::InvalidClientMetadata("the registration request is too large")
    } else {
        OAuthError::InvalidRequest("the request body is too large")
    })
}

/// The authorization server: shared state and keys.
pub struct Server {
    state: Arc<AppState>,
    /// `server.public_url` without a trailing slash: the issuer.
    issuer: String,
    limiter: Limiter,
    /// Signs registered client ids and consent forms. Derived from the
    /// store's shared secret, so every instance (and a restart) agrees.
    key: [u8; 32],
    cimd: client_metadata::Cache,
}

/// One request, as the endpoints see it.
pub struct Req<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub client: Option<IpAddr>,
}

impl Server {
    pub fn new(state: Arc<AppState>) -> Self {
        let secret = state.session_bind_key.unwrap_or_else(|| {
            // No shared secret: registered client ids last as long as this
            // process (documented in docs/oauth.md).
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).expect("OS random source");
            k
        });
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"portcullis oauth v1\0")
            .chain_update(secret)
            .finalize()
            .into();
        let issuer = state.config.server.public_url.trim_end_matches('/').to_owned();
        Server {
            issuer,
            limiter: Limiter::new(),
            key,
            cimd: client_metadata::Cache::new(state.config.oauth.allow_private_client_metadata),
            state,
        }
    }

    /// Answers one request under [`owns`].
    pub async fn handle(&self, req: Req<'_>) -> Response<Body> {
        if let Some(ip) = req.client
            && self.limited(&format!("ip:{ip}"), PER_IP_PER_MINUTE)
        {
            return reply::error(OAuthError::SlowDown);
        }
        let r = match (req.method.clone(), req.path) {
            (Method::GET, "/.well-known/oauth-authorization-server") => Ok(metadata::authorization_server(self)),
            (Method::GET, p) if p.starts_with("/.well-known/oauth-protected-resource") => Ok(metadata::protected_resource(self, p)),
            (Method::POST, "/oauth/register") => register::handle(self, &req).map(|v| reply::json(201, &v)),
            (Method::GET, "/oauth/authorize") => Ok(authorize::get(self, &req).await),
            (Method::POST, "/oauth/authorize") => Ok(authorize::post(self, &req).await),
            (Method::POST, "/oauth/token") => token::handle(self, &req).await,
            (Method::POST, "/oauth/revoke") => revoke::handle(self, &req).await,
            (_, "/oauth/register" | "/oauth/token" | "/oauth/revoke") => Err(OAuthError::MethodNotAllowed),
            _ => Err(OAuthError::NotFound),
        };
        r.unwrap_or_else(reply::error)
    }

    /// Counts one request of `key` (an address or a client id, hashed to
    /// the limiter's key); true when over `per_minute`.
    fn limited(&self, key: &str, per_minute: u32) -> bool {
        if self.limiter.len() > MAX_LIMIT_KEYS {
            self.limiter.sweep();
        }
        let h: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.limiter.check(crate::token::limiter_key(&h), per_minute).is_err()
    }

    /// HMAC-SHA256 under the server's key, `label` separating the uses.
    fn mac(&self, label: &str, data: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.key, label, data)
    }

    /// The workspace that `resource` names: exactly `<issuer>/ws/<slug>`
    /// (a trailing slash tolerated) of a configured workspace.
    fn workspace_of_resource(&self, resource: &str) -> Option<Arc<crate::config::Workspace>> {
        let rest = resource.strip_prefix(&self.issuer)?.strip_prefix("/ws/")?;
        let slug = rest.strip_suffix('/').unwrap_or(rest);
        self.state.config.workspace(slug).cloned()
    }

    fn resource_url(&self, slug: &str) -> String {
        format!("{}/ws/{slug}", self.issuer)
    }
}

/// HMAC-SHA256 (RFC 2104) of `label \0 data`.
fn hmac_sha256(key: &[u8; 32], label: &str, data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(label.as_bytes())
        .chain_update([0u8])
        .chain_update(data)
        .finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

/// Constant-time equality.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// base64url without padding.
fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// Records a consent step in the audit trail: the member as actor, the
/// client's name as `method` (never a code, token or redirect URI).
pub(crate) async fn audit(s: &Server, kind: EventType, workspace: &str, member_id: &str, client_name: &str) {
    let event = AuditEvent {
        actor: Some(member_id.to_owned()),
        workspace: Some(workspace.to_owned()),
        member_id: Some(member_id.to_owned()),
        method: Some(client_name.chars().take(64).collect()),
        ..AuditEvent::new(kind, 0)
    };
    s.state.audit.record(event).await;
}

/// Records an issued access/refresh pair: the new access token's id, the
/// grant's member, and `how` (`authorization_code` or `refresh_token`).
pub(crate) async fn audit_issued(s: &Server, grant: &crate::store::grants::Grant, token_id: &str, how: &str) {
    let event = AuditEvent {
        actor: Some(grant.member_id.clone()),
        workspace: Some(grant.workspace.clone()),
        member_id: Some(grant.member_id.clone()),
        token_id: Some(token_id.to_owned()),
        method: Some(how.to_owned()),
        ..AuditEvent::new(EventType::OauthTokensIssued, 0)
    };
    s.state.audit.record(event).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_shape_and_separates_labels() {
        let k = [7u8; 32];
        assert_eq!(hmac_sha256(&k, "a", b"x"), hmac_sha256(&k, "a", b"x"));
        assert_ne!(hmac_sha256(&k, "a", b"x"), hmac_sha256(&k, "b", b"x"));
        assert_ne!(hmac_sha256(&k, "a", b"x"), hmac_sha256(&[8u8; 32], "a", b"x"));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }

    #[test]
    fn owned_paths() {
        assert!(owns("/oauth/token"));
        assert!(owns("/.well-known/oauth-authorization-server"));
        assert!(owns("/.well-known/oauth-protected-resource/ws/a"));
        assert!(!owns("/ws/a"));
        assert!(!owns("/.well-known/openid-configuration"));
    }
}
