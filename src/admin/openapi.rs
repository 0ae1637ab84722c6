//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of the admin API,
//! generated from the code (utoipa). Each operation comes from the
//! `#[utoipa::path]` annotation on its handler (`mod.rs`), each schema from
//! the type the handler serializes (`types.rs`, `token::TokenView`,
//! `auth::self_check::SelfView`, `error::ApiErrorBody`).
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
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document: paths from the handlers' annotations, the components they
/// name, the two bearer schemes, and admin-token security by default (the
/// operations that need none say so with `security(())`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        description = "The control plane of the Portcullis MCP gateway: workspace tokens, \
            workspaces, health. Errors are `{\"error\": {\"code\", \"message\"}}` (schema `Error`). \
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
        super::members::add,
        super::members::list,
        super::members::remove,
        super::members::invite,
    ),
    components(schemas(crate::error::ApiErrorBody, crate::error::ApiErrorDetail)),
    modifiers(&BearerSchemes),
    security(("admin_token" = [])),
    tags(
        (name = "tokens", description = "Workspace tokens: create, list, get, revoke, self-check"),
        (name = "workspaces", description = "The configured workspaces"),
        (name = "oauth", description = "OAuth grants (connected apps): list and revoke"),
        (name = "members", description = "Members of a workspace and their sign-in links"),
        (name = "operations", description = "Health, readiness, metrics and this document; no token needed"),
    )
)]
pub struct ApiDoc;

/// Security schemes are not expressible in the derive's attributes.
struct BearerSchemes;

impl utoipa::Modify for BearerSchemes {
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
    }
}

/// Paths the admin listener serves that are deliberately not in the
/// document, with the reason: pages for browsers and their assets (HTML, not
/// an API; e.g. the dashboard's), never a `/v1/` path. `tests/it/openapi.rs`
/// checks that each is really served, not documented and not under `/v1/`,
/// so the list can neither go stale nor hide an API route. Empty so far.
pub const NOT_API: &[(&str, &str)] = &[];

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
