//! `POST /oauth/token`: the authorization-code grant (this file) and the
//! refresh-token grant (`refresh`), and issuing a token pair for a grant.
//!
//! A code is single use: the store spends it atomically, and a second
//! presentation (an attacker who intercepted it, or a replay) revokes the
//! grant and every token already issued under it (RFC 6749 §4.1.2).

use http::Response;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::authorize::CodePayload;
use super::form::Form;
use super::metadata::SCOPE;
use super::{OAuthError, PER_CLIENT_PER_MINUTE, Req, Server, b64, ct_eq, reply};
use crate::auth::lifecycle::{self, NewTokenRequest};
use crate::error::Body;
use crate::store::grants::{Consumed, Grant, Secret, SecretKind};
use crate::token::{self, TokenKind, now_unix};

/// `POST /oauth/token`.
pub async fn handle(s: &Server, req: &Req<'_>) -> Result<Response<Body>, OAuthError> {
    let f = Form::parse(&req.body).map_err(|_| OAuthError::InvalidRequest("the form is malformed or repeats a parameter"))?;
    let client_id = f
        .get("client_id")
        .ok_or(OAuthError::InvalidClient("client_id is required (public client)"))?;
    if s.limited(&format!("client:{client_id}"), PER_CLIENT_PER_MINUTE) {
        return Err(OAuthError::SlowDown);
    }
    match f.get("grant_type") {
        Some("authorization_code") => authorization_code(s, &f, client_id).await,
        Some("refresh_token") => super::refresh::handle(s, &f, client_id).await,
        Some(_) => Err(OAuthError::UnsupportedGrantType),
        None => Err(OAuthError::InvalidRequest("grant_type is required")),
    }
}

async fn authorization_code(s: &Server, f: &Form, client_id: &str) -> Result<Response<Body>, OAuthError> {
    let bad_code = OAuthError::InvalidGrant("the code is invalid, expired or already used");
    let code = f.get("code").ok_or(OAuthError::InvalidRequest("code is required"))?;
    let verifier = f
        .get("code_verifier")
        .ok_or(OAuthError::InvalidRequest("code_verifier is required"))?;
    let grants = s.state.store.grants().ok_or(OAuthError::TemporarilyUnavailable)?;
    if code.len() != token::TOKEN_LEN || !code.starts_with("mwc_") {
        return Err(bad_code);
    }
    let now = now_unix();
    let secret = match grants.consume_secret(&token::hash(code), now).await? {
        Consumed::Fresh(sec) if sec.kind == SecretKind::Code => sec,
        Consumed::Reused {
            kind: SecretKind::Code,
            grant_id,
        } => {
            tracing::warn!(grant = %grant_id, "oauth code reused: grant revoked");
            lifecycle::revoke_grant(Some(&s.state.verifier), &s.state.store, &grant_id, None, "code_reused", now).await?;
            return Err(bad_code);
        }
        _ => return Err(bad_code),
    };
    let p: CodePayload = serde_json::from_str(&secret.payload).map_err(|_| bad_code)?;
    // The code is spent whatever follows: a wrong verifier cannot be retried.
    if p.client_id != client_id {
        return Err(OAuthError::InvalidGrant("the code was issued to another client"));
    }
    if f.get("redirect_uri").is_some_and(|r| r != p.redirect_uri) {
        return Err(OAuthError::InvalidGrant("redirect_uri differs from the authorization request's"));
    }
    if !pkce_ok(verifier, &p.code_challenge) {
        return Err(OAuthError::InvalidGrant("code_verifier does not match the code_challenge"));
    }
    let grant = grants.get_grant(&secret.grant_id).await?.ok_or(bad_code)?;
    if grant.revoked_at.is_some() {
        return Err(bad_code);
    }
    if let Some(r) = f.get("resource")
        && s.workspace_of_resource(r).is_none_or(|w| *w.slug != *grant.workspace)
    {
        return Err(OAuthError::InvalidTarget);
    }
    issue(s, &grant, "authorization_code").await
}

/// RFC 7636 S256: base64url(SHA-256(verifier)) equals the challenge; the
/// verifier is 43 to 128 unreserved characters.
fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let shaped = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    shaped && ct_eq(b64(&Sha256::digest(verifier.as_bytes())).as_bytes(), challenge.as_bytes())
}

/// A new access token (kind `oauth`) and refresh token for `grant`.
pub(super) async fn issue(s: &Server, grant: &Grant, how: &str) -> Result<Response<Body>, OAuthError> {
    let grants = s.state.store.grants().ok_or(OAuthError::TemporarilyUnavailable)?;
    let now = now_unix();
    let cfg = &s.state.config.oauth;
    let (access, record) = lifecycle::create(
        Some(&s.state.verifier),
        &s.state.store,
        NewTokenRequest {
            name: grant.client_name.clone(),
            kind: Some(TokenKind::Oauth),
            workspace: Some(grant.workspace.clone()),
            expires_in: Some(cfg.access_token_ttl.as_secs()),
            member_id: Some(grant.member_id.clone()),
            email: grant.email.clone(),
            allowed_servers: grant.servers.clone(),
            requests_per_minute: None,
            created_by: grant.id.clone(),
        },
        now,
    )
    .await?;
    grants.add_grant_token(&grant.id, &record.id).await?;
    // A revocation that ran between our read of the grant and the line
    // above did not see this token: check again and take it back.
    if grants.get_grant(&grant.id).await?.is_none_or(|g| g.revoked_at.is_some()) {
        lifecycle::revoke(Some(&s.state.verifier), &s.state.store, &record.id, now).await?;
        return Err(OAuthError::InvalidGrant("the grant was revoked"));
    }
    let refresh = token::generate_refresh();
    grants
        .put_secret(
            &refresh.hash,
            &Secret {
                kind: SecretKind::Refresh,
                grant_id: grant.id.clone(),
                payload: grant.client_id.clone(),
                expires_at: now + cfg.refresh_token_ttl.as_secs() as i64,
            },
        )
        .await?;
    grants.touch_grant(&grant.id, now).await?;
    tracing::info!(grant = %grant.id, token_id = %record.id, workspace = %grant.workspace, "oauth tokens issued");
    super::audit_issued(s, grant, &record.id, how).await;
    Ok(reply::json(
        200,
        &json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": cfg.access_token_ttl.as_secs(),
            "refresh_token": refresh.raw,
            "scope": SCOPE,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_ok(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!pkce_ok("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }
}
