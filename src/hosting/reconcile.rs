//! The reconciler observes and reports; it never changes a hosting itself. Each pass it
//! starts an actor for every hosting that has none (after a daemon start: the actor then
//! adopts its QEMU or acts on its absence), nudges the others (`Tick`), removes what no
//! hosting claims (QEMUs, taps, directories, cgroups), keeps serial logs under their cap,
//! and puts the firewall and the policy route of kept SSH client addresses back when they are
//! gone.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::actor::Command;
use super::chain;
use super::effects::Effects;
use super::manager::Hostings;
use super::paths::{self, VmPaths};
use crate::store::Hosting;
use crate::vm;

/// Serial logs are trimmed to half when they grow past this.
const SERIAL_LOG_CAP: u64 = 1 << 20;
/// How long the first pass waits for the actors' first look (adoption) before serving.
const RECOVER_WAIT: Duration = Duration::from_secs(30);

impl Hostings {
    /// One pass (see the module). The first pass at start waits until every actor has
    /// adopted its QEMU or started it, so the API never shows a running VM as stopped.
    pub async fn reconcile(&self) {
        if self.runtime().is_err() {
            return;
        }
        let hostings = match self.inner.store.hostings() {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "reconcile: cannot read hostings");
                return;
            }
        };
        let ctx = &self.inner.ctx;
        let mut recovering = Vec::new();
        for h in &hostings {
            if let Some(tx) = ctx.registry.sender(h.id) {
                // A busy actor has a full mailbox at worst: the next pass nudges it again.
                let _ = tx.try_send(Command::Tick);
                continue;
            }
            let (done, seen) = oneshot::channel();
            // A hosting deleted since the list was read gets no actor.
            let first = Command::Recover { done: Some(done) };
            if let Ok(true) = self.spawn_actor(h.id, Some(first)) {
                recovering.push(seen);
            }
        }
        let _ = tokio::time::timeout(RECOVER_WAIT, futures::future::join_all(recovering)).await;
        self.reap_orphans().await;
        self.check_firewall().await;
    }

    /// Puts the firewall back when any of its tables is gone (`nft flush ruleset`, which
    /// Debian's nftables.service runs on start and reload, removes them all), and the
    /// policy route of transparent SSH replies when it is gone (`ip rule flush`).
    async fn check_firewall(&self) {
        let Ok(rt) = self.runtime() else { return };
        match rt.net.firewall_missing().await {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => {
                warn!(
                    ?missing,
                    "firewall drift: roost's tables are gone; re-applying them"
                );
                if let Err(e) = self.inner.ctx.fx.firewall(None).await {
                    warn!(error = %e, "cannot re-apply the firewall");
                }
            }
            Err(e) => warn!(error = %chain(&e), "cannot read the firewall"),
        }
        match rt.net.restore_client_routing().await {
            Ok(false) => {}
            Ok(true) => warn!(
                "routing drift: the policy route of kept ssh client addresses was gone; put back"
            ),
            Err(e) => {
                warn!(error = %chain(&e), "cannot check the routing of kept ssh client addresses")
            }
        }
    }

    /// Applies the firewall for every hosting; called once at start, before any VM is
    /// adopted or started, so that guests never run unfiltered under this daemon.
    pub(super) async fn apply_firewall_at_start(&self) {
        if self.runtime().is_err() {
            return;
        }
        if let Err(e) = self.inner.ctx.fx.firewall(None).await {
            warn!(error = %e, "cannot apply the firewall at start");
        }
    }

    /// The ids the store knows, read after the world was looked at: anything found
    /// before this read that no hosting claims was not made for a hosting being created
    /// (a creation reserves its row before it makes anything).
    fn claimed(&self) -> Option<Vec<Hosting>> {
        match self.inner.store.hostings() {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "reconcile: cannot read hostings");
                None
            }
        }
    }

    /// Removes taps, VM directories, cgroups and QEMU processes that no hosting claims, and
    /// keeps serial logs under their cap. Each kind is listed before the claims are read.
    async fn reap_orphans(&self) {
        let Ok(rt) = self.runtime() else {
            return;
        };
        let vms_dir = paths::vms_dir(&self.inner.cfg.state_dir);
        let qemus = vm::procfs::qemus_under(&vms_dir);
        let links = rt.net.orphan_taps(&Default::default()).await;
        let dirs: Vec<_> = std::fs::read_dir(&vms_dir)
            .map(|rd| rd.flatten().collect())
            .unwrap_or_default();
        let cgroups = rt.cgroups.unclaimed(&HashSet::new());
        let Some(hostings) = self.claimed() else {
            return;
        };
        let ids: HashSet<String> = hostings.iter().map(|h| h.id.to_string()).collect();
        for (pid, dir) in qemus {
            if ids.contains(&dir) {
                continue;
            }
            // Signal only through a pidfd opened before the check that it is this QEMU, so
            // a pid reused meanwhile is never hit.
            let Ok(proc) = vm::process::VmProcess::from_pid(pid) else {
                continue;
            };
            if vm::procfs::qemu_vm_dir(pid, &vms_dir).as_deref() != Some(dir.as_str()) {
                continue;
            }
            warn!(pid, vm = %dir, "killing orphan qemu (no hosting claims it)");
            if let Err(e) = proc.kill() {
                warn!(pid, error = %e, "cannot kill orphan qemu");
            }
        }
        let taps: HashSet<&str> = hostings.iter().map(|h| h.tap.as_str()).collect();
        match links {
            Ok(names) => {
                for name in names.iter().filter(|n| !taps.contains(n.as_str())) {
                    warn!(tap = %name, "deleting orphan tap");
                    let _ = rt.net.delete_link(name).await;
                }
            }
            Err(e) => warn!(error = %e, "cannot list taps"),
        }
        for e in dirs {
            let name = e.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                warn!(dir = %e.path().display(), "removing orphan vm directory");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        // Empty cgroups of VMs that no longer exist (an occupied one cannot be removed, and
        // its QEMU was killed above).
        for name in cgroups.into_iter().filter(|n| !ids.contains(n)) {
            match rt.cgroups.remove(&name, Duration::ZERO).await {
                Ok(()) => info!(cgroup = %name, "removed orphan vm cgroup"),
                // Its killed QEMU is not reaped yet: the next pass removes it.
                Err(vm::VmError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    warn!(cgroup = %name, error = %chain(&e), "cannot remove orphan cgroup")
                }
            }
        }
        for h in &hostings {
            let p = VmPaths::new(&self.inner.cfg.state_dir, h.id);
            let _ = vm::process::cap_serial_log(&p.serial_log, SERIAL_LOG_CAP);
        }
    }
}
