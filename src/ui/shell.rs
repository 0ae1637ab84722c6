//! The page shell both front ends render: head (CSRF meta, the embedded
//! stylesheet, script and icon under the front end's own asset prefix), skip
//! link, top bar and the `#page-data` inputs of the script. Each front end
//! supplies only what differs: its home link, asset prefix and the
//! signed-in part of the top bar.

use maud::{DOCTYPE, Markup, html};

/// What differs between the dashboard's and the members' pages.
pub struct Shell<'a> {
    /// Where the brand link goes (`/` on the admin listener, `/me` on the public one).
    pub home: &'a str,
    /// Prefix of `app.css`, `app.js` and `icon.svg` (`/assets`, `/me/assets`).
    pub assets: &'a str,
    /// The session's CSRF token, when someone is signed in.
    pub csrf: Option<&'a str>,
    /// The signed-in part of the top bar (empty when signed out).
    pub top: Markup,
    /// Whether the page loads `app.js`. The OAuth consent pages do not: a
    /// page that grants access runs no script at all.
    pub script: bool,
}

/// A whole page. `data`: the script's inputs, as data attributes (no inline
/// JS); the first is the page's name.
pub fn page(shell: Shell<'_>, title: &str, data: &[(&str, &str)], main: Markup) -> Markup {
    let assets = shell.assets;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(c) = shell.csrf { meta name="csrf-token" content=(c); }
                title { (title) " · Portcullis" }
                link rel="stylesheet" href={ (assets) "/app.css" };
                link rel="icon" href={ (assets) "/icon.svg" } type="image/svg+xml";
                @if shell.script { script src={ (assets) "/app.js" } defer {} }
            }
            body data-page=(data.first().map_or("", |d| d.1)) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(shell.home) { "Portcullis" }
                    (shell.top)
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
