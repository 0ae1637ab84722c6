//! Members' pages (maud, escaped by construction; no inline script or
//! style: `/me/assets/app.js` reads `data-*` attributes and the
//! `csrf-token` meta element). Stylesheet and script are the dashboard's
//! (`crate::ui`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use crate::ui::shell::{self, Shell};

use super::MemberSession;

pub fn html(status: StatusCode, m: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

/// The page shell (`crate::ui::shell`) with the member's part of the top bar.
pub fn layout(title: &str, who: Option<&MemberSession>, data: &[(&str, &str)], main: Markup) -> Markup {
    let top = html! {
        @if let Some(w) = who {
            span.who {
                "Signed in as " strong { (w.email) } " (" (w.role.as_str()) " of " code { (w.workspace) } ")"
            }
            form.signout method="post" action="/me/signout" {
                input type="hidden" name="csrf" value=(w.csrf);
                button type="submit" data-testid="signout" { "Sign out" }
            }
        }
    };
    let shell = Shell {
        home: "/me",
        assets: "/me/assets",
        csrf: who.map(|w| w.csrf.as_str()),
        top,
        script: true,
    };
    shell::page(shell, title, data, main)
}

/// A page that only says something (errors, "signed out").
pub fn message(who: Option<&MemberSession>, title: &str, text: &str) -> Markup {
    layout(
        title,
        who,
        &[("page", "message")],
        html! { h1 { (title) } p data-testid="message" { (text) } },
    )
}
