//! `/api/v1/admin/*` (administrator token): accounts (and disabling them) and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
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
        .routes(routes!(user_action))
        .routes(routes!(audit))
        .routes(routes!(tls_status))
        .routes(routes!(tls_renew))
}

fn user_view(u: crate::store::User) -> AdminUserView {
    AdminUserView {
        id: u.id.to_string(),
        username: u.username,
        email: u.email,
        role: u.role.as_str().into(),
        created_at: rfc3339(u.created_at),
        disabled_at: u.disabled_at.map(rfc3339),
    }
}

/// Disables an account (it cannot log in, and every token and browser session it holds
/// ends at once; its hosting keeps running) or enables it again (its old tokens stay
/// revoked). Audited with the administrator as actor. An administrator cannot disable
/// their own account.
#[utoipa::path(post, path = "/api/v1/admin/users/{username}/{action}", tag = "admin", security(("bearer" = [])),
    params(("username" = String, Path, description = "the account"),
           ("action" = String, Path, description = "disable | enable")),
    responses((status = 200, body = AdminUserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, description = "no such account or action", body = ErrorBody),
              (status = 409, description = "an administrator disabling themselves (`own_account`)", body = ErrorBody)))]
async fn user_action(
    State(st): State<AppState>,
    admin: AdminUser,
    Path((username, action)): Path<(String, String)>,
) -> Result<Json<AdminUserView>, ApiError> {
    let actor = &admin.0.username;
    let u = match action.as_str() {
        "disable" if username == *actor => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "own_account",
                "you cannot disable your own account",
            ))
        }
        "disable" => st.auth.disable(&username, actor)?,
        "enable" => st.auth.enable(&username, actor)?,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such action; use disable or enable",
            ))
        }
    };
    Ok(Json(user_view(u)))
}

/// Every account.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [AdminUserView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn users(
    State(st): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Vec<AdminUserView>>, ApiError> {
    let users = st.store.users()?;
    Ok(Json(users.into_iter().map(user_view).collect()))
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

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CertView {
    /// `domain` (DOMAIN and `*.DOMAIN`), `file` (the operator's files) or a custom domain.
    pub slot: String,
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub expired: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TlsView {
    /// HTTPS is served.
    pub enabled: bool,
    /// Certificates come from ACME (else from the operator's files).
    pub acme: bool,
    pub certificates: Vec<CertView>,
}

fn unix(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(rfc3339)
        .unwrap_or_default()
}

/// The certificates being served.
#[utoipa::path(get, path = "/api/v1/admin/tls", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = TlsView), (status = 403, body = ErrorBody)))]
async fn tls_status(State(st): State<AppState>, _a: AdminUser) -> Json<TlsView> {
    let now = crate::tls::manager::now();
    Json(match &st.https {
        None => TlsView {
            enabled: false,
            acme: false,
            certificates: vec![],
        },
        Some(h) => TlsView {
            enabled: true,
            acme: h.acme,
            certificates: h
                .store
                .infos()
                .into_iter()
                .map(|i| CertView {
                    expired: i.expired(now),
                    not_before: unix(i.not_before),
                    not_after: unix(i.not_after),
                    slot: i.slot,
                    names: i.names,
                    issuer: i.issuer,
                })
                .collect(),
        },
    })
}

/// Orders every ACME certificate again now, due or not; the new ones replace the old
/// without dropping connections.
#[utoipa::path(post, path = "/api/v1/admin/tls/renew", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 202, description = "renewal started"),
        (status = 403, body = ErrorBody),
        (status = 409, description = "HTTPS is off, or its certificates are the operator's files", body = ErrorBody),
    ))]
async fn tls_renew(
    State(st): State<AppState>,
    _a: AdminUser,
) -> Result<axum::http::StatusCode, ApiError> {
    match &st.https {
        Some(h) if h.acme => {
            h.renew.request();
            Ok(axum::http::StatusCode::ACCEPTED)
        }
        _ => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "invalid_state",
            "certificates are not from ACME here (HTTPS is off, or https.cert_file is set)",
        )),
    }
}
