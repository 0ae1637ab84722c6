//! Who is signed in: the one seam between the authorization server and
//! sign-in. `current` answers for a request; everything else in `oauth`
//! only sees a [`Member`].
//!
//! The person is a member of a workspace with a member session on the
//! public listener (`web::current_member`, docs/members.md), and may grant
//! access to that workspace only. Someone not signed in (or signed in to
//! another workspace) gets a page that says how to sign in, and a
//! short-lived `portcullis_next` cookie holding the authorization request,
//! which the sign-in (`web::signin`) follows back once done.

use http::{HeaderMap, HeaderValue};

use crate::state::AppState;

/// The cookie that brings a person back to the authorization request after
/// signing in (`web::signin` reads it; [`next_cookie`] writes it).
pub use crate::web::NEXT_COOKIE;

/// A signed-in person, as the consent page needs them.
#[derive(Debug, Clone)]
pub struct Member {
    /// Stable id (`mem_…`): the grant is theirs.
    pub id: String,
    pub email: Option<String>,
    /// The workspace they may grant access to.
    pub workspace: String,
}

impl Member {
    pub fn may_use(&self, slug: &str) -> bool {
        self.workspace == slug
    }
}

/// The person signed in on this request, if any.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Option<Member> {
    let s = crate::web::current_member(state, headers).await?;
    Some(Member {
        id: s.member_id,
        email: Some(s.email),
        workspace: s.workspace,
    })
}

/// `Set-Cookie` for the way back to `path_and_query` (an authorization
/// request on this listener) after signing in: ten minutes, HttpOnly, and
/// `SameSite=Lax` so that it survives the top-level navigation from a
/// sign-in link opened from a mail client.
pub fn next_cookie(state: &AppState, headers: &HeaderMap, path_and_query: &str) -> Option<HeaderValue> {
    let secure = crate::auth::browser::secure(&state.config, headers);
    let value = super::form::encode(path_and_query);
    HeaderValue::from_str(&format!(
        "{NEXT_COOKIE}={value}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}
