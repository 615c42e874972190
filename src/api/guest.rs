//! `/api/v1/host/console-password`: a new serial-console password for the caller's
//! running VM, set inside it by its guest agent (the way back in when SSH is broken).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::hostings::{my_hosting, spend};
use super::AppState;
use crate::auth::AuthUser;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsolePasswordRequest {
    /// The password for logging in as the caller on the VM's serial console (the same
    /// rules as an account password). Only its SHA-512 crypt hash leaves roost.
    pub password: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_console_password))
}

/// Sets the password the caller logs in with on their VM's serial console (the dashboard's
/// console, or `roost`'s admin console), inside the running VM through its guest agent. A
/// sleeping VM is woken first. The hash is also kept for the VM's later seeds.
#[utoipa::path(put, path = "/api/v1/host/console-password", tag = "hosting", security(("bearer" = [])),
    request_body = ConsolePasswordRequest,
    responses(
        (status = 204, description = "the VM took the new password"),
        (status = 404, description = "the caller has no hosting", body = ErrorBody),
        (status = 409, description = "the VM is not running", body = ErrorBody),
        (status = 422, description = "not an acceptable password", body = ErrorBody),
        (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody),
        (status = 502, description = "the VM's guest agent did not answer or refused", body = ErrorBody),
    ))]
async fn set_console_password(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<ConsolePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    crate::auth::validate_password(&req.password)
        .map_err(|e| ApiError::field("password", format!("password {e}")))?;
    spend(&st, &user)?;
    let h = my_hosting(&st, &user)?;
    st.hostings
        .set_console_password(h.id, &req.password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
