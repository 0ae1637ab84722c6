//! The seam between "the provider vouches for this person" and "this person
//! is member X, now signed in": the e-mail policy of `[auth.oidc]` (verified,
//! allowed domain), then the member lookup (or auto-join) and the member
//! session. Everything before this point is OpenID Connect; everything after
//! it is the members module's.

use crate::config::OidcConfig;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{AuditEvent, EventType};
use crate::store::members::{MemberRecord, Role};

/// An identity read from a valid ID token.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub issuer: String,
    pub subject: String,
}

/// The member an identity maps to; the caller starts the member session
/// (the members module, above this one, owns sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub workspace: String,
    pub member_id: String,
}

/// Why an identity does not sign in; each is a page the person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoEmail,
    EmailNotVerified,
    DomainNotAllowed {
        email: String,
    },
    UnknownMember {
        email: String,
    },
    /// The member store failed or is not there; retrying may help.
    Unavailable,
}

impl Refusal {
    /// For the log: which refusal, without the address.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoEmail => "no_email",
            Refusal::EmailNotVerified => "email_not_verified",
            Refusal::DomainNotAllowed { .. } => "domain_not_allowed",
            Refusal::UnknownMember { .. } => "unknown_member",
            Refusal::Unavailable => "unavailable",
        }
    }

    pub fn page(&self) -> (&'static str, String) {
        match self {
            Refusal::NoEmail => ("No e-mail address", "Your identity provider did not share an e-mail address, so you cannot be matched to a member. Ask your administrator to allow the `email` scope for this application.".into()),
            Refusal::EmailNotVerified => ("E-mail address not verified", "Your identity provider says your e-mail address is not verified. Verify it there, then sign in again.".into()),
            Refusal::DomainNotAllowed { email } => ("This address may not sign in", format!("{email} is not in a domain allowed to sign in here. Sign in with your work account, or ask an administrator.")),
            Refusal::UnknownMember { email } => ("You are not a member", format!("{email} is not a member of any workspace here. Ask a workspace owner to add you, then sign in again.")),
            Refusal::Unavailable => ("Sign-in is unavailable", "Members cannot be looked up right now. Try again in a minute.".into()),
        }
    }
}

/// Applies the e-mail policy, then maps the identity to a member (creating
/// one with `auto_join_role`).
pub async fn sign_in(state: &AppState, cfg: &OidcConfig, id: &VerifiedIdentity) -> Result<MemberRef, Refusal> {
    let email = id.email.as_deref().filter(|e| !e.is_empty()).ok_or(Refusal::NoEmail)?;
    if !id.email_verified {
        return Err(Refusal::EmailNotVerified);
    }
    if !cfg.domain_allowed(email) {
        return Err(Refusal::DomainNotAllowed { email: email.to_owned() });
    }
    find_member(state, cfg, &email.trim().to_ascii_lowercase(), id).await
}

/// The member with `email`: in the first workspace (in configuration order)
/// that has one. Else, with `auto_join_role`, a new member with that role in
/// each of `auto_join_workspaces`, signed in to the first.
async fn find_member(state: &AppState, cfg: &OidcConfig, email: &str, id: &VerifiedIdentity) -> Result<MemberRef, Refusal> {
    let store = state.store.members().ok_or(Refusal::Unavailable)?;
    for w in &state.config.workspaces {
        match store.member_by_email(&w.slug, email).await {
            Ok(Some(m)) => {
                return Ok(MemberRef {
                    workspace: m.workspace,
                    member_id: m.id,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "member lookup failed during sign-in");
                return Err(Refusal::Unavailable);
            }
        }
    }
    let Some(role) = cfg.auto_join_role.as_deref().and_then(Role::parse) else {
        return Err(Refusal::UnknownMember { email: email.to_owned() });
    };
    let mut first = None;
    for slug in &cfg.auto_join_workspaces {
        let m = MemberRecord {
            id: format!("mem_{}", crate::token::random_base62(16)),
            workspace: slug.clone(),
            email: email.to_owned(),
            // Bounded like a name typed in the admin API.
            name: id.name.as_deref().map(|n| n.chars().take(200).collect()),
            role,
            created_at: crate::token::now_unix(),
        };
        match store.insert_member(&m).await {
            Ok(()) => {
                record_member_joined(state, &m).await;
                first.get_or_insert(MemberRef {
                    workspace: m.workspace,
                    member_id: m.id,
                });
            }
            // A concurrent sign-in of the same person created it first.
            Err(StoreError::Conflict(_)) => {
                if let Ok(Some(existing)) = store.member_by_email(slug, email).await {
                    first.get_or_insert(MemberRef {
                        workspace: existing.workspace,
                        member_id: existing.id,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, workspace = %slug, "auto-join failed during sign-in");
                return Err(Refusal::Unavailable);
            }
        }
    }
    first.ok_or(Refusal::Unavailable)
}

/// Audit hook: a member created by single sign-on's `auto_join_role`
/// (`member_added`, as the admin API's).
async fn record_member_joined(state: &AppState, m: &MemberRecord) {
    tracing::info!(via = "oidc", workspace = %m.workspace, member_id = %m.id, role = m.role.as_str(), "member joined by single sign-on");
    let event = AuditEvent {
        actor: Some(m.id.clone()),
        workspace: Some(m.workspace.clone()),
        member_id: Some(m.id.clone()),
        method: Some("oidc".to_owned()),
        ..AuditEvent::new(EventType::MemberAdded, 0)
    };
    state.audit.record(event).await;
}

/// The audit event `signin` with method `oidc` (docs/contract.md §10).
pub async fn record_signin_audit(state: &AppState, member: &MemberRef, method: &'static str) {
    let event = AuditEvent {
        actor: Some(member.member_id.to_string()),
        workspace: Some(member.workspace.to_string()),
        member_id: Some(member.member_id.to_string()),
        method: Some(method.to_owned()),
        ..AuditEvent::new(EventType::Signin, 0)
    };
    state.audit.record(event).await;
}
