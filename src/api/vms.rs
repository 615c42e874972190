//! `/api/v1/admin/vms*` (administrator token): every VM live from QMP and /proc, and the
//! power actions. Every action is written to the audit log by `hosting`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::hostings::{view, HostingView};
use super::{rfc3339, AppState};
use crate::auth::AdminUser;
use crate::hosting::{lifecycle::Action, VmStatus};
use crate::store::HostingId;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct VmView {
    pub id: String,
    pub owner: String,
    pub slug: String,
    pub state: String,
    pub reason: Option<String>,
    pub desired_running: bool,
    pub ip: String,
    pub ssh_port: u16,
    pub tap: String,
    pub mac: String,
    pub pid: Option<i32>,
    pub uptime_secs: Option<u64>,
    /// QMP `query-status` right now (`running`, `paused`, ...), or why it could not be asked.
    pub qmp_status: Option<String>,
    /// CPU time in seconds: the VM's cgroup's (every QEMU thread and child), else the QEMU
    /// process's; the same figure as `roost_vm_cpu_seconds_total`.
    pub cpu_time_secs: Option<f64>,
    /// Memory in bytes: the VM's cgroup's (page cache included: what its limit counts),
    /// else the QEMU process's resident set; the same figure as `roost_vm_memory_bytes`.
    pub memory_bytes: Option<u64>,
    /// Resident memory of the QEMU process.
    pub rss_bytes: Option<u64>,
    /// The names of the disk's snapshots, oldest first (each charged a disk).
    pub snapshots: Vec<String>,
    pub created_at: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct VmDetailView {
    #[serde(flatten)]
    pub vm: VmView,
    /// QMP `query-blockstats`, as QEMU returns it.
    #[schema(value_type = Object)]
    pub block_stats: Option<serde_json::Value>,
    pub tap_rx_bytes: Option<u64>,
    pub tap_tx_bytes: Option<u64>,
    /// The last lines of the serial console.
    pub serial_tail: Vec<String>,
}

/// The host's VM budgets and what the hostings hold of them. Every hosting, stopped or
/// not, holds its reservation; a creation that would go past a budget is refused (503 for
/// the VM count and memory, 507 for disk).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CapacityView {
    pub vms: u32,
    /// `null`: no count limit besides memory and disk.
    pub max_vms: Option<u32>,
    /// Disk snapshots over all hostings; each is charged `vm_disk_gib` of disk.
    pub snapshots: u32,
    pub memory_mib_used: u64,
    pub memory_mib_budget: u64,
    pub disk_gib_used: u64,
    pub disk_gib_budget: u64,
    /// The host's RAM and the state directory's file system, as measured now.
    pub host_memory_mib: u64,
    pub host_disk_gib: u64,
    /// What one more VM is charged: its memory limit (guest memory, QEMU's overhead and,
    /// under TCG, the translation cache) and its virtual disk size.
    pub vm_memory_mib: u64,
    pub vm_disk_gib: u64,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(capacity))
        .routes(routes!(list))
        .routes(routes!(detail))
        .routes(routes!(act))
}

fn vm_view(s: VmStatus) -> VmView {
    VmView {
        id: s.hosting.id.to_string(),
        owner: s.owner,
        slug: s.hosting.slug.clone(),
        state: s.hosting.state.as_str().into(),
        reason: s.hosting.reason.clone(),
        desired_running: s.hosting.desired_running,
        ip: s.hosting.ip.to_string(),
        ssh_port: s.hosting.ssh_port,
        tap: s.hosting.tap.clone(),
        mac: s.hosting.mac.clone(),
        pid: s.pid,
        uptime_secs: s.uptime_secs,
        qmp_status: s.qmp_status,
        cpu_time_secs: s.cpu_time_secs,
        memory_bytes: s.memory_bytes,
        rss_bytes: s.rss_bytes,
        snapshots: s.hosting.snapshots.iter().map(|x| x.name.clone()).collect(),
        created_at: rfc3339(s.hosting.created_at),
    }
}

pub(super) fn parse_id(id: &str) -> Result<HostingId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("vm"))
}

/// The host's capacity against its limits.
#[utoipa::path(get, path = "/api/v1/admin/capacity", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = CapacityView), (status = 403, body = ErrorBody)))]
async fn capacity(
    State(st): State<AppState>,
    _a: AdminUser,
) -> Result<Json<CapacityView>, ApiError> {
    let c = st.hostings.capacity()?;
    Ok(Json(CapacityView {
        vms: c.usage.vms,
        max_vms: c.budget.max_vms,
        snapshots: c.usage.snapshots,
        memory_mib_used: c.usage.memory_mib,
        memory_mib_budget: c.budget.memory_mib,
        disk_gib_used: c.usage.disk_gib,
        disk_gib_budget: c.budget.disk_gib,
        host_memory_mib: c.host.memory_mib,
        host_disk_gib: c.host.disk_gib,
        vm_memory_mib: c.vm.memory_mib,
        vm_disk_gib: c.vm.disk_gib,
    }))
}

/// Every VM with owner, state, address, SSH port, PID, uptime and live QMP status.
#[utoipa::path(get, path = "/api/v1/admin/vms", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [VmView]), (status = 403, body = ErrorBody)))]
async fn list(State(st): State<AppState>, _a: AdminUser) -> Result<Json<Vec<VmView>>, ApiError> {
    Ok(Json(
        st.hostings
            .vm_list()
            .await?
            .into_iter()
            .map(vm_view)
            .collect(),
    ))
}

/// One VM with resource figures and the tail of its serial log.
#[utoipa::path(get, path = "/api/v1/admin/vms/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "hosting id")),
    responses((status = 200, body = VmDetailView), (status = 404, body = ErrorBody)))]
async fn detail(
    State(st): State<AppState>,
    _a: AdminUser,
    Path(id): Path<String>,
) -> Result<Json<VmDetailView>, ApiError> {
    let d = st.hostings.vm_detail(parse_id(&id)?).await?;
    Ok(Json(VmDetailView {
        block_stats: d.block_stats,
        tap_rx_bytes: d.tap_rx_bytes,
        tap_tx_bytes: d.tap_tx_bytes,
        serial_tail: d.serial_tail,
        vm: vm_view(d.status),
    }))
}

/// start, stop, reboot, pause, resume or kill a VM; carried out in the background.
#[utoipa::path(post, path = "/api/v1/admin/vms/{id}/{action}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "hosting id"),
           ("action" = String, Path, description = "start | stop | reboot | pause | resume | kill")),
    responses((status = 202, body = HostingView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn act(
    State(st): State<AppState>,
    admin: AdminUser,
    Path((id, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<HostingView>), ApiError> {
    let action = Action::parse(&action).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such action; use start, stop, reboot, pause, resume or kill",
        )
    })?;
    let h = st
        .hostings
        .act(parse_id(&id)?, action, &admin.0.username)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view(&h, None))))
}
