//! Who is signed in: the one seam between the authorization server and
//! sign-in. `current` answers for a request; everything else in `oauth`
//! only sees a [`Member`].
//!
//! Today the person is an administrator signed in to the dashboard whose
//! session cookie reaches this listener (same host: browsers do not
//! separate cookies by port), acting for the workspaces its admin token
//! covers. Member sessions on the public listener (members of a workspace,
//! sign-in links, SSO) plug in here.

use std::net::IpAddr;

use http::{HeaderMap, Method};

use crate::state::AppState;

/// A signed-in person, as the consent page needs them.
#[derive(Debug, Clone)]
pub struct Member {
    /// Stable id: the grant is theirs (`admin:<token id>` for an
    /// administrator's dashboard session).
    pub id: String,
    pub email: Option<String>,
    /// Workspaces they may grant access to; `None` = all.
    pub workspaces: Option<Vec<String>>,
}

impl Member {
    pub fn may_use(&self, slug: &str) -> bool {
        self.workspaces.as_ref().is_none_or(|w| w.iter().any(|s| s == slug))
    }
}

/// The person signed in on this request, if any.
pub async fn current(state: &AppState, headers: &HeaderMap, client: Option<IpAddr>) -> Option<Member> {
    if !crate::admin::session::has_cookie(headers) {
        return None;
    }
    // GET: the CSRF check of a state-changing call is the consent form's own.
    let s = crate::admin::session::resolve(state, headers, &Method::GET, client, None)
        .await
        .ok()?;
    Some(Member {
        id: format!("admin:{}", s.admin_id),
        email: None,
        workspaces: s.workspace.map(|w| vec![w.to_string()]),
    })
}

/// Where to send someone who must sign in first, coming back to `back`
/// (a path on this listener) afterwards.
pub fn sign_in_url(issuer: &str, back: &str) -> String {
    format!("{issuer}/signin?next={}", super::form::encode(back))
}
