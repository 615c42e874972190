//! The real [`Vm`]: a QEMU process roost watches, with its QMP client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tracing::{info, warn};

use super::KILL_WAIT;
use crate::hosting::chain;
use crate::hosting::effects::{Vm, VmOpError};
use crate::hosting::lifecycle::Action;
use crate::hosting::paths::VmPaths;
use crate::vm::{self, VmEvent};

/// A QEMU process roost watches.
pub(in crate::hosting) struct RealVm {
    proc: vm::VmProcess,
    /// QEMU serves one QMP client at a time: this is the one.
    qmp: Mutex<Option<Arc<vm::Qmp>>>,
    qmp_socket: std::path::PathBuf,
    started: SystemTime,
}

impl RealVm {
    pub(super) fn new(
        proc: vm::VmProcess,
        qmp: Option<vm::Qmp>,
        started: SystemTime,
        p: &VmPaths,
    ) -> Self {
        RealVm {
            proc,
            qmp: Mutex::new(qmp.map(Arc::new)),
            qmp_socket: p.qmp.clone(),
            started,
        }
    }

    /// The QMP client, reconnecting when the last one was lost or abandoned.
    async fn client(&self) -> Option<Arc<vm::Qmp>> {
        let cur = self.qmp.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(q) = cur.filter(|q| q.is_usable()) {
            return Some(q);
        }
        let q = Arc::new(vm::Qmp::connect(&self.qmp_socket).await.ok()?);
        *self.qmp.lock().unwrap_or_else(|p| p.into_inner()) = Some(q.clone());
        Some(q)
    }
}

impl Vm for RealVm {
    fn pid(&self) -> i32 {
        self.proc.pid()
    }

    fn started(&self) -> SystemTime {
        self.started
    }

    async fn exited(&self) {
        if self.proc.wait_exit().await.is_err() {
            // Cannot watch the pidfd: fall back to looking now and then.
            while self.proc.is_running() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn events(&self) -> Option<broadcast::Receiver<VmEvent>> {
        self.client().await.map(|q| q.events())
    }

    async fn qmp(&self, action: Action) -> Result<(), VmOpError> {
        let q = self.client().await.ok_or(VmOpError::NoQmp)?;
        let r = match action {
            Action::Reboot => q.system_reset().await,
            Action::Pause => q.stop().await,
            Action::Resume => q.cont().await,
            a => return Err(VmOpError::NotQmp(a.as_str())),
        };
        r.map_err(VmOpError::Qmp)
    }

    async fn status(&self) -> Result<String, VmOpError> {
        let q = self.client().await.ok_or(VmOpError::NoQmp)?;
        let s = q.query_status().await.map_err(VmOpError::Qmp)?;
        Ok(serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{s:?}").to_lowercase()))
    }

    async fn snapshot(&self, take: bool, name: &str) -> Result<(), VmOpError> {
        let q = self.client().await.ok_or(VmOpError::NoQmp)?;
        let r = match take {
            true => q.snapshot_create(name).await,
            false => q.snapshot_delete(name).await,
        };
        r.map_err(VmOpError::Qmp)
    }

    async fn block_stats(&self) -> Option<serde_json::Value> {
        let q = self.client().await?;
        let b = q.query_blockstats().await.ok()?;
        serde_json::to_value(b).ok()
    }

    async fn stop(&self, deadline: Duration) {
        let q = self.client().await;
        match vm::graceful_stop(q.as_deref(), &self.proc, deadline).await {
            Ok(outcome) => info!(?outcome, "vm stopped"),
            Err(e) => warn!(error = %chain(&e), "vm did not stop"),
        }
    }

    async fn kill(&self) {
        if let Err(e) = vm::lifecycle::kill(&self.proc) {
            warn!(error = %chain(&e), "kill failed");
        }
        let _ = tokio::time::timeout(KILL_WAIT, self.proc.wait_exit()).await;
    }
}
