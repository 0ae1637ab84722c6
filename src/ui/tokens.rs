//! The tokens section (contract §9 testids), shown by the dashboard's
//! Tokens tab and by a member's "My tokens" page; `assets/app.js` fills it
//! from the JSON API whose base the page names (`data-api`).

use maud::{Markup, html};

use crate::config::Workspace;

/// The tokens section with its dialogs (new token, revoke confirmation).
/// `admin`: the dashboard's (filters by member, a member field and server
/// choice in the new-token form); otherwise a member's own page.
pub fn section(w: &Workspace, admin: bool) -> Markup {
    html! {
        section aria-labelledby="tokens-h" {
            h2 #tokens-h { "Tokens" }
            div.toolbar {
                label { "Status "
                    select #filter-status data-testid="filter-status" {
                        option value="" { "All" }
                        option value="active" { "Active" }
                        option value="revoked" { "Revoked" }
                        option value="expired" { "Expired" }
                    }
                }
                @if admin {
                    label { "Member "
                        input #filter-member data-testid="filter-member" type="search" placeholder="member id or email";
                    }
                }
                button #token-new data-testid="token-new" type="button" { "New token" }
            }
            p #tokens-msg role="status" aria-live="polite" {}
            table {
                caption.visually-hidden { "Tokens of workspace " (w.slug) }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Member" }
                    th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "Created" }
                    th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody #tokens-body {}
            }
            nav.pager aria-label="Token pages" {
                button #page-prev type="button" disabled { "Previous page" }
                button #page-next type="button" disabled { "Next page" }
            }
        }
        dialog #new-token-dialog aria-labelledby="new-token-h" {
            h2 #new-token-h { "New token" }
            form #new-token-form novalidate {
                label for="token-name" { "Name" }
                input #token-name data-testid="token-name" name="name" required maxlength="200" autocomplete="off";
                label for="token-expiry" { "Expires" }
                select #token-expiry data-testid="token-expiry" name="expiry" {
                    option value="none" { "Never" }
                    option value="90d" selected { "In 90 days" }
                    option value="30d" { "In 30 days" }
                    option value="24h" { "In 24 hours" }
                    option value="1h" { "In 1 hour" }
                    option value="custom" { "Custom…" }
                }
                div #custom-expiry hidden {
                    label for="token-expiry-custom" { "Expires at (your local time)" }
                    input #token-expiry-custom data-testid="token-expiry-custom" type="datetime-local";
                }
                @if admin {
                    label for="token-member" { "Member id or email (optional)" }
                    input #token-member data-testid="token-member" name="member" autocomplete="off";
                    label for="token-servers" { "Servers it may use (none selected: all)" }
                    select #token-servers data-testid="token-servers" name="servers" multiple size=(w.servers.len().clamp(2, 6)) {
                        @for s in &w.servers { option value=(s.name) { (s.name) } }
                    }
                }
                p.error #new-token-error role="alert" {}
                div.buttons {
                    button type="submit" data-testid="token-create" { "Create token" }
                    button.secondary #new-token-cancel type="button" { "Cancel" }
                }
            }
            div #new-token-result hidden {
                p.warning { strong { "Copy this token now." } " It is shown once: it is not stored anywhere it could be shown again." }
                div.secret {
                    code #token-secret data-testid="token-secret" {}
                    button #token-copy data-testid="token-copy" type="button" { "Copy" }
                }
                p #copy-status role="status" aria-live="polite" {}
                h3 { code { "mcp.json" } }
                pre #token-mcp-json data-testid="token-mcp-json" tabindex="0" {}
                h3 { "Set up a client" }
                details { summary { "Claude Desktop (through mcp-remote)" } pre #recipe-claude-desktop tabindex="0" {} }
                details { summary { "Cursor" } pre #recipe-cursor tabindex="0" {} }
                details { summary { "Claude Code" } pre #recipe-claude-code tabindex="0" {} }
                details { summary { "VS Code" } pre #recipe-vscode tabindex="0" {} }
                div.buttons { button #new-token-done type="button" { "Done" } }
            }
        }
        dialog #confirm-dialog role="alertdialog" aria-labelledby="confirm-h" aria-describedby="confirm-text" {
            h2 #confirm-h { "Revoke token?" }
            p #confirm-text {}
            div.buttons {
                button.danger #confirm data-testid="confirm" type="button" { "Revoke" }
                button.secondary #confirm-cancel type="button" { "Cancel" }
            }
        }
    }
}
