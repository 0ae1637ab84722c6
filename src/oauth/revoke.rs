//! `POST /oauth/revoke` (RFC 7009). A refresh token ends its whole grant
//! (and the grant's access tokens, §2.1 "SHOULD"); an access token ends
//! itself. The answer is 200 whatever the token was, unknown included, so
//! the endpoint tells nobody which tokens exist.

use http::Response;

use super::form::Form;
use super::{OAuthError, Req, Server, reply};
use crate::auth::lifecycle;
use crate::error::Body;
use crate::store::grants::Consumed;
use crate::token::{self, TokenKind, now_unix};

pub async fn handle(s: &Server, req: &Req<'_>) -> Result<Response<Body>, OAuthError> {
    let f = Form::parse(&req.body).map_err(|_| OAuthError::InvalidRequest("the form is malformed or repeats a parameter"))?;
    let raw = f.get("token").ok_or(OAuthError::InvalidRequest("token is required"))?;
    let now = now_unix();
    let (verifier, store) = (Some(&*s.state.verifier), &s.state.store);
    if token::parse_refresh(raw).is_ok() {
        if let Some(grants) = store.grants() {
            match grants.consume_secret(&token::hash(raw), now).await? {
                Consumed::Fresh(sec) => {
                    lifecycle::revoke_grant(verifier, store, &sec.grant_id, None, "client", now).await?;
                }
                Consumed::Reused { grant_id, .. } => {
                    lifecycle::revoke_grant(verifier, store, &grant_id, None, "client", now).await?;
                }
                Consumed::Unknown => {}
            }
        }
    } else if token::parse(raw).is_ok()
        && let Some(r) = store.find_by_hash(&token::hash(raw)).await?
        && r.kind == TokenKind::Oauth
    {
        lifecycle::revoke(verifier, store, &r.id, now).await?;
    }
    Ok(reply::json(200, &serde_json::json!({})))
}
