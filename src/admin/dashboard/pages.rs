//! The dashboard's HTML, rendered at compile time by maud (escaped by
//! construction). Pages carry no inline script or style: the one script,
//! `/assets/app.js`, reads what it needs from `data-*` attributes and the
//! `csrf-token` meta element, and fills the tables from the JSON admin API.
//! Every `data-testid` is part of the contract (docs/contract.md §9).

use maud::{Markup, html};

use crate::config::Workspace;
use crate::ui::shell::{self, Shell};

/// The workspace tabs, in order: path segment, label, testid.
pub const TABS: &[(&str, &str, &str)] = &[
    ("tokens", "Tokens", "tab-tokens"),
    ("members", "Members", "tab-members"),
    ("usage", "Usage", "tab-usage"),
    ("audit", "Audit", "tab-audit"),
    ("servers", "Servers", "tab-servers"),
    ("apps", "Connected apps", "tab-apps"),
];

/// The signed-in part of the header.
pub struct Who<'a> {
    pub admin_id: &'a str,
    pub scope: Option<&'a str>,
    pub csrf: &'a str,
}

fn layout(title: &str, who: Option<&Who<'_>>, data: &[(&str, &str)], main: Markup) -> Markup {
    let top = html! {
        @if let Some(w) = who {
            nav aria-label="Main" { a href="/workspaces" { "Workspaces" } }
            span.who {
                "Signed in with " code { (w.admin_id) }
                @if let Some(s) = w.scope { " (workspace " code { (s) } " only)" }
            }
            form.signout method="post" action="/signout" {
                input type="hidden" name="csrf" value=(w.csrf);
                button type="submit" data-testid="signout" { "Sign out" }
            }
        }
    };
    let shell = Shell {
        home: "/",
        assets: "/assets",
        csrf: who.map(|w| w.csrf),
        top,
        script: true,
    };
    shell::page(shell, title, data, main)
}

pub fn sign_in(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        &[("page", "signin")],
        html! {
            h1 { "Sign in" }
            p { "Sign in with an admin token (" code { "mwa_…" } "). Create one on the gateway's host with "
                code { "portcullis admin token create --name me" } "." }
            form.card method="post" action="/signin" autocomplete="off" {
                @if let Some(e) = error {
                    p.error #signin-error role="alert" { (e) }
                }
                label for="signin-token" { "Admin token" }
                input #signin-token data-testid="signin-token" type="password" name="token" required
                    autocomplete="off" spellcheck="false" aria-describedby=[error.map(|_| "signin-error")];
                button type="submit" data-testid="signin-submit" { "Sign in" }
            }
            p.note { "The token is sent once, to this server, and is not kept in the browser: the server opens a session and sets an HttpOnly cookie." }
        },
    )
}

pub fn workspaces(who: &Who<'_>, list: &[(&Workspace, String)]) -> Markup {
    layout(
        "Workspaces",
        Some(who),
        &[("page", "workspaces")],
        html! {
            h1 { "Workspaces" }
            @if list.is_empty() {
                p { "No workspace is configured for this admin token." }
            } @else {
                ul.cards {
                    @for (w, url) in list {
                        li.card {
                            h2 { a href={ "/workspaces/" (w.slug) } data-testid={ "nav-workspace-" (w.slug) } { (w.slug) } }
                            p { "MCP URL: " code { (url) } }
                            p { (w.servers.len()) @if w.servers.len() == 1 { " server" } @else { " servers" } ": "
                                @for (i, s) in w.servers.iter().enumerate() { @if i > 0 { ", " } (s.name) } }
                        }
                    }
                }
            }
        },
    )
}

