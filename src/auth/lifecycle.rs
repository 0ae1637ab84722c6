//! Creating and revoking tokens: the store write plus the index update, in the
//! order that makes revocation immediate, and the audit event
//! (`token_created` / `admin_token_created` / `token_revoked`), written
//! before the call returns when the verifier has an audit trail attached.

use std::sync::Arc;

use crate::audit::{AuditEvent, EventType};
use crate::store::{Revoked, StoreError};
use crate::token::{self, TokenKind, TokenRecord};

use super::Verifier;

/// What a caller asks for when creating a token.
#[derive(Debug, Clone, Default)]
pub struct NewTokenRequest {
    pub name: String,
    pub kind: Option<TokenKind>,
    pub workspace: Option<String>,
    pub expires_in: Option<u64>,
    pub member_id: Option<String>,
    pub email: Option<String>,
    pub allowed_servers: Option<Vec<String>>,
    pub requests_per_minute: Option<u32>,
    pub created_by: String,
}

/// Stores a new token and returns the raw value (to be shown once) and its record.
pub async fn create(
    verifier: Option<&Verifier>,
    store: &Arc<dyn crate::store::TokenStore>,
    req: NewTokenRequest,
    now: i64,
) -> Result<(String, TokenRecord), StoreError> {
    let kind = req.kind.unwrap_or(TokenKind::Workspace);
    let new = token::generate(kind);
    let record = TokenRecord {
        id: token::generate_id(),
        name: req.name,
        workspace: req.workspace,
        kind,
        hint: new.hint,
        member_id: req.member_id,
        email: req.email,
        created_at: now,
        created_by: req.created_by,
        // `0` or absent means "never"; saturate absurd values instead of wrapping.
        expires_at: req
            .expires_in
            .filter(|&s| s > 0)
            .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
        revoked_at: None,
        last_used_at: None,
        allowed_servers: req.allowed_servers,
        requests_per_minute: req.requests_per_minute,
    };
    store.insert(&record, &new.hash).await?;
    if let Some(v) = verifier {
        v.forget_unknown(&new.hash);
        if let Some(audit) = v.audit() {
            audit.record(created_event(&record)).await;
        }
    }
    Ok((new.raw, record))
}

/// The audit event of a new token: `actor` is `created_by` (an admin token
/// id, or `bootstrap`). The offline CLI records the same event itself.
pub fn created_event(record: &TokenRecord) -> AuditEvent {
    let kind = match record.kind {
        TokenKind::Admin => EventType::AdminTokenCreated,
        _ => EventType::TokenCreated,
    };
    AuditEvent {
        actor: Some(record.created_by.clone()),
        workspace: record.workspace.clone(),
        token_id: Some(record.id.clone()),
        token_name: Some(record.name.clone()),
        member_id: record.member_id.clone(),
        ..AuditEvent::new(kind, 0)
    }
}

/// The audit event of a revocation by `actor` (`None`: not known).
pub fn revoked_event(record: &TokenRecord, actor: Option<&str>) -> AuditEvent {
    AuditEvent {
        actor: actor.map(str::to_owned),
        workspace: record.workspace.clone(),
        token_id: Some(record.id.clone()),
        token_name: Some(record.name.clone()),
        member_id: record.member_id.clone(),
        ..AuditEvent::new(EventType::TokenRevoked, 0)
    }
}

/// Revokes `id` in the store, then in this process's index, so that when this
/// returns the very next request with the token fails. `None` if unknown.
/// The audit event names no actor: callers that know one use [`revoke_by`].
pub async fn revoke(
    verifier: Option<&Verifier>,
    store: &Arc<dyn crate::store::TokenStore>,
    id: &str,
    now: i64,
) -> Result<Option<Revoked>, StoreError> {
    revoke_by(verifier, store, id, None, now).await
}

/// [`revoke`], recording `actor` (an admin token id, a member later) in the
/// `token_revoked` event. Revoking an already revoked token records nothing.
pub async fn revoke_by(
    verifier: Option<&Verifier>,
    store: &Arc<dyn crate::store::TokenStore>,
    id: &str,
    actor: Option<&str>,
    now: i64,
) -> Result<Option<Revoked>, StoreError> {
    let revoked = store.revoke(id, now).await?;
    if let (Some(audit), Some(r)) = (verifier.and_then(Verifier::audit), &revoked)
        && r.newly_revoked
    {
        // Recorded before waiting for the other instances: the revocation
        // is committed, whatever the wait brings.
        audit.record(revoked_event(&r.record, actor)).await;
    }
    if let (Some(v), Some(r)) = (verifier, &revoked) {
        v.apply_revocation(&r.hash);
        if r.newly_revoked {
            // Every subscribed instance (this one included) acknowledges once
            // it has applied the push, and the store announces the last
            // acknowledgement; wait for that, so that "revoked" means
            // refused everywhere when this call returns.
            let started = tokio::time::Instant::now();
            let all_acked = r.receivers == 0 || v.wait_for_acks(r.seq, v.propagation_wait()).await;
            if !r.all_notified || !all_acked {
                // Some live instance missed the push (or its ack was lost): it
                // applies the revocation from the log within one poll
                // interval. Return only after that.
                tokio::time::sleep_until(started + v.propagation_wait()).await;
            }
        }
    }
    Ok(revoked)
}

/// Revokes OAuth grant `grant_id` and every access token issued under it,
/// each through [`revoke`], so that when this returns no instance accepts
/// any of them. Refresh tokens of the grant die with it (the token
/// endpoint refuses a revoked grant's). `None` if the grant is unknown.
///
/// `actor` (an admin token id or a member id; `None` for the client or
/// the authorization server itself) and `why` go into the audit trail's
/// `grant_revoked` event, and `actor` into each `token_revoked`.
pub async fn revoke_grant(
    verifier: Option<&Verifier>,
    store: &Arc<dyn crate::store::TokenStore>,
    grant_id: &str,
    actor: Option<&str>,
    why: &str,
    now: i64,
) -> Result<Option<crate::store::grants::Grant>, StoreError> {
    let Some(grants) = store.grants() else {
        return Ok(None);
    };
    let Some(grant) = grants.revoke_grant(grant_id, now).await? else {
        return Ok(None);
    };
    if let Some(audit) = verifier.and_then(Verifier::audit) {
        let event = AuditEvent {
            actor: actor.map(str::to_owned),
            workspace: Some(grant.workspace.clone()),
            member_id: Some(grant.member_id.clone()),
            method: Some(why.to_owned()),
            ..AuditEvent::new(EventType::GrantRevoked, 0)
        };
        audit.record(event).await;
    }
    for token_id in grants.grant_tokens(grant_id).await? {
        revoke_by(verifier, store, &token_id, actor, now).await?;
    }
    Ok(Some(grant))
}
