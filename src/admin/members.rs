//! Members of a workspace over the admin API (docs/members.md,
//! docs/admin-api.md): add, list, remove, and invite (a sign-in link).
//!
//! - `POST /v1/workspaces/{ws}/members` `{"email","name"?,"role"}` → 201
//! - `GET /v1/workspaces/{ws}/members` → `{"members":[...]}` (at most
//!   `store::members::MAX_MEMBERS_PER_WORKSPACE`, oldest first)
//! - `DELETE /v1/workspaces/{ws}/members/{id}` → 200 `{"member", "revoked_tokens"}`
//! - `POST /v1/workspaces/{ws}/members/invite` `{"email","name"?,"role"?}`
//!   → 201 `{"member","created","url","expires_at"}`
//!
//! Removing a member ([`remove_member`], the one place) revokes their
//! tokens — workspace tokens of the workspace whose `member_id` is the
//! member's id, or whose `email` is the member's email (case-insensitive):
//! an admin may have issued them by email before the member existed — and
//! their grants ([`revoke_member_grants`], the hook for OAuth), and ends
//! their sessions (deleted with the member; every request re-reads the
//! member anyway, on every instance).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Admin, SharedState, check_text, workspace};
use crate::auth::browser::{hex, random_id, sha256};
use crate::auth::lifecycle;
use crate::error::{ApiError, ApiErrorBody};
use crate::state::AppState;
use crate::store::audit::{AuditEvent, EventType};
use crate::store::members::{LinkRecord, MemberRecord, MemberStore, Role};
use crate::store::{ListFilter, StoreError};
use crate::token::{TokenKind, format_rfc3339, now_unix};

/// How long a sign-in link is valid.
pub const SIGNIN_LINK_TTL_SECS: i64 = 24 * 3600;

/// A member, as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct MemberView {
    /// `mem_` + 16 base62.
    #[schema(example = "mem_4fG7hJ2kL9mN3pQ8")]
    pub id: String,
    pub workspace: String,
    /// Lowercase.
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&MemberRecord> for MemberView {
    fn from(m: &MemberRecord) -> Self {
        MemberView {
            id: m.id.clone(),
            workspace: m.workspace.clone(),
            email: m.email.clone(),
            name: m.name.clone(),
            role: m.role,
            created_at: format_rfc3339(m.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberView>,
}

#[derive(Serialize, ToSchema)]
pub struct RemovedMember {
    pub member: MemberView,
    /// Tokens revoked with the member.
    pub revoked_tokens: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Invitation {
    pub member: MemberView,
    /// Whether the member was created by this invitation.
    pub created: bool,
    /// `<server.public_url>/signin/link/<code>`: shown once, valid 24 h, single use.
    pub url: String,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub email: String,
    pub name: Option<String>,
    /// `owner` or `member`; for an invitation, default `member` (and
    /// ignored when the member exists).
    pub role: Option<String>,
}

/// A normalized email address (trimmed, lowercase), or 400.
pub fn normalize_email(e: &str) -> Result<String, ApiError> {
    check_text("email", e)?;
    let e = e.trim().to_lowercase();
    let valid = e.len() <= 254
        && !e.contains(char::is_whitespace)
        && e.matches('@').count() == 1
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && l.len() <= 64 && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !d.contains("..")
        });
    if valid {
        Ok(e)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_email",
            "`email` is not an email address",
        ))
    }
}

fn parse_role(r: Option<&str>, default: Option<Role>) -> Result<Role, ApiError> {
    match r.map(Role::parse) {
        Some(Some(role)) => Ok(role),
        None if default.is_some() => Ok(default.unwrap_or(Role::Member)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_role",
            "`role` must be `owner` or `member`",
        )),
    }
}

fn parse_body(body: &[u8]) -> Result<NewMember, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn check_name(n: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(n) = n else { return Ok(None) };
    check_text("name", n)?;
    let n = n.trim();
    if n.chars().count() > 200 {
        return Err(ApiError::bad_request("`name` is at most 200 characters"));
    }
    Ok((!n.is_empty()).then(|| n.to_owned()))
}

fn members(state: &AppState) -> Result<&dyn MemberStore, ApiError> {
    state.store.members().ok_or_else(ApiError::unavailable)
}

fn conflict(e: StoreError, email: &str) -> ApiError {
    match e {
        StoreError::Conflict(what) if what.contains("email") => ApiError::new(
            StatusCode::CONFLICT,
            "member_exists",
            format!("the workspace already has a member with email `{email}`"),
        ),
        StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, "too_many_members", what),
        e => e.into(),
    }
}

