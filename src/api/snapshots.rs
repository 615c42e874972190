//! `/api/v1/host/snapshots*`: snapshots of the caller's disk: list, take (while the VM
//! runs or not), restore (while it is stopped), delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::hostings::{my_hosting, spend};
use super::{rfc3339, AppState};
use crate::auth::AuthUser;
use crate::hosting::snapshots::SnapshotOp;
use crate::store::{Hosting, Snapshot};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// 1 to 40 of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter; unique per hosting.
    pub name: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SnapshotView {
    pub name: String,
    pub created_at: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Oldest first.
    pub snapshots: Vec<SnapshotView>,
    /// How many a hosting may keep on this host (0: snapshots are off).
    pub limit: usize,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(take, list))
        .routes(routes!(restore))
        .routes(routes!(remove))
}

fn view(s: &Snapshot) -> SnapshotView {
    SnapshotView {
        name: s.name.clone(),
        created_at: rfc3339(s.created_at),
    }
}

fn found(h: &Hosting, name: &str) -> Result<SnapshotView, ApiError> {
    h.snapshots
        .iter()
        .find(|s| s.name == name)
        .map(view)
        .ok_or_else(|| ApiError::not_found("snapshot"))
}

/// Takes a snapshot of the caller's disk, while the VM runs or not. A snapshot taken while
/// it runs is what the disk holds at that instant, as after a power cut: run `sync` in the
/// VM first.
#[utoipa::path(post, path = "/api/v1/host/snapshots", tag = "snapshots", security(("bearer" = [])),
    request_body = SnapshotRequest,
    responses(
        (status = 201, body = SnapshotView),
        (status = 404, description = "the caller has no hosting", body = ErrorBody),
        (status = 409, description = "the name is taken, the hosting keeps its limit of snapshots already, or its state does not allow one (it is being created or deleted)", body = ErrorBody),
        (status = 422, description = "not a snapshot name", body = ErrorBody),
        (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody),
        (status = 507, description = "the host's disk budget has no room for one more", body = ErrorBody),
    ))]
async fn take(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<SnapshotRequest>,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    spend(&st, &user)?;
    let h = my_hosting(&st, &user)?;
    let h = st
        .hostings
        .take_snapshot(h.id, &req.name, &user.username)
        .await?;
    Ok((StatusCode::CREATED, Json(found(&h, &req.name)?)))
}

/// The caller's snapshots.
#[utoipa::path(get, path = "/api/v1/host/snapshots", tag = "snapshots", security(("bearer" = [])),
    responses((status = 200, body = SnapshotList), (status = 404, body = ErrorBody)))]
async fn list(State(st): State<AppState>, user: AuthUser) -> Result<Json<SnapshotList>, ApiError> {
    let h = my_hosting(&st, &user)?;
    Ok(Json(SnapshotList {
        snapshots: h.snapshots.iter().map(view).collect(),
        limit: st.cfg.limits.snapshots_per_hosting,
    }))
}

/// Puts the caller's disk back as it was when the snapshot was taken; the snapshot stays.
/// The VM must be stopped (or failed); start it afterwards.
#[utoipa::path(post, path = "/api/v1/host/snapshots/{name}/restore", tag = "snapshots", security(("bearer" = [])),
    params(("name" = String, Path, description = "the snapshot")),
    responses(
        (status = 200, body = SnapshotView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the VM is not stopped", body = ErrorBody),
        (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody),
    ))]
async fn restore(
    State(st): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<SnapshotView>, ApiError> {
    spend(&st, &user)?;
    let h = my_hosting(&st, &user)?;
    let h = st
        .hostings
        .snapshot_op(h.id, SnapshotOp::Restore, &name, &user.username)
        .await?;
    Ok(Json(found(&h, &name)?))
}

/// Deletes a snapshot (the disk as it is now stays), while the VM runs or not.
#[utoipa::path(delete, path = "/api/v1/host/snapshots/{name}", tag = "snapshots", security(("bearer" = [])),
    params(("name" = String, Path, description = "the snapshot")),
    responses(
        (status = 204),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the hosting's state does not allow it (it is being created or deleted)", body = ErrorBody),
        (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody),
    ))]
async fn remove(
    State(st): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    spend(&st, &user)?;
    let h = my_hosting(&st, &user)?;
    st.hostings
        .snapshot_op(h.id, SnapshotOp::Delete, &name, &user.username)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
