//! `/api/v1/admin/*` (administrator token): accounts and the audit log.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use super::{rfc3339, AppState};
use crate::auth::AdminUser;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AdminUserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub created_at: String,
    /// When the account was disabled, if it is.
    pub disabled_at: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// How many of the newest entries (default 100, at most 1000).
    pub limit: Option<usize>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users))
        .routes(routes!(audit))
}

/// Every account.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [AdminUserView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn users(
    State(st): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Vec<AdminUserView>>, ApiError> {
    let users = st.store.users()?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| AdminUserView {
                id: u.id.to_string(),
                username: u.username,
                email: u.email,
                role: u.role.as_str().into(),
                created_at: rfc3339(u.created_at),
                disabled_at: u.disabled_at.map(rfc3339),
            })
            .collect(),
    ))
}

/// The newest audit log entries, newest first.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = [AuditView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn audit(
    State(st): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(Json(
        st.store
            .audit_log(limit)?
            .into_iter()
            .map(|e| AuditView {
                seq: e.seq,
                at: rfc3339(e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
    ))
}