pub fn workspace(who: &Who<'_>, w: &Workspace, tab: &str) -> Markup {
    let label = TABS.iter().find(|t| t.0 == tab).map_or("", |t| t.1);
    layout(
        &format!("{label} · {}", w.slug),
        Some(who),
        &[("page", "workspace"), ("ws", &w.slug), ("tab", tab)],
        html! {
            h1 { "Workspace " code { (w.slug) } }
            nav.tabs aria-label="Workspace sections" {
                ul {
                    @for (seg, text, id) in TABS {
                        li { a href={ "/workspaces/" (w.slug) "/" (seg) } data-testid=(id)
                            aria-current=[(*seg == tab).then_some("page")] { (text) } }
                    }
                }
            }
            @match tab {
                "tokens" => (crate::ui::tokens::section(w, true)),
                "members" => (members(w)),
                "usage" => (usage()),
                "audit" => (audit()),
                "apps" => (apps(w)),
                _ => (servers()),
            }
        },
    )
}

/// Members of the workspace (docs/members.md): add, remove, sign-in links.
fn members(w: &Workspace) -> Markup {
    html! {
        section aria-labelledby="members-h" {
            h2 #members-h { "Members" }
            form.toolbar #member-form novalidate {
                label { "Email "
                    input #member-email data-testid="member-email" type="email" required autocomplete="off" spellcheck="false";
                }
                label { "Name (optional) "
                    input #member-name data-testid="member-name" autocomplete="off";
                }
                label { "Role "
                    select #member-role data-testid="member-role" {
                        option value="member" selected { "Member (own tokens)" }
                        option value="owner" { "Owner (all tokens)" }
                    }
                }
                button #member-add data-testid="member-add" type="submit" { "Add member" }
                button.secondary #member-invite data-testid="member-invite" type="button" { "Add and make a sign-in link" }
            }
            p #members-msg role="status" aria-live="polite" {}
            div.card #invite-result hidden {
                p.warning { strong { "Send this sign-in link to " span #invite-email {} " yourself." }
                    " It works once, within 24 hours, and is shown only now." }
                div.secret {
                    code #invite-link data-testid="invite-link" {}
                    button #invite-copy data-testid="invite-copy" type="button" { "Copy" }
                }
                p #invite-copy-status role="status" aria-live="polite" {}
            }
            table {
                caption.visually-hidden { "Members of workspace " (w.slug) }
                thead { tr {
                    th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Role" }
                    th scope="col" { "Added" } th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody #members-body {}
            }
            p.note { "Members sign in on the gateway's public URL with a sign-in link, and manage their own tokens there. "
                "Removing a member revokes their tokens (by member id or email) and ends their sessions at once." }
        }
        dialog #member-confirm-dialog role="alertdialog" aria-labelledby="member-confirm-h" aria-describedby="member-confirm-text" {
            h2 #member-confirm-h { "Remove member?" }
            p #member-confirm-text {}
            div.buttons {
                button.danger #member-confirm data-testid="confirm" type="button" { "Remove" }
                button.secondary #member-confirm-cancel type="button" { "Cancel" }
            }
        }
    }
}

