//! The real effect boundary: [`Effects`] over `vm`, `net`, `cloudinit`, `proxy` and
//! `forward`. Each method is one step; none of them decides anything.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::warn;

use super::core::RunState;
use super::effects::{Effects, StepError};
use super::paths::VmPaths;
use super::runtime::{self, VmRuntime};
use super::{chain, SeedError};
use crate::cloudinit;
use crate::config::Config;
use crate::forward;
use crate::net;
use crate::presence::Presence;
use crate::proxy::{self, Route, RouteStatus};
use crate::store::{Hosting, HostingId, HostingState, Store};
use crate::vm;

pub(super) struct RealEffects {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub routes: proxy::Routes,
    pub forwarders: forward::Forwarders,
    pub lifecycle: crate::metrics::LifecycleMetrics,
    pub runtime: Result<VmRuntime, String>,
    /// One presence per hosting, shared by its route, its SSH forward and its actor.
    pub presences: std::sync::Mutex<HashMap<HostingId, Arc<Presence>>>,
}

/// How long removing an exited VM's cgroup may wait for the kernel to release it.
const CGROUP_REMOVE_DEADLINE: Duration = Duration::from_secs(5);
/// How long the guest agent gets to set the clock after a pause.
const AGENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long a killed QEMU gets to be gone.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);

impl RealEffects {
    fn rt(&self, step: &'static str) -> Result<&VmRuntime, StepError> {
        self.runtime
            .as_ref()
            .map_err(|r| StepError::new(step, format!("VM hosting is unavailable: {r}")))
    }

    fn paths(&self, id: HostingId) -> VmPaths {
        VmPaths::new(&self.cfg.state_dir, id)
    }

    fn write_seed(&self, rt: &VmRuntime, h: &Hosting, p: &VmPaths) -> Result<(), SeedError> {
        let input = cloudinit::SeedInput {
            instance_id: format!("{}-{}", h.id, h.incarnation),
            hostname: h.slug.clone(),
            username: h.slug.clone(),
            ssh_authorized_keys: h.ssh_keys.clone(),
            ip: h.ip,
            prefix_len: rt.subnet.prefix(),
            gateway: rt.subnet.gateway(),
            dns: self.cfg.guest_dns(),
            mac: h
                .mac
                .parse::<net::MacAddr>()
                .map_err(SeedError::Mac)?
                .octets(),
            slug: h.slug.clone(),
            domain: self.cfg.domain.clone(),
            ssh_port: h.ssh_port,
            install_nginx: !rt.image.manifest.has_nginx,
            console_password_hash: h.console_password_hash.clone(),
        };
        let seed =
            cloudinit::seed_documents(&rt.templates, &input).map_err(SeedError::Documents)?;
        cloudinit::write_seed_image(&p.seed, &seed).map_err(SeedError::Image)
    }

    /// Who the VM's QEMU runs as (its own uid from its address, see `vm::confine`); hands
    /// the VM directory to that uid.
    fn credentials(
        &self,
        rt: &VmRuntime,
        h: &Hosting,
        p: &VmPaths,
    ) -> Result<vm::Credentials, StepError> {
        let c = self.identity(rt, h, "user")?;
        vm::confine::hand_over(&p.dir, c.uid, c.gid)
            .map_err(|e| StepError::new("user", chain(&e)))?;
        Ok(c)
    }

    /// The VM's own identity (its uid from its address; `kvm` under KVM), for `step`.
    fn identity(
        &self,
        rt: &VmRuntime,
        h: &Hosting,
        step: &'static str,
    ) -> Result<vm::Credentials, StepError> {
        let uid = rt
            .subnet
            .host_offset(h.ip)
            .and_then(|o| vm::confine::vm_uid(self.cfg.vm.uid_base, o))
            .ok_or_else(|| {
                StepError::new(
                    step,
                    format!("address {} is outside network.subnet {}", h.ip, rt.subnet),
                )
            })?;
        let kvm = (rt.accel == vm::Accel::Kvm).then_some(rt.kvm_gid).flatten();
        Ok(vm::Credentials::for_vm(uid, kvm))
    }
}

/// A hosting's route with `status`.
pub(super) fn route(
    h: &Hosting,
    status: RouteStatus,
    generation: u64,
    presence: Arc<Presence>,
) -> Route {
    Route {
        presence,
        generation,
        slug: h.slug.clone(),
        hosting_id: h.id.to_string(),
        upstream: Some(SocketAddrV4::new(h.ip, 80)),
        ssh: Some((h.ssh_port, SocketAddrV4::new(h.ip, 22))),
        status,
    }
}

impl Effects for RealEffects {
    type Vm = RealVm;
    type Tap = std::os::fd::OwnedFd;

    fn files_exist(&self, id: HostingId) -> bool {
        let p = self.paths(id);
        p.overlay.exists() && p.seed.exists()
    }

