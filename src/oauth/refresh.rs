//! The refresh-token grant: rotation on every use and reuse detection.
//!
//! A refresh token is spent when presented (atomically, in the store) and
//! a new one issued with the new access token. Presenting a spent one again
//! means two parties hold it (one stole it): the whole grant is revoked,
//! with every access token issued under it, on every instance.

use http::Response;

use super::form::Form;
use super::{OAuthError, Server};
use crate::auth::lifecycle;
use crate::error::Body;
use crate::store::grants::{Consumed, SecretKind};
use crate::token::{self, now_unix};

pub async fn handle(s: &Server, f: &Form, client_id: &str) -> Result<Response<Body>, OAuthError> {
    let bad = OAuthError::InvalidGrant("the refresh token is invalid, expired, revoked or already used");
    let raw = f
        .get("refresh_token")
        .ok_or(OAuthError::InvalidRequest("refresh_token is required"))?;
    if token::parse_refresh(raw).is_err() {
        return Err(bad);
    }
    let grants = s.state.store.grants().ok_or(OAuthError::TemporarilyUnavailable)?;
    let now = now_unix();
    let secret = match grants.consume_secret(&token::hash(raw), now).await? {
        Consumed::Fresh(sec) if sec.kind == SecretKind::Refresh => sec,
        Consumed::Reused {
            kind: SecretKind::Refresh,
            grant_id,
        } => {
            tracing::warn!(grant = %grant_id, "oauth refresh token reused: grant revoked");
            lifecycle::revoke_grant(Some(&s.state.verifier), &s.state.store, &grant_id, None, "refresh_reused", now).await?;
            return Err(bad);
        }
        _ => return Err(bad),
    };
    if secret.payload != client_id {
        // Spent now, and the rightful client's copy with it: someone else
        // holds this grant's token, so end the grant.
        lifecycle::revoke_grant(
            Some(&s.state.verifier),
            &s.state.store,
            &secret.grant_id,
            None,
            "refresh_stolen",
            now,
        )
        .await?;
        return Err(bad);
    }
    let grant = grants.get_grant(&secret.grant_id).await?.ok_or(bad)?;
    if grant.revoked_at.is_some() {
        return Err(bad);
    }
    if let Some(r) = f.get("resource")
        && s.workspace_of_resource(r).is_none_or(|w| *w.slug != *grant.workspace)
    {
        return Err(OAuthError::InvalidTarget);
    }
    super::token::issue(s, &grant, "refresh_token").await
}
