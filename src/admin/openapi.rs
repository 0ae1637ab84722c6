//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of the admin API,
//! generated from the code (utoipa). Each operation comes from the
//! `#[utoipa::path]` annotation on its handler (`mod.rs`, `servers.rs`,
//! `usage.rs`, `audit.rs`), each schema from the type the handler
//! serializes (`types.rs`, `token::TokenView`, `auth::self_check::SelfView`,
//! `store::audit::AuditEvent`, `audit::Stats`, `error::ApiErrorBody`).
//!
//! Served without a token: it describes the API's shape and holds nothing
//! of a deployment (no workspace, server or token), so tools (code
//! generators, API explorers) can fetch it as they expect to. It is built
//! once, on first request.
//!
//! `tests/it/openapi.rs` reads the routes the router actually serves and
//! fails when one is missing here: adding a route means its annotation and
//! its handler's name in `paths(...)` below.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};

/// The document: paths from the handlers' annotations, the components they
/// name, the security schemes, and admin-token security by default (the
/// operations that need none say so with `security(())`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        description = "The control plane of the Portcullis MCP gateway: workspace tokens, \
            workspaces and their servers, usage, the audit trail, health. Every operation that takes \
            an admin token also takes the web dashboard's session cookie (scheme `dashboard_session`) \
            when no Authorization header is sent. Errors are `{\"error\": {\"code\", \"message\"}}` (schema `Error`). \
            Reference: docs/admin-api.md in the repository.",
        license(name = "See the repository")
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        openapi_json,
        super::token_self,
        super::list_workspaces,
        super::list_tokens,
        super::create_token,
        super::get_token,
        super::revoke_token,
        super::grants::list,
        super::grants::revoke,
        super::servers::list,
        super::usage::usage,
        super::audit::workspace_audit,
        super::audit::global_audit,
        super::audit::stats,
        super::members::add,
        super::members::list,
        super::members::remove,
        super::members::invite,
    ),
    components(schemas(crate::error::ApiErrorBody, crate::error::ApiErrorDetail)),
    modifiers(&SecuritySchemes),
    security(("admin_token" = [])),
    tags(
        (name = "tokens", description = "Workspace tokens: create, list, get, revoke, self-check"),
        (name = "workspaces", description = "The configured workspaces and their servers"),
        (name = "oauth", description = "OAuth grants (connected apps): list and revoke"),
        (name = "members", description = "Members of a workspace and their sign-in links"),
        (name = "usage", description = "Per-token, member, server and tool usage over time"),
        (name = "audit", description = "The audit trail: who did what, when, to which token"),
        (name = "operations", description = "Health, readiness, metrics and this document; no token needed"),
    )
)]
pub struct ApiDoc;

/// Security schemes are not expressible in the derive's attributes.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = |format: &str, what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(what))
                    .build(),
            )
        };
        components.add_security_scheme(
            "admin_token",
            scheme(
                "mwa_…",
                "Admin token (`mwa_` + 36 base62), global or scoped to one workspace: \
                 `portcullis admin token create` makes the first one",
            ),
        );
        components.add_security_scheme(
            "workspace_token",
            scheme(
                "mwt_…",
                "Workspace token (`mwt_` + 36 base62); only `/v1/tokens/self` accepts it here",
            ),
        );
        // The `Admin` extractor (admin/mod.rs) also accepts the dashboard's
        // session: a client that is not a browser has no use for it, but a
        // reader of the document should know the API answers to a cookie.
        components.add_security_scheme(
            "dashboard_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::session::COOKIE,
                "The web dashboard's session (set by `POST /signin`; HttpOnly, SameSite=Strict). Used \
                 only when no Authorization header is sent. A request that changes state (not GET, HEAD \
                 or OPTIONS) must also send the session's CSRF secret in the `X-CSRF-Token` header, or \
                 it is refused with 403. The session carries its admin token's scope.",
            ))),
        );
        // Wherever an admin token is accepted, so is the session: the
        // default requirement and each operation that names `admin_token`.
        let either = |mut reqs: Vec<SecurityRequirement>| {
            if reqs.iter().any(|r| has_scheme(r, "admin_token")) && !reqs.iter().any(|r| has_scheme(r, "dashboard_session")) {
                reqs.push(SecurityRequirement::new("dashboard_session", Vec::<String>::new()));
            }
            reqs
        };
        if let Some(reqs) = doc.security.take() {
            doc.security = Some(either(reqs));
        }
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete]
                .into_iter()
                .flatten()
            {
                if let Some(reqs) = op.security.take() {
                    op.security = Some(either(reqs));
                }
            }
        }
    }
}

/// Whether a requirement names `scheme` (requirements serialize to
/// `{"<scheme>": [scopes]}`; the type has no accessor).
fn has_scheme(r: &SecurityRequirement, scheme: &str) -> bool {
    serde_json::to_value(r).is_ok_and(|v| v.get(scheme).is_some())
}

/// Paths the admin listener serves that are deliberately not in the
/// document, with the reason: pages for browsers and their assets (HTML, not
/// an API; e.g. the dashboard's), never a `/v1/` path. `tests/it/openapi.rs`
/// checks that each is really served, not documented and not under `/v1/`,
/// so the list can neither go stale nor hide an API route. The dashboard
/// (`dashboard/mod.rs`) serves these when `dashboard.enabled`.
pub const NOT_API: &[(&str, &str)] = &[
    (
        "/",
        "dashboard: the sign-in page (HTML), or a redirect to /workspaces when signed in",
    ),
    (
        "/signin",
        "dashboard: the sign-in form's target (HTML form post; GET redirects to /)",
    ),
    (
        "/signout",
        "dashboard: the sign-out form's target (HTML form post with the CSRF field)",
    ),
    ("/workspaces", "dashboard: the workspace list page (HTML)"),
    ("/workspaces/{ws}", "dashboard: redirects to the workspace's Tokens tab"),
    (
        "/workspaces/{ws}/{tab}",
        "dashboard: a workspace's tab page (HTML); its script calls the /v1 API",
    ),
    ("/assets/app.js", "dashboard: the pages' script"),
    ("/assets/app.css", "dashboard: the pages' style sheet"),
    ("/assets/icon.svg", "dashboard: the pages' icon"),
];

/// The document as built from the code (version from Cargo.toml).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

static JSON: LazyLock<String> = LazyLock::new(|| document().to_pretty_json().expect("the OpenAPI document serializes"));

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    summary = "This document",
    description = "OpenAPI 3.1, generated from the code. Served without a token: it holds no secrets.",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str()).into_response()
}