/// Connected apps: the workspace's OAuth grants (docs/oauth.md), filled
/// by the script from `/v1/workspaces/{ws}/grants`; Disconnect revokes a
/// grant and every token it issued, after a confirmation.
fn apps(w: &Workspace) -> Markup {
    html! {
        section aria-labelledby="apps-h" {
            h2 #apps-h { "Connected apps" }
            p #apps-msg role="status" aria-live="polite" {}
            table {
                caption.visually-hidden { "OAuth grants of workspace " (w.slug) }
                thead { tr {
                    th scope="col" { "App" } th scope="col" { "Member" } th scope="col" { "Servers" }
                    th scope="col" { "Status" } th scope="col" { "Last used" } th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody #apps-body {}
            }
            p.note { "Apps connect with only the workspace URL when OAuth is on ([oauth] enabled = true). "
                "Disconnecting one revokes every token it holds at once." }
        }
        dialog #app-confirm-dialog role="alertdialog" aria-labelledby="app-confirm-h" aria-describedby="app-confirm-text" {
            h2 #app-confirm-h { "Disconnect app?" }
            p #app-confirm-text {}
            div.buttons {
                button.danger #app-confirm data-testid="confirm" type="button" { "Disconnect" }
                button.secondary #app-confirm-cancel type="button" { "Cancel" }
            }
        }
    }
}

fn usage() -> Markup {
    html! {
        section aria-labelledby="usage-h" {
            h2 #usage-h { "Usage" }
            form.toolbar #usage-controls {
                label { "Period "
                    select #usage-range {
                        option value="1h" { "Last hour" }
                        option value="24h" selected { "Last 24 hours" }
                        option value="7d" { "Last 7 days" }
                        option value="30d" { "Last 30 days" }
                    }
                }
                label { "Requests per "
                    select #usage-group {
                        option value="token" { "token" }
                        option value="member" { "member" }
                        option value="tool" { "tool" }
                        option value="server" { "server" }
                    }
                }
                label { "Show "
                    select #usage-key { option value="" { "all" } }
                }
            }
            p #usage-msg role="status" aria-live="polite" {}
            figure {
                div #usage-chart data-testid="usage-chart" {}
                figcaption #usage-caption {}
            }
            h3 #usage-members-h { "Per member" }
            table aria-labelledby="usage-members-h" {
                thead { tr { th scope="col" { "Member" } th scope="col" { "Requests" } th scope="col" { "Errors" } th scope="col" { "Rate-limited (429)" } } }
                tbody #usage-members {}
            }
            h3 #usage-tools-h { "Top tools" }
            table aria-labelledby="usage-tools-h" {
                thead { tr { th scope="col" { "Tool" } th scope="col" { "Requests" } th scope="col" { "Errors" } th scope="col" { "Rate-limited (429)" } } }
                tbody #usage-tools {}
            }
        }
    }
}

fn audit() -> Markup {
    html! {
        section aria-labelledby="audit-h" {
            h2 #audit-h { "Audit trail" }
            form.toolbar #audit-filters {
                label { "Type "
                    select #audit-type { option value="" { "All" } @for t in crate::store::audit::EventType::ALL { option value=(t.as_str()) { (t.as_str()) } } }
                }
                label { "Token id " input #audit-token type="search" autocomplete="off"; }
                label { "Member id " input #audit-member type="search" autocomplete="off"; }
                label { "From " input #audit-from type="datetime-local"; }
                label { "To " input #audit-to type="datetime-local"; }
                button type="submit" { "Apply" }
            }
            div.toolbar {
                button #audit-export-json type="button" { "Download JSON" }
                button #audit-export-csv type="button" { "Download CSV" }
            }
            p #audit-msg role="status" aria-live="polite" {}
            p #audit-stats data-testid="audit-stats" {}
            div.table-wrap tabindex="0" role="region" aria-label="Audit events" {
            table.compact {
                caption.visually-hidden { "Audit events, newest first" }
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Type" } th scope="col" { "Actor" } th scope="col" { "Token" }
                    th scope="col" { "Member" } th scope="col" { "Server" } th scope="col" { "Tool" } th scope="col" { "Status" }
                    th scope="col" { "Duration" } th scope="col" { "Request id" }
                } }
                tbody #audit-body {}
            }
            }
            div.pager { button #audit-more type="button" hidden { "Load more" } }
        }
    }
}

fn servers() -> Markup {
    html! {
        section aria-labelledby="servers-h" {
            h2 #servers-h { "Servers" }
            p #servers-msg role="status" aria-live="polite" {}
            table {
                caption.visually-hidden { "Upstream servers and their health" }
                thead { tr {
                    th scope="col" { "Server" } th scope="col" { "Address" } th scope="col" { "Health" }
                    th scope="col" { "Tools" } th scope="col" { "Since" } th scope="col" { "Timeout" }
                } }
                tbody #servers-body {}
            }
            p.note { "Health is what the gateway last saw, and since when: an answer or a failure of a request or (for workspaces with several servers) of its periodic probe. "
                "Tool counts are known for workspaces with several servers, where the gateway merges the lists." }
        }
    }
}

pub fn error_page(who: Option<&Who<'_>>, title: &str, message: &str) -> Markup {
    layout(
        title,
        who,
        &[("page", "error")],
        html! { h1 { (title) } p { (message) } p { a href="/" { "Back to the dashboard" } } },
    )
}

pub use crate::ui::ICON;
