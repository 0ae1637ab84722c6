//! The seam between "the provider vouches for this person" and "this person
//! is member X, now signed in": the e-mail policy of `[auth.oidc]` (verified,
//! allowed domain), then the member lookup (or auto-join) and the member
//! session. Everything before this point is OpenID Connect; everything after
//! it is the members module's.

use crate::config::OidcConfig;
use crate::state::AppState;

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

/// The member with `email` (or, with `auto_join_role`, a new one in the
/// `auto_join_workspaces`).
///
/// Members are not on this branch's base: until they are, nobody is a member.
async fn find_member(_state: &AppState, _cfg: &OidcConfig, email: &str, _id: &VerifiedIdentity) -> Result<MemberRef, Refusal> {
    Err(Refusal::UnknownMember { email: email.to_owned() })
}

/// The audit event `signin` with method `oidc` (docs/contract.md §10). No
/// audit module on this branch's base: a log line until the lead wires it.
pub fn record_signin_audit(member: &MemberRef, method: &'static str) {
    tracing::info!(event = "signin", method, workspace = %member.workspace, member_id = %member.member_id, "audit: signin");
}
