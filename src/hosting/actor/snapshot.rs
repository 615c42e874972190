//! Snapshots of the hosting's disk, carried out by its actor, so they never race a start,
//! a stop or a delete: taken and deleted over QMP while a QEMU runs, with `qemu-img` while
//! none does, and restored only while none does. The row's snapshot records and the disk
//! are reconciled after a daemon restart (a snapshot taken or deleted just before a crash).

use std::sync::Arc;

use tracing::{info, warn};

use super::Actor;
use crate::hosting::effects::{Effects, StepError, Vm};
use crate::hosting::snapshots::SnapshotOp;
use crate::hosting::HostingError;
use crate::store::{Hosting, HostingState};
use crate::vm::snapshot::OfflineOp;

/// Where the disk can be reached.
enum Access<V> {
    /// Through the running QEMU.
    Live(Arc<V>),
    /// Directly: no QEMU holds it.
    Offline,
}

impl<E: Effects> Actor<E> {
    pub(super) async fn snapshot(
        &mut self,
        op: SnapshotOp,
        name: &str,
        actor: &str,
    ) -> Result<Hosting, HostingError> {
        let r = self.snapshot_inner(op, name).await;
        match &r {
            Ok(()) => {
                info!(snapshot = name, op = op.as_str(), %actor, "snapshot");
                let what = format!("snapshot.{}", op.as_str());
                let target = self.row.id.to_string();
                if let Err(e) = self.ctx.store.audit(actor, &what, &target, name) {
                    warn!(error = %e, "cannot write the audit log");
                }
            }
            Err(e) => {
                warn!(snapshot = name, op = op.as_str(), error = %e, "snapshot refused or failed");
                if op == SnapshotOp::Take {
                    // The record was written for this snapshot: it goes, and so does
                    // whatever a failed (say, timed-out) QMP command left on the disk.
                    self.forget(name);
                    self.reconcile_snapshots().await;
                }
            }
        }
        self.refresh()?;
        r.map(|()| self.row.clone())
    }

    async fn snapshot_inner(&mut self, op: SnapshotOp, name: &str) -> Result<(), HostingError> {
        self.refresh()?;
        if !self.row.snapshots.iter().any(|s| s.name == name) {
            return Err(HostingError::NoSuchSnapshot);
        }
        let access = self.access(op)?;
        let h = self.row.clone();
        let fx = self.ctx.fx.clone();
        match (op, access) {
            (SnapshotOp::Take, Access::Live(vm)) => vm.snapshot(true, name).await.map_err(live),
            (SnapshotOp::Take, Access::Offline) => fx
                .disk_snapshot(&h, OfflineOp::Create, name)
                .await
                .map_err(step),
            (SnapshotOp::Restore, Access::Offline) => fx
                .disk_snapshot(&h, OfflineOp::Revert, name)
                .await
                .map_err(step),
            (SnapshotOp::Restore, Access::Live(_)) => Err(self.invalid(op)),
            (SnapshotOp::Delete, access) => {
                let r = match access {
                    Access::Live(vm) => vm.snapshot(false, name).await.map_err(live),
                    Access::Offline => fx
                        .disk_snapshot(&h, OfflineOp::Delete, name)
                        .await
                        .map_err(step),
                };
                // A record whose snapshot is not on the disk (any more) goes all the same.
                let gone = || async {
                    fx.disk_snapshots(&h)
                        .await
                        .is_ok_and(|on_disk| !on_disk.iter().any(|s| s == name))
                };
                if r.is_ok() || gone().await {
                    self.forget(name);
                    Ok(())
                } else {
                    r
                }
            }
        }
    }

    /// How `op` can reach the disk now, or why it cannot.
    fn access(&self, op: SnapshotOp) -> Result<Access<E::Vm>, HostingError> {
        if let Some(vm) = &self.vm {
            return match op {
                SnapshotOp::Restore => Err(self.invalid(op)),
                _ => Ok(Access::Live(vm.clone())),
            };
        }
        let at_rest = matches!(self.m.state, HostingState::Stopped | HostingState::Failed);
        if at_rest && self.m.restart_at.is_none() && self.ctx.fx.files_exist(self.row.id) {
            Ok(Access::Offline)
        } else {
            Err(self.invalid(op))
        }
    }

    fn invalid(&self, op: SnapshotOp) -> HostingError {
        HostingError::InvalidState {
            state: self.m.state.as_str(),
            action: match op {
                SnapshotOp::Take => "snapshot",
                SnapshotOp::Delete => "delete a snapshot of",
                SnapshotOp::Restore => "restore a snapshot of",
            },
        }
    }

    /// Reads the row again (the manager writes a snapshot's record before asking).
    fn refresh(&mut self) -> Result<(), HostingError> {
        match self.ctx.store.hosting(self.row.id)? {
            Some(h) => {
                self.row = h;
                Ok(())
            }
            None => Err(HostingError::NotFound),
        }
    }

    /// Removes the record of snapshot `name`.
    fn forget(&mut self, name: &str) {
        match self
            .ctx
            .store
            .modify_hosting(self.row.id, |h| h.snapshots.retain(|s| s.name != name))
        {
            Ok(h) => self.row = h,
            Err(e) => warn!(snapshot = name, error = %e, "cannot remove the snapshot's record"),
        }
    }

    /// Makes the records and the disk agree: a record without a snapshot on the disk goes
    /// (its taking failed, or its deletion finished, just before a crash), and so does a
    /// snapshot on the disk without a record (taken just before a crash, or left by a
    /// failed command). Logged, never fatal.
    pub(super) async fn reconcile_snapshots(&mut self) {
        let h = self.row.clone();
        if !self.ctx.fx.files_exist(h.id) || self.m.state == HostingState::Deleting {
            return;
        }
        let on_disk = match self.ctx.fx.disk_snapshots(&h).await {
            Ok(names) => names,
            Err(e) => {
                warn!(error = %e, "cannot list the disk's snapshots");
                return;
            }
        };
        if self.refresh().is_err() {
            return;
        }
        let records: Vec<String> = self.row.snapshots.iter().map(|s| s.name.clone()).collect();
        for name in records.iter().filter(|r| !on_disk.contains(r)) {
            warn!(
                snapshot = name,
                "snapshot record without a snapshot on the disk; removed"
            );
            self.forget(name);
        }
        for name in on_disk.iter().filter(|d| !records.contains(d)) {
            warn!(
                snapshot = name,
                "snapshot on the disk without a record; deleted"
            );
            let r = match self.access(SnapshotOp::Delete) {
                Ok(Access::Live(vm)) => vm.snapshot(false, name).await.map_err(live),
                Ok(Access::Offline) => self
                    .ctx
                    .fx
                    .disk_snapshot(&h, OfflineOp::Delete, name)
                    .await
                    .map_err(step),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                warn!(snapshot = name, error = %e, "cannot delete the snapshot");
            }
        }
    }
}

fn step(e: StepError) -> HostingError {
    HostingError::Step {
        step: e.step.into(),
        message: e.message,
    }
}

fn live(e: crate::hosting::effects::VmOpError) -> HostingError {
    HostingError::Step {
        step: "snapshot".into(),
        message: crate::error_chain(&e),
    }
}
