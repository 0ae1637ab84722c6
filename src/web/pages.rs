//! Members' pages (maud, escaped by construction; no inline script or
//! style: `/me/assets/app.js` reads `data-*` attributes and the
//! `csrf-token` meta element). Stylesheet and script are the dashboard's
//! (`crate::ui`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::MemberSession;

pub fn html(status: StatusCode, m: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

/// The page shell. `data`: the script's inputs (the first is the page).
pub fn layout(title: &str, who: Option<&MemberSession>, data: &[(&str, &str)], main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(w) = who { meta name="csrf-token" content=(w.csrf); }
                title { (title) " · Portcullis" }
                link rel="stylesheet" href="/me/assets/app.css";
                link rel="icon" href="/me/assets/icon.svg" type="image/svg+xml";
                script src="/me/assets/app.js" defer {}
            }
            body data-page=(data.first().map_or("", |d| d.1)) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/me" { "Portcullis" }
                    @if let Some(w) = who {
                        span.who {
                            "Signed in as " strong { (w.email) } " (" (w.role.as_str()) " of " code { (w.workspace) } ")"
                        }
                        form.signout method="post" action="/me/signout" {
                            input type="hidden" name="csrf" value=(w.csrf);
                            button type="submit" data-testid="signout" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    div #page-data hidden {
                        @for (k, v) in data { span data-key=(k) data-value=(v) {} }
                    }
                    (main)
                }
            }
        }
    }
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
