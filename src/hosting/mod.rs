//! Hostings: one actor per hosting (`actor`) around a pure decision core (`core`), with
//! every side effect behind one boundary (`effects`, real one in `real`); admission and
//! commands (`manager`), reads (`queries`) and the reconciler that only observes
//! (`reconcile`). The only module that ties `vm`, `net`, `cloudinit` and `proxy` together.
//!
//! Knows a hosting's owner id and slug, but nothing of HTTP requests or tokens.

mod actor;
pub mod budget;
pub mod capacity;
mod console;
pub mod core;
mod effects;
mod guest;
pub mod lifecycle;
mod manager;
mod netrt;
pub mod offline;
pub mod paths;
mod probe;
mod queries;
mod real;
mod reconcile;
mod runtime;
mod sleep;
pub mod snapshots;
mod stats;
mod timing;
pub mod urls;

use std::sync::Arc;
use std::time::Duration;

pub use manager::Hostings;
pub use runtime::resolve_accel;

use crate::config::Config;
use crate::error_chain as chain;
use crate::store::{Hosting, Store, StoreError};

/// Everything that can refuse or break a hosting operation.
#[derive(Debug, thiserror::Error)]
pub enum HostingError {
    #[error("VM hosting is unavailable on this host: {0}")]
    Unavailable(String),
    #[error("the user already has a hosting")]
    Exists,
    #[error("no such hosting")]
    NotFound,
    #[error("{0}")]
    InvalidKey(String),
    /// The account's name cannot be a login name in the VM (an account from before the
    /// rule that forbids such names).
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    NoCapacity(String),
    #[error("cannot {action} a VM that is {state}")]
    InvalidState {
        state: &'static str,
        action: &'static str,
    },
    #[error("{step}: {message}")]
    Step { step: String, message: String },
    #[error("{0}")]
    ConsoleUnavailable(String),
    #[error("{0}")]
    InvalidSnapshotName(String),
    #[error("a snapshot named {0:?} exists already")]
    SnapshotExists(String),
    /// The per-hosting limit (0: snapshots are off on this host).
    #[error("{}", snapshot_limit(*.0))]
    TooManySnapshots(usize),
    #[error("no such snapshot")]
    NoSuchSnapshot,
    /// The guest agent in the VM did not do what was asked (not running, refused, silent).
    #[error("the VM's guest agent did not answer; is qemu-guest-agent running in the VM?")]
    GuestAgent,
    /// The account's operation budget is spent; the wait until the next one.
    #[error("too many operations on your hosting; try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("store")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

fn snapshot_limit(max: usize) -> String {
    match max {
        0 => "snapshots are turned off on this host".into(),
        n => format!("a hosting keeps at most {n} snapshots; delete one first"),
    }
}

/// The host's capacity as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct CapacityReport {
    pub host: capacity::HostSize,
    pub budget: capacity::Budget,
    pub usage: capacity::Usage,
    /// The size of one VM as configured now.
    pub vm: capacity::VmSize,
}

/// Why this host cannot run VMs (then hosting answers 503 and `roost status` says why).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("guest image")]
    Image(#[source] crate::vm::VmError),
    #[error("cloud-init templates")]
    Templates(#[source] crate::cloudinit::CloudInitError),
    #[error("network")]
    Network(#[source] crate::net::NetError),
    #[error("state dir")]
    StateDir(#[source] std::io::Error),
}

/// Why a VM's cloud-init seed could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("stored MAC address")]
    Mac(#[source] crate::net::InvalidMac),
    #[error("seed documents")]
    Documents(#[source] crate::cloudinit::CloudInitError),
    #[error("seed image")]
    Image(#[source] crate::cloudinit::CloudInitError),
}

/// Why the firewall could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum FirewallSyncError {
    #[error("no VM runtime")]
    NoRuntime,
    #[error("reading the hostings")]
    Store(#[source] StoreError),
    #[error("applying the ruleset")]
    Apply(#[source] crate::net::NetError),
}

/// The answer to a creation.
pub struct Created {
    pub hosting: Hosting,
    /// The private half of a generated key pair; given out once, never stored.
    pub private_key: Option<String>,
}

/// A route as the API reports it.
pub struct RouteInfo {
    pub slug: String,
    pub hosting_id: String,
    pub urls: urls::SiteUrls,
    pub upstream: Option<String>,
    pub ssh_port: Option<u16>,
    pub status: String,
    pub live: bool,
}

/// What changed in a route rebuild.
pub struct ReloadDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

/// A VM as an administrator sees it.
pub struct VmStatus {
    pub hosting: Hosting,
    pub owner: String,
    pub pid: Option<i32>,
    pub uptime_secs: Option<u64>,
    pub qmp_status: Option<String>,
    /// CPU time in seconds and memory in bytes, as the metrics read them: the VM's cgroup
    /// (every QEMU thread and child; memory with page cache, what its limit counts), else
    /// the QEMU process's; and the process's resident set. Cheap enough for every list.
    pub cpu_time_secs: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// A VM with its resource figures.
pub struct VmDetail {
    pub status: VmStatus,
    pub block_stats: Option<serde_json::Value>,
    pub tap_rx_bytes: Option<u64>,
    pub tap_tx_bytes: Option<u64>,
    pub serial_tail: Vec<String>,
}

/// Builds the manager: prepares the VM runtime when this host can run VMs (bridge,
/// firewall, image, accelerator, templates), rebuilds routes from the store, starts an
/// actor per hosting (which adopts or starts its VM), and keeps reconciling every few
/// seconds as the task `reconciler`. Boot and creation times go to `lifecycle`.
pub async fn start(
    cfg: Arc<Config>,
    store: Store,
    routes: crate::proxy::Routes,
    forwarders: crate::forward::Forwarders,
    lifecycle: crate::metrics::LifecycleMetrics,
    tasks: &crate::tasks::Tasks,
) -> Hostings {
    // Kept as the reason shown by `roost status` (and, sanitized, to owners).
    let runtime = runtime::setup(&cfg).await.map_err(|e| chain(&e));
    if let Err(reason) = &runtime {
        tracing::warn!(%reason, "VM hosting disabled");
    }
    let h = Hostings::new(cfg, store, routes, forwarders, lifecycle, runtime);
    if let Err(e) = h.rebuild_routes().await {
        tracing::warn!(error = %e, "cannot rebuild routes");
    }
    h.apply_firewall_at_start().await;
    h.reconcile().await;
    let bg = h.clone();
    tasks.every("reconciler", RECONCILE_EVERY, move || {
        let bg = bg.clone();
        async move { bg.reconcile().await }
    });
    h
}

/// How often the reconciler looks at the world.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
