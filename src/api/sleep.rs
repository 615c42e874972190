//! `/api/v1/host/sleep`: whether the caller's VM sleeps (is paused) while nobody visits its
//! site or holds an SSH session, and wakes on the next visit.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::hostings::my_hosting;
use super::AppState;
use crate::auth::AuthUser;
use crate::store::Hosting;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepRequest {
    /// `true`: the VM may sleep while idle; `false`: it stays awake (a sleeping one wakes).
    pub enabled: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SleepView {
    pub enabled: bool,
    /// The VM sleeps now (state `paused`); the next request or SSH connection wakes it.
    pub asleep: bool,
    /// How long nobody must visit before it sleeps, in seconds; `null` when this host
    /// lets no VM sleep.
    pub after_secs: Option<u64>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_sleep, set_sleep))
}

fn view(st: &AppState, h: &Hosting) -> SleepView {
    SleepView {
        enabled: h.sleep_when_idle,
        asleep: h.asleep,
        after_secs: st.hostings.sleep_after().map(|d| d.as_secs()),
    }
}

/// Whether the caller's VM sleeps while idle, and whether it sleeps now.
#[utoipa::path(get, path = "/api/v1/host/sleep", tag = "hosting", security(("bearer" = [])),
    responses(
        (status = 200, body = SleepView),
        (status = 404, description = "the caller has no hosting", body = ErrorBody),
    ))]
async fn get_sleep(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Json<SleepView>, ApiError> {
    let h = my_hosting(&st, &user)?;
    Ok(Json(view(&st, &h)))
}

/// Lets the caller's VM sleep (be paused, using no CPU) once nobody has visited its site
/// or held an SSH session through roost for `after_secs`; the next request or SSH
/// connection wakes it within seconds, with its clock set again. A sleeping VM runs
/// nothing: no cron jobs, no outgoing connections. `false` keeps it awake and wakes it.
#[utoipa::path(put, path = "/api/v1/host/sleep", tag = "hosting", security(("bearer" = [])),
    request_body = SleepRequest,
    responses(
        (status = 200, body = SleepView),
        (status = 404, description = "the caller has no hosting", body = ErrorBody),
        (status = 409, description = "the hosting is being deleted", body = ErrorBody),
        (status = 422, description = "not a boolean `enabled`", body = ErrorBody),
    ))]
async fn set_sleep(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<SleepRequest>,
) -> Result<Json<SleepView>, ApiError> {
    let h = my_hosting(&st, &user)?;
    let h = st.hostings.set_sleep(h.id, req.enabled).await?;
    Ok(Json(view(&st, &h)))
}
