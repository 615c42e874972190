//! The one boundary between a hosting's actor and the world: every side effect the actor
//! causes goes through [`Effects`] (and the VM handle it returns, [`Vm`]). The real
//! implementation (`real`) works over `vm`, `net`, `cloudinit`, `proxy` and `forward`; tests
//! use a fake that records calls and fails on request.
//!
//! Each method is one step that either happens or does not: a failing step undoes its own
//! partial work, and the actor's saga undoes earlier steps (see `actor::start_vm`).

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::core::RunState;
use crate::presence::Presence;
use crate::store::{Hosting, HostingId};
use crate::vm::snapshot::OfflineOp;
use crate::vm::VmEvent;

/// A step that failed: its name (shown to the owner, matched by `ROOST_FAULTS`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct StepError {
    pub step: &'static str,
    pub message: String,
}

impl StepError {
    pub fn new(step: &'static str, message: impl Into<String>) -> StepError {
        StepError {
            step,
            message: message.into(),
        }
    }
}

/// Why a command to a running VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    #[error("QMP is not connected")]
    NoQmp,
    #[error("{0} is not a QMP action")]
    NotQmp(&'static str),
    #[error("QMP")]
    Qmp(#[source] crate::vm::VmError),
}

/// What a hosting's actor does to the world.
pub trait Effects: Send + Sync + 'static {
    type Vm: Vm;
    /// An open tap device, handed to the VM's process.
    type Tap: Send;

    /// Whether the VM's disk overlay and seed exist (a start can reuse them).
    fn files_exist(&self, id: HostingId) -> bool;
    /// Creates the VM's directory; true when it did not exist before.
    fn make_dir(&self, h: &Hosting) -> Result<bool, StepError>;
    /// The copy-on-write disk over the image (step `overlay`).
    fn overlay(&self, h: &Hosting) -> impl Future<Output = Result<(), StepError>> + Send;
    /// The cloud-init seed (step `seed`).
    fn seed(&self, h: &Hosting) -> Result<(), StepError>;
    /// Removes the VM's directory.
    fn remove_files(&self, id: HostingId);
    /// Creates the tap on the bridge (step `tap`).
    fn tap(&self, h: &Hosting) -> impl Future<Output = Result<Self::Tap, StepError>> + Send;
    /// Deletes the tap (absent is fine).
    fn delete_tap(&self, h: &Hosting) -> impl Future<Output = ()> + Send;
    /// Applies the firewall for every hosting plus `h` (step `firewall`).
    fn firewall(&self, h: Option<&Hosting>) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Runs the VM's QEMU, confined, in its cgroup (steps `user`, `cgroup`, `qemu`); undoes
    /// its own cgroup when it fails.
    fn spawn(
        &self,
        h: &Hosting,
        tap: Self::Tap,
    ) -> impl Future<Output = Result<Self::Vm, StepError>> + Send;
    /// Removes the VM's cgroup once its QEMU is gone.
    fn remove_cgroup(&self, id: HostingId) -> impl Future<Output = ()> + Send;
    /// Kills a QEMU of this hosting that no actor watches (found by its pidfile).
    fn kill_unwatched(&self, id: HostingId) -> impl Future<Output = ()> + Send;
    /// Serves the hosting's SSH port (step `routes`).
    fn open_ssh(&self, h: &Hosting) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Stops serving the hosting's SSH port.
    fn close_ssh(&self, h: &Hosting) -> impl Future<Output = ()> + Send;
    /// Publishes the hosting's route (or removes it, for a deleting hosting).
    fn publish(&self, h: &Hosting, generation: u64);
    /// The hosting's presence, shared with its route and SSH forward: one per hosting for
    /// the life of the daemon (forgotten once the hosting is deleted).
    fn presence(&self, id: HostingId) -> Arc<Presence>;
    /// Sets the guest's clock to the host's, through its guest agent.
    fn sync_clock(&self, h: &Hosting) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Sets the owner's password in the guest to the crypt(3) hash `crypted`, through its
    /// guest agent (step `agent`).
    fn set_password(
        &self,
        h: &Hosting,
        crypted: &str,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// A guest became ready `boot` after its QEMU started; `creation`: the time since a
    /// new hosting was requested, on its first boot. For the metrics only.
    fn booted(&self, _boot: Duration, _creation: Option<Duration>) {}
    /// The watched QEMU exited without roost asking and without the guest powering off.
    /// For the metrics only.
    fn crashed(&self) {}
    /// Finds a running QEMU of this hosting (daemon restart) and takes it over, with its run
    /// state (`None` when QMP does not answer).
    fn adopt(
        &self,
        h: &Hosting,
    ) -> impl Future<Output = Option<(Self::Vm, Option<RunState>)>> + Send;
    /// Takes, deletes or reverts to snapshot `name` of the VM's disk while no QEMU holds it
    /// (step `snapshot`), with the VM's own identity (its QEMU writes that file).
    fn disk_snapshot(
        &self,
        h: &Hosting,
        op: OfflineOp,
        name: &str,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// The names of the snapshots on the VM's disk (in any state), read likewise.
    fn disk_snapshots(
        &self,
        h: &Hosting,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send;
    /// One readiness round: whether the guest answers HTTP on :80 and SSH on :22 (each
    /// probed only while not yet known).
    fn probe(
        &self,
        ip: Ipv4Addr,
        known: (bool, bool),
    ) -> impl Future<Output = (bool, bool)> + Send + 'static;
}

/// A QEMU the actor watches.
pub trait Vm: Send + Sync + 'static {
    fn pid(&self) -> i32;
    fn started(&self) -> SystemTime;
    /// Resolves when the process has exited. Cancel-safe.
    fn exited(&self) -> impl Future<Output = ()> + Send;
    /// A receiver of QMP events from now on (`None` without a QMP connection).
    fn events(&self) -> impl Future<Output = Option<broadcast::Receiver<VmEvent>>> + Send;
    /// `system_reset`, `stop` or `cont` for reboot, pause and resume.
    fn qmp(
        &self,
        action: super::lifecycle::Action,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;
    /// Takes (`true`) or deletes snapshot `name` of the running VM's disk over QMP.
    fn snapshot(
        &self,
        take: bool,
        name: &str,
    ) -> impl Future<Output = Result<(), VmOpError>> + Send;
    /// QMP `query-status`, in QEMU's words.
    fn status(&self) -> impl Future<Output = Result<String, VmOpError>> + Send;
    /// QMP `query-blockstats` as JSON.
    fn block_stats(&self) -> impl Future<Output = Option<serde_json::Value>> + Send;
    /// Graceful stop with a deadline for the guest, then quit, SIGTERM, SIGKILL.
    fn stop(&self, deadline: Duration) -> impl Future<Output = ()> + Send;
    /// SIGKILL, and wait (bounded) for the exit.
    fn kill(&self) -> impl Future<Output = ()> + Send;
}