fn new_member_id() -> String {
    format!("mem_{}", crate::token::random_base62(16))
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/members",
    tag = "members",
    summary = "Add a member",
    params(("ws" = String, Path, description = "Workspace slug")),
    request_body = NewMember,
    responses(
        (status = 201, description = "Added", body = MemberView),
        (status = 400, description = "Bad JSON, email (`invalid_email`) or role (`invalid_role`)", body = ApiErrorBody),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 409, description = "A member has this email (`member_exists`), or the workspace is full", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn add(State(state): State<SharedState>, admin: Admin, Path(ws): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    workspace(&state, &admin, &ws)?;
    let req = parse_body(&body)?;
    let email = normalize_email(&req.email)?;
    let role = parse_role(req.role.as_deref(), None)?;
    let name = check_name(req.name.as_deref())?;
    let m = MemberRecord {
        id: new_member_id(),
        workspace: ws,
        email,
        name,
        role,
        created_at: now_unix(),
    };
    members(&state)?.insert_member(&m).await.map_err(|e| conflict(e, &m.email))?;
    audit_member_added(&state, &admin, &m).await;
    Ok((StatusCode::CREATED, Json(MemberView::from(&m))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/members",
    tag = "members",
    summary = "List the members",
    description = "Oldest first; at most 1000 (the most a workspace holds).",
    params(("ws" = String, Path, description = "Workspace slug")),
    responses(
        (status = 200, description = "The members", body = MemberList),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn list(State(state): State<SharedState>, admin: Admin, Path(ws): Path<String>) -> Result<Json<MemberList>, ApiError> {
    workspace(&state, &admin, &ws)?;
    let list = members(&state)?.list_members(&ws).await?;
    Ok(Json(MemberList {
        members: list.iter().map(MemberView::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/members/{id}",
    tag = "members",
    summary = "Remove a member",
    description = "Revokes the member's tokens (by member id or email) and grants, and ends their sessions, \
        on every instance, before answering.",
    params(("ws" = String, Path, description = "Workspace slug"), ("id" = String, Path, description = "Member id (`mem_…`)")),
    responses(
        (status = 200, description = "Removed", body = RemovedMember),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace, or no such member in it (`member_not_found`)", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn remove(
    State(state): State<SharedState>,
    admin: Admin,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    workspace(&state, &admin, &ws)?;
    let (m, revoked) = remove_member(&state, &ws, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("member_not_found", format!("workspace `{ws}` has no member `{id}`")))?;
    audit_member_removed(&state, &admin, &m, revoked).await;
    Ok(Json(RemovedMember {
        member: MemberView::from(&m),
        revoked_tokens: revoked,
    })
    .into_response())
}

/// Removes member `id` of `ws`: their tokens, their grants, their sessions,
/// then the member (and once more the tokens, for one created meanwhile).
/// `None` when there is no such member. The one place a member goes.
pub async fn remove_member(state: &AppState, ws: &str, id: &str) -> Result<Option<(MemberRecord, usize)>, ApiError> {
    let store = members(state)?;
    let Some(m) = store.get_member(ws, id).await? else {
        return Ok(None);
    };
    let mut revoked = revoke_member_tokens(state, &m).await?;
    revoke_member_grants(state, &m).await?;
    if store.delete_member(ws, id).await?.is_none() {
        return Ok(None);
    }
    revoked += revoke_member_tokens(state, &m).await?;
    Ok(Some((m, revoked)))
}

/// Hook: revokes the OAuth grants (and their tokens) of a member being
/// removed. Nothing to do until the OAuth server lands: at merge it calls
/// `oauth::revoke_member_grants` here.
pub async fn revoke_member_grants(_state: &AppState, _m: &MemberRecord) -> Result<(), ApiError> {
    Ok(())
}

/// Revokes the active workspace tokens of `m`'s workspace that are the
/// member's (by `member_id`, or by `email`, case-insensitive). Returns how
/// many were newly revoked.
async fn revoke_member_tokens(state: &AppState, m: &MemberRecord) -> Result<usize, ApiError> {
    let now = now_unix();
    let mut cursor: Option<String> = None;
    let mut ids = Vec::new();
    loop {
        let filter = ListFilter {
            kind: TokenKind::Workspace,
            workspace: Some(&m.workspace),
        };
        let page = state.store.list(filter, 200, cursor.as_deref()).await?;
        ids.extend(
            page.tokens
                .into_iter()
                .filter(|t| t.revoked_at.is_none())
                .filter(|t| {
                    t.member_id.as_deref() == Some(m.id.as_str())
                        || t.email.as_deref().is_some_and(|e| e.trim().eq_ignore_ascii_case(&m.email))
                })
                .map(|t| t.id),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut n = 0;
    for id in ids {
        if lifecycle::revoke(Some(&state.verifier), &state.store, &id, now)
            .await?
            .is_some_and(|r| r.newly_revoked)
        {
            n += 1;
        }
    }
    Ok(n)
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/members/invite",
    tag = "members",
    summary = "Make a sign-in link",
    description = "Creates the member if absent (with `role`, default `member`), and answers a sign-in link on \
        the public URL: shown once (only its SHA-256 is kept), valid 24 hours, single use.",
    params(("ws" = String, Path, description = "Workspace slug")),
    request_body = NewMember,
    responses(
        (status = 201, description = "The link", body = Invitation),
        (status = 400, description = "Bad JSON, email (`invalid_email`) or role (`invalid_role`)", body = ApiErrorBody),
        (status = 401, description = "No valid admin token", body = ApiErrorBody),
        (status = 403, description = "The admin token is scoped to another workspace", body = ApiErrorBody),
        (status = 404, description = "No such workspace", body = ApiErrorBody),
        (status = 409, description = "The workspace is full", body = ApiErrorBody),
        (status = 503, description = "The store is unreachable", body = ApiErrorBody),
    )
)]
pub(super) async fn invite(
    State(state): State<SharedState>,
    admin: Admin,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    workspace(&state, &admin, &ws)?;
    let req = parse_body(&body)?;
    let email = normalize_email(&req.email)?;
    let role = parse_role(req.role.as_deref(), Some(Role::Member))?;
    let name = check_name(req.name.as_deref())?;
    let store = members(&state)?;
    let now = now_unix();
    let (m, created) = match store.member_by_email(&ws, &email).await? {
        Some(m) => (m, false),
        None => {
            let m = MemberRecord {
                id: new_member_id(),
                workspace: ws.clone(),
                email,
                name,
                role,
                created_at: now,
            };
            match store.insert_member(&m).await {
                Ok(()) => {
                    audit_member_added(&state, &admin, &m).await;
                    (m, true)
                }
                // Added concurrently: invite that one.
                Err(StoreError::Conflict(_)) => match store.member_by_email(&ws, &m.email).await? {
                    Some(existing) => (existing, false),
                    None => return Err(conflict(StoreError::Conflict("members".into()), &m.email)),
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    let code = random_id()?;
    let link = LinkRecord {
        workspace: ws,
        member_id: m.id.clone(),
        created_at: now,
        expires_at: now + SIGNIN_LINK_TTL_SECS,
    };
    store.create_link(&sha256(&code), &link).await?;
    audit_invite_created(&state, &admin, &m).await;
    Ok((
        StatusCode::CREATED,
        Json(Invitation {
            url: format!("{}/signin/link/{}", state.config.server.public_url, hex(&code)),
            expires_at: format_rfc3339(link.expires_at),
            member: MemberView::from(&m),
            created,
        }),
    )
        .into_response())
}

// Audit hooks: `crate::audit` was not on main when this branch started; at
// merge, each records its event (`member_added`, `member_removed`,
// `invite_created`; actor: the admin token id) with `state.audit.record`.

async fn audit_member_added(state: &AppState, admin: &Admin, m: &MemberRecord) {
    let event = AuditEvent {
        actor: Some(admin.id.to_string()),
        workspace: Some(m.workspace.clone()),
        member_id: Some(m.id.clone()),
        ..AuditEvent::new(EventType::MemberAdded, 0)
    };
    state.audit.record(event).await;
}

async fn audit_member_removed(state: &AppState, admin: &Admin, m: &MemberRecord, revoked_tokens: usize) {
    tracing::info!(workspace = %m.workspace, member_id = %m.id, revoked_tokens, by = %admin.id, "member removed");
    let event = AuditEvent {
        actor: Some(admin.id.to_string()),
        workspace: Some(m.workspace.clone()),
        member_id: Some(m.id.clone()),
        ..AuditEvent::new(EventType::MemberRemoved, 0)
    };
    state.audit.record(event).await;
}

async fn audit_invite_created(state: &AppState, admin: &Admin, m: &MemberRecord) {
    let event = AuditEvent {
        actor: Some(admin.id.to_string()),
        workspace: Some(m.workspace.clone()),
        member_id: Some(m.id.clone()),
        ..AuditEvent::new(EventType::InviteCreated, 0)
    };
    state.audit.record(event).await;
}