    fn make_dir(&self, h: &Hosting) -> Result<bool, StepError> {
        let p = self.paths(h.id);
        let made = !p.dir.exists();
        std::fs::create_dir_all(&p.dir).map_err(|e| StepError::new("directory", e.to_string()))?;
        Ok(made)
    }

    async fn overlay(&self, h: &Hosting) -> Result<(), StepError> {
        let rt = self.rt("overlay")?;
        let p = self.paths(h.id);
        vm::disk::create_overlay(&rt.image.disk_path(), &p.overlay, self.cfg.vm.disk_gib)
            .await
            .map_err(|e| StepError::new("overlay", e.to_string()))
    }

    fn seed(&self, h: &Hosting) -> Result<(), StepError> {
        let rt = self.rt("seed")?;
        self.write_seed(rt, h, &self.paths(h.id))
            .map_err(|e| StepError::new("seed", chain(&e)))
    }

    fn remove_files(&self, id: HostingId) {
        let p = self.paths(id);
        if let Err(e) = std::fs::remove_dir_all(&p.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, dir = %p.dir.display(), "cannot remove vm files");
            }
        }
    }

    async fn tap(&self, h: &Hosting) -> Result<Self::Tap, StepError> {
        let rt = self.rt("tap")?;
        let mac = h
            .mac
            .parse::<net::MacAddr>()
            .map_err(|e| StepError::new("tap", format!("stored MAC {:?}: {e}", h.mac)))?;
        rt.net
            .create_tap(&h.tap, mac)
            .await
            .map_err(|e| StepError::new("tap", chain(&e)))
    }

    async fn delete_tap(&self, h: &Hosting) {
        if let Ok(rt) = self.runtime.as_ref() {
            if let Err(e) = rt.net.delete_link(&h.tap).await {
                warn!(error = %chain(&e), tap = %h.tap, "cannot delete tap");
            }
        }
    }

    async fn firewall(&self, extra: Option<&Hosting>) -> Result<(), StepError> {
        let rt = self.rt("firewall")?;
        let err = |e: String| StepError::new("firewall", e);
        let mut ports = Vec::new();
        let mut seen = HashSet::new();
        let hostings = self.store.hostings().map_err(|e| err(chain(&e)))?;
        for h in hostings.iter().chain(extra) {
            if h.state == HostingState::Deleting || !seen.insert(h.id) {
                continue;
            }
            if let Ok(mac) = h.mac.parse::<net::MacAddr>() {
                ports.push((h.tap.clone(), mac, h.ip));
            }
        }
        rt.net
            .apply_firewall(ports)
            .await
            .map_err(|e| err(chain(&e)))
    }

    async fn spawn(&self, h: &Hosting, tap: Self::Tap) -> Result<RealVm, StepError> {
        use std::os::fd::{AsFd, AsRawFd};
        let rt = self.rt("qemu")?;
        let cfg = &self.cfg;
        let p = self.paths(h.id);
        let user = self.credentials(rt, h, &p)?;
        let cgroup = rt
            .cgroups
            .create(&h.id.to_string(), &runtime::limits(cfg, rt.accel))
            .map_err(|e| StepError::new("cgroup", chain(&e)))?;
        let spec = vm::VmSpec {
            id: h.id.0,
            name: h.slug.clone(),
            memory_mib: cfg.vm.memory_mib,
            vcpus: cfg.vm.vcpus,
            accel: rt.accel,
            boot: rt.image.boot(),
            overlay: p.overlay.clone(),
            seed: Some(p.seed.clone()),
            net: Some(vm::argv::NetSpec {
                tap_fd: tap.as_raw_fd(),
                mac: h.mac.clone(),
            }),
            qmp_socket: p.qmp.clone(),
            pidfile: p.pidfile.clone(),
            serial_log: p.serial_log.clone(),
            serial_socket: Some(p.serial_sock.clone()),
            agent_socket: Some(p.agent_sock.clone()),
            user: Some(user),
        };
        let spawned = vm::process::spawn_argv(
            cfg.vm.qemu.as_os_str(),
            &vm::qemu_argv(&spec),
            vm::SpawnOptions {
                tap: Some(tap.as_fd()),
                stderr_log: p.qemu_log.clone(),
                qmp_socket: p.qmp.clone(),
                ready_deadline: vm::process::DEFAULT_READY_DEADLINE,
                user: spec.user.clone(),
                cgroups: cgroup.procs,
            },
        )
        .await;
        // QEMU holds its own copy of the tap now; ours goes, so the tap dies with QEMU.
        drop(tap);
        match spawned {
            Ok(proc) => Ok(RealVm::new(proc, None, SystemTime::now(), &p)),
            Err(e) => {
                self.remove_cgroup(h.id).await;
                Err(StepError::new("qemu", chain(&e)))
            }
        }
    }

    async fn remove_cgroup(&self, id: HostingId) {
        let Ok(rt) = self.runtime.as_ref() else {
            return;
        };
        if let Err(e) = rt
            .cgroups
            .remove(&id.to_string(), CGROUP_REMOVE_DEADLINE)
            .await
        {
            warn!(error = %chain(&e), "cannot remove the vm's cgroup");
        }
    }

    async fn kill_unwatched(&self, id: HostingId) {
        if let Ok(Some(proc)) = vm::adopt(&self.paths(id).pidfile, id.0) {
            warn!(
                pid = proc.pid(),
                "killing a qemu of this hosting that nothing watched"
            );
            let _ = vm::lifecycle::kill(&proc);
            let _ = tokio::time::timeout(KILL_WAIT, proc.wait_exit()).await;
        }
    }

    async fn open_ssh(&self, h: &Hosting) -> Result<(), StepError> {
        let limits = forward::ForwardLimits {
            client_mark: self.rt("routes")?.net.client_mark(),
            wake_timeout: Duration::from_secs(self.cfg.vm.wake_timeout_secs),
            ..forward::ForwardLimits::default()
        };
        self.forwarders
            .ensure(
                h.ssh_port,
                SocketAddrV4::new(h.ip, 22),
                limits,
                self.presence(h.id),
            )
            .await
            .map_err(|e| StepError::new("routes", chain(&e)))
    }

    async fn close_ssh(&self, h: &Hosting) {
        self.forwarders.remove(h.ssh_port).await;
    }

    fn publish(&self, h: &Hosting, generation: u64) {
        if h.state == HostingState::Deleting {
            self.routes.remove(&h.slug);
            self.presences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&h.id);
        } else {
            let status = super::queries::route_status(h);
            self.routes
                .upsert(route(h, status, generation, self.presence(h.id)));
        }
    }

    fn presence(&self, id: HostingId) -> Arc<Presence> {
        self.presences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_insert_with(Presence::new)
            .clone()
    }

    async fn sync_clock(&self, h: &Hosting) -> Result<(), StepError> {
        let sock = self.paths(h.id).agent_sock;
        vm::agent::set_time(&sock, SystemTime::now(), AGENT_DEADLINE)
            .await
            .map_err(|e| StepError::new("clock", chain(&e)))
    }

    async fn set_password(&self, h: &Hosting, crypted: &str) -> Result<(), StepError> {
        let sock = self.paths(h.id).agent_sock;
        vm::agent::set_password(&sock, &h.slug, crypted, AGENT_DEADLINE)
            .await
            .map_err(|e| StepError::new("agent", chain(&e)))
    }

    fn booted(&self, boot: Duration, creation: Option<Duration>) {
        self.lifecycle.booted(boot, creation);
    }

    fn crashed(&self) {
        self.lifecycle.crashed();
    }

    async fn adopt(&self, h: &Hosting) -> Option<(RealVm, Option<RunState>)> {
        let p = self.paths(h.id);
        let proc = vm::adopt(&p.pidfile, h.id.0).ok().flatten()?;
        let pid = proc.pid();
        // A QEMU of an earlier daemon (or roost version) gets its cgroup limits now.
        if let Ok(rt) = self.runtime.as_ref() {
            if let Err(e) = rt.cgroups.place(
                &h.id.to_string(),
                pid,
                &runtime::limits(&self.cfg, rt.accel),
            ) {
                warn!(pid, error = %chain(&e), "cannot move the adopted qemu into its cgroup");
            }
        }
        let started = vm::procfs::start_time(pid).unwrap_or_else(SystemTime::now);
        let qmp = vm::Qmp::connect(&p.qmp).await.ok();
        let status = match &qmp {
            Some(q) => q.query_status().await.ok().map(|s| match s {
                vm::RunState::Paused => RunState::Paused,
                _ => RunState::Running,
            }),
            None => None,
        };
        Some((RealVm::new(proc, qmp, started, &p), status))
    }

    async fn disk_snapshot(
        &self,
        h: &Hosting,
        op: vm::snapshot::OfflineOp,
        name: &str,
    ) -> Result<(), StepError> {
        let user = self.identity(self.rt("snapshot")?, h, "snapshot")?;
        vm::snapshot::offline(op, name, &self.paths(h.id).overlay, Some(&user))
            .await
            .map_err(|e| StepError::new("snapshot", chain(&e)))
    }

    async fn disk_snapshots(&self, h: &Hosting) -> Result<Vec<String>, StepError> {
        let user = self.identity(self.rt("snapshot")?, h, "snapshot")?;
        vm::snapshot::names(&self.paths(h.id).overlay, Some(&user))
            .await
            .map_err(|e| StepError::new("snapshot", chain(&e)))
    }

    fn probe(
        &self,
        ip: Ipv4Addr,
        known: (bool, bool),
    ) -> impl std::future::Future<Output = (bool, bool)> + Send + 'static {
        super::probe::round(ip, known)
    }
}

mod vm_handle;

pub(super) use vm_handle::RealVm;
