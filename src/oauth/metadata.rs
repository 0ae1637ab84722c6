//! Discovery: RFC 9728 protected-resource metadata per workspace and RFC
//! 8414 authorization-server metadata, both on the data listener.
//!
//! An unknown slug answers 404. That tells a prober which slugs exist,
//! which `/ws/{slug}` itself never does (a 401 either way, with the same
//! `resource_metadata` shape). It is accepted because a client must not be
//! sent into a login for a workspace that does not exist, and slugs are not
//! secrets: they are in every URL and `mcp_json` handed out; what protects
//! a workspace is the bearer check (docs/oauth.md, "Security choices").

use http::Response;
use serde_json::json;

use super::{OAuthError, Server, reply};
use crate::error::Body;

/// The one scope: access to the workspace's MCP servers. Which servers is
/// decided on the consent page, not by scope strings.
pub const SCOPE: &str = "mcp";

/// `GET /.well-known/oauth-protected-resource/ws/{slug}`.
pub fn protected_resource(s: &Server, path: &str) -> Response<Body> {
    let slug = path
        .strip_prefix("/.well-known/oauth-protected-resource/ws/")
        .map(|r| r.strip_suffix('/').unwrap_or(r));
    let Some(ws) = slug.and_then(|slug| s.state.config.workspace(slug)) else {
        return reply::error(OAuthError::NotFound);
    };
    reply::json(
        200,
        &json!({
            "resource": s.resource_url(&ws.slug),
            "authorization_servers": [s.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": [SCOPE],
            "resource_name": format!("Portcullis workspace {}", ws.slug),
        }),
    )
}

/// `GET /.well-known/oauth-authorization-server`.
pub fn authorization_server(s: &Server) -> Response<Body> {
    let i = &s.issuer;
    reply::json(
        200,
        &json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/oauth/authorize"),
            "token_endpoint": format!("{i}/oauth/token"),
            "registration_endpoint": format!("{i}/oauth/register"),
            "revocation_endpoint": format!("{i}/oauth/revoke"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": [SCOPE],
            "client_id_metadata_document_supported": super::client_metadata::SUPPORTED,
            "authorization_response_iss_parameter_supported": true,
        }),
    )
}
