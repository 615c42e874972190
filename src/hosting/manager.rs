//! The hosting manager: the create saga with an undo per step, delete, admin actions, the
//! per-VM supervisor (QMP events and process exit) and the reconciler.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tracing::{error, info, info_span, warn, Instrument};

use super::lifecycle::{self, Action, AfterExit, Backoff, ExitCause, Plan};
use super::netrt::NetRuntime;
use super::paths::{self, VmPaths};
use super::{
    capacity, CapacityReport, Created, FirewallSyncError, HostingError, RouteInfo, RuntimeError,
    SeedError, VmDetail, VmStatus,
};
use crate::cloudinit;
use crate::config::Config;
use crate::forward;
use crate::net;
use crate::proxy::{self, Route, RouteStatus};
use crate::store::{Hosting, HostingId, HostingState, Store, StoreError, UserId};
use crate::vm;

/// Everything needed to run VMs; absent when this host cannot (then creation answers 503).
pub(super) struct VmRuntime {
    pub net: NetRuntime,
    pub image: vm::Image,
    pub accel: vm::Accel,
    pub templates: cloudinit::Templates,
    pub subnet: net::Ipv4Net,
    /// Where VM cgroups go (empty when `[vm] cgroups = false` or the host has none).
    pub cgroups: vm::Cgroups,
    /// The `kvm` group QEMUs join under KVM.
    pub kvm_gid: Option<u32>,
}

/// A QEMU process roost watches.
struct Live {
    proc: vm::VmProcess,
    /// QEMU serves one QMP client at a time: this is the one.
    qmp: Mutex<Option<Arc<vm::Qmp>>>,
    qmp_socket: std::path::PathBuf,
    started: SystemTime,
    /// Set before roost itself stops or kills the VM, so the exit is not a crash.
    requested_exit: AtomicBool,
    /// Set when the guest announced its own poweroff (QMP SHUTDOWN from the guest).
    guest_poweroff: AtomicBool,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Live {
    fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The QMP client, reconnecting when the last one was lost or abandoned.
    async fn qmp(&self) -> Option<Arc<vm::Qmp>> {
        let cur = lock(&self.qmp).clone();
        if let Some(q) = cur.filter(|q| q.is_usable()) {
            return Some(q);
        }
        let q = Arc::new(vm::Qmp::connect(&self.qmp_socket).await.ok()?);
        *lock(&self.qmp) = Some(q.clone());
        Some(q)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(mut s) = self.supervisor.lock() {
            if let Some(t) = s.take() {
                t.abort();
            }
        }
    }
}

pub(super) struct Inner {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub routes: proxy::Routes,
    pub forwarders: forward::Forwarders,
    pub runtime: Result<VmRuntime, String>,
    create_slots: Arc<Semaphore>,
    live: Mutex<HashMap<HostingId, Arc<Live>>>,
    /// Hostings with a job in flight (create, delete, action); the reconciler leaves them be.
    busy: Mutex<HashSet<HostingId>>,
    backoff: Mutex<HashMap<HostingId, Backoff>>,
    /// Boots of each VM seen by this daemon: the proxy drops pooled connections to a VM
    /// whose generation changed (a rebooted guest has forgotten them).
    generations: Mutex<HashMap<HostingId, u64>>,
    /// Test hook: `ROOST_FAULTS=step,...` makes those creation steps fail.
    faults: HashSet<String>,
    /// Held from the capacity check to the reservation, so two creations cannot both take
    /// the last room.
    admission: Mutex<()>,
}

/// Marks a hosting busy for as long as it lives.
struct BusyGuard(Arc<Inner>, HostingId);
impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Ok(mut b) = self.0.busy.lock() {
            b.remove(&self.1);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The manager handle; cheap to clone.
#[derive(Clone)]
pub struct Hostings {
    inner: Arc<Inner>,
}

impl Hostings {
    pub(super) fn new(
        cfg: Arc<Config>,
        store: Store,
        routes: proxy::Routes,
        forwarders: forward::Forwarders,
        runtime: Result<VmRuntime, String>,
    ) -> Hostings {
        let faults = std::env::var("ROOST_FAULTS")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Hostings {
            inner: Arc::new(Inner {
                create_slots: Arc::new(Semaphore::new(cfg.limits.max_concurrent_creates)),
                cfg,
                store,
                routes,
                forwarders,
                runtime,
                live: Mutex::new(HashMap::new()),
                busy: Mutex::new(HashSet::new()),
                backoff: Mutex::new(HashMap::new()),
                generations: Mutex::new(HashMap::new()),
                faults,
                admission: Mutex::new(()),
            }),
        }
    }

    pub fn routes(&self) -> proxy::Routes {
        self.inner.routes.clone()
    }

    /// Why VM hosting is unavailable on this host, if it is.
    pub fn disabled_reason(&self) -> Option<String> {
        self.inner.runtime.as_ref().err().cloned()
    }

    fn rt(&self) -> Result<&VmRuntime, HostingError> {
        self.inner
            .runtime
            .as_ref()
            .map_err(|r| HostingError::Unavailable(r.clone()))
    }

    fn try_busy(&self, id: HostingId) -> Option<BusyGuard> {
        lock(&self.inner.busy)
            .insert(id)
            .then(|| BusyGuard(self.inner.clone(), id))
    }

    // ----- create -----

    /// The host's budgets and what the hostings hold of them (every hosting, stopped or
    /// not, holds its reservation; see `capacity`).
    pub fn capacity(&self) -> Result<CapacityReport, HostingError> {
        let cfg = &self.inner.cfg;
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| capacity::mem_total_mib(&t))
            .ok_or_else(|| {
                HostingError::Internal("cannot read MemTotal from /proc/meminfo".into())
            })?;
        let disk_gib = vm::disk::total_bytes(&cfg.state_dir)
            .map_err(|e| HostingError::Internal(e.to_string()))?
            >> 30;
        let host = capacity::HostSize {
            memory_mib,
            disk_gib,
        };
        let limits = capacity::Limits {
            max_vms: cfg.limits.max_vms,
            memory_reserve_mib: cfg.limits.memory_reserve_mib,
            memory_overcommit: cfg.limits.memory_overcommit,
            disk_reserve_gib: u64::from(cfg.vm.disk_reserve_gib),
            disk_overcommit: cfg.limits.disk_overcommit,
        };
        // Charged as its cgroup limit; without a runtime, as under TCG (the larger).
        let accel = self
            .inner
            .runtime
            .as_ref()
            .map_or(vm::Accel::Tcg, |rt| rt.accel);
        let vm = capacity::VmSize {
            memory_mib: self.limits(accel).memory_bytes >> 20,
            disk_gib: u64::from(cfg.vm.disk_gib),
        };
        let count = u32::try_from(self.inner.store.hostings()?.len()).unwrap_or(u32::MAX);
        Ok(CapacityReport {
            host,
            budget: capacity::budget(host, &limits),
            usage: capacity::Usage::of(count, vm),
            vm,
        })
    }

    /// Validates, reserves (one transaction) and starts provisioning in the background.
    pub async fn create(
        &self,
        user: UserId,
        slug: &str,
        key: Option<&str>,
    ) -> Result<Created, HostingError> {
        // The slug is the login name in the VM: refuse now what the seed would refuse later.
        cloudinit::validate_username(slug).map_err(|e| {
            HostingError::InvalidName(format!(
                "your username cannot be a login name in the VM ({e}); ask the operator to rename the account"
            ))
        })?;
        // Keys: the given one, else the user's registered ones, else a generated pair.
        let (keys, private_key) = match key {
            Some(k) => {
                let k = cloudinit::parse_public_key(k)
                    .map_err(|e| HostingError::InvalidKey(e.to_string()))?;
                (vec![k.openssh], None)
            }
            None => {
                let registered: Vec<String> = self
                    .inner
                    .store
                    .ssh_keys(user)?
                    .into_iter()
                    .map(|k| k.public_key)
                    .collect();
                if registered.is_empty() {
                    let (public, private) = cloudinit::generate_ed25519(&format!("{slug}@roost"))
                        .map_err(|e| HostingError::Internal(e.to_string()))?;
                    (vec![public], Some(private))
                } else {
                    (registered, None)
                }
            }
        };
        if !self.inner.store.hostings_of(user)?.is_empty() {
            return Err(HostingError::Exists);
        }
        let cfg = &self.inner.cfg;
        // From the capacity check to the reservation, one creation at a time.
        let _admission = lock(&self.inner.admission);
        let report = self.capacity()?;
        capacity::admit(&report.budget, &report.usage, report.vm).map_err(|r| match r {
            capacity::Refusal::Disk { .. } => HostingError::DiskFull(r.to_string()),
            r => HostingError::NoCapacity(r.to_string()),
        })?;
        let rt = self.rt()?;
        vm::disk::check_free_space(
            &cfg.state_dir,
            u64::from(cfg.vm.disk_gib) << 30,
            u64::from(cfg.vm.disk_reserve_gib) << 30,
        )
        .map_err(|e| match e {
            vm::VmError::DiskFull { .. } => HostingError::DiskFull(e.to_string()),
            e => HostingError::Internal(e.to_string()),
        })?;
        let ports = cfg
            .ssh_ports()
            .map(|r| r.low..=r.high)
            .unwrap_or(22000..=22999);
        let id = HostingId::new();
        let now = crate::store::now();
        let slug_owned = slug.to_owned();
        let h = self
            .inner
            .store
            .reserve_hosting(
                user,
                rt.subnet.hosts(),
                ports,
                forward::port_is_free,
                |ip, port| Hosting {
                    id,
                    user,
                    slug: slug_owned,
                    state: HostingState::Provisioning,
                    reason: None,
                    desired_running: true,
                    ip,
                    ssh_port: port,
                    mac: net::mac_for_ip(ip).to_string(),
                    tap: net::tap_name(&id.0.to_bytes()),
                    incarnation: 1,
                    ssh_keys: keys,
                    created_at: now,
                    updated_at: now,
                },
                slug,
            )
            .map_err(|e| match e {
                StoreError::HostingExists => HostingError::Exists,
                StoreError::NoFreeIp => {
                    HostingError::NoCapacity("no free address is left in the VM subnet".into())
                }
                StoreError::NoFreePort => {
                    HostingError::NoCapacity("no free port is left in the SSH port range".into())
                }
                e => HostingError::Store(e),
            })?;
        info!(hosting = %h.id, slug = %h.slug, ip = %h.ip, ssh_port = h.ssh_port, "hosting reserved");
        self.publish_route(&h);
        let me = self.clone();
        let busy = self.try_busy(h.id);
        let job = h.clone();
        tokio::spawn(
            async move {
                let _busy = busy;
                me.provision(job).await;
            }
            .instrument(info_span!("create", hosting = %h.id, slug = %h.slug)),
        );
        Ok(Created {
            hosting: h,
            private_key,
        })
    }

    /// The background part of creation: waits for a slot, then builds the VM step by step.
    async fn provision(&self, h: Hosting) {
        let permit = match self.inner.create_slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        // The slot is held until the guest is ready: under TCG the boot is the expensive
        // part, and ten guests booting at once on two cores would all be slow.
        match self.build_and_boot(&h).await {
            Ok(()) => self.await_ready(h.id).await,
            Err(e) => {
                warn!(error = %e, "creation failed; rolled back");
                self.set_failed(h.id, &e.to_string());
            }
        }
        drop(permit);
    }

    fn fault(&self, step: &str) -> Result<(), HostingError> {
        if self.inner.faults.contains(step) {
            Err(HostingError::Step {
                step: step.to_owned(),
                message: "injected fault".into(),
            })
        } else {
            Ok(())
        }
    }

    /// Overlay, seed, then boot. Any failure undoes what was made, in reverse.
    async fn build_and_boot(&self, h: &Hosting) -> Result<(), HostingError> {
        let rt = self.rt()?;
        let cfg = &self.inner.cfg;
        let p = VmPaths::new(&cfg.state_dir, h.id);
        let made_dir = !p.dir.exists();
        let undo_dir = |p: &VmPaths| {
            if made_dir {
                let _ = std::fs::remove_dir_all(&p.dir);
            }
        };
        std::fs::create_dir_all(&p.dir).map_err(|e| step_err("directory")(e.to_string()))?;
        let r: Result<(), HostingError> = async {
            self.fault("overlay")?;
            vm::disk::create_overlay(&rt.image.disk_path(), &p.overlay, cfg.vm.disk_gib)
                .await
                .map_err(|e| step_err("overlay")(e.to_string()))?;
            self.fault("seed")?;
            self.write_seed(rt, h, &p)
                .map_err(|e| step_err("seed")(super::chain(&e)))?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            undo_dir(&p);
            return Err(e);
        }
        if let Err(e) = self.boot(h).await {
            undo_dir(&p);
            return Err(e);
        }
        info!(hosting = %h.id, "vm started; waiting for the guest");
        self.set_state(h.id, HostingState::Booting, None);
        Ok(())
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
            dns: self.inner.cfg.network.dns.clone(),
            mac: h
                .mac
                .parse::<net::MacAddr>()
                .map_err(SeedError::Mac)?
                .octets(),
            slug: h.slug.clone(),
            domain: self.inner.cfg.domain.clone(),
            ssh_port: h.ssh_port,
            install_nginx: !rt.image.manifest.has_nginx,
        };
        let seed =
            cloudinit::seed_documents(&rt.templates, &input).map_err(SeedError::Documents)?;
        cloudinit::write_seed_image(&p.seed, &seed).map_err(SeedError::Image)
    }

    /// Tap, QEMU, supervisor, routes. Undoes its own steps on failure.
    async fn boot(&self, h: &Hosting) -> Result<(), HostingError> {
        let rt = self.rt()?;
        let cfg = &self.inner.cfg;
        let p = VmPaths::new(&cfg.state_dir, h.id);

        self.fault("tap")?;
        let mac = h
            .mac
            .parse::<net::MacAddr>()
            .map_err(|e| step_err("tap")(format!("stored MAC {:?}: {e}", h.mac)))?;
        let tap = rt
            .net
            .create_tap(&h.tap, mac)
            .await
            .map_err(|e| step_err("tap")(super::chain(&e)))?;
        // The firewall must know the new tap before the guest speaks.
        if let Err(e) = self.sync_firewall(Some(h)).await {
            drop(tap);
            let _ = rt.net.delete_link(&h.tap).await;
            return Err(step_err("firewall")(super::chain(&e)));
        }
        let (user, limits) = match self.confinement(rt, h, &p) {
            Ok(c) => c,
            Err(e) => {
                drop(tap);
                let _ = rt.net.delete_link(&h.tap).await;
                return Err(e);
            }
        };
        let cgroup = match rt.cgroups.create(&h.id.to_string(), &limits) {
            Ok(c) => c,
            Err(e) => {
                drop(tap);
                let _ = rt.net.delete_link(&h.tap).await;
                return Err(step_err("cgroup")(super::chain(&e)));
            }
        };
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
                tap_fd: -1,
                mac: h.mac.clone(),
            }),
            qmp_socket: p.qmp.clone(),
            pidfile: p.pidfile.clone(),
            serial_log: p.serial_log.clone(),
            user: Some(user),
        };
        let spawned = if self.inner.faults.contains("qemu") {
            Err("injected fault".to_owned())
        } else {
            let argv = {
                use std::os::fd::AsRawFd;
                let mut spec = spec.clone();
                if let Some(n) = spec.net.as_mut() {
                    n.tap_fd = tap.as_raw_fd();
                }
                vm::qemu_argv(&spec)
            };
            use std::os::fd::AsFd;
            vm::process::spawn_argv(
                cfg.vm.qemu.as_os_str(),
                &argv,
                vm::SpawnOptions {
                    tap: Some(tap.as_fd()),
                    stderr_log: p.qemu_log.clone(),
                    qmp_socket: p.qmp.clone(),
                    ready_deadline: vm::process::DEFAULT_READY_DEADLINE,
                    user: spec.user.clone(),
                    cgroups: cgroup.procs,
                },
            )
            .await
            .map_err(|e| super::chain(&e))
        };
        // QEMU holds its own copy of the tap now; ours goes, so the tap dies with QEMU.
        drop(tap);
        let proc = match spawned {
            Ok(s) => s,
            Err(e) => {
                let _ = rt.net.delete_link(&h.tap).await;
                self.remove_cgroup(h.id).await;
                return Err(step_err("qemu")(e));
            }
        };
        info!(hosting = %h.id, pid = proc.pid(), "qemu started");
        self.new_generation(h.id);
        let live = self.watch(h.id, proc, None, SystemTime::now(), &p);
        let routed = match self.fault("routes") {
            Ok(()) => self
                .open_ssh(h)
                .await
                .map_err(|e| step_err("routes")(super::chain(&e))),
            Err(e) => Err(e),
        };
        if let Err(e) = routed {
            self.kill_live(h.id, &live).await;
            let _ = rt.net.delete_link(&h.tap).await;
            return Err(e);
        }
        Ok(())
    }

    /// Who the VM's QEMU runs as (its own uid from its address, see `vm::confine`) and its
    /// cgroup limits; hands the VM directory to that uid.
    fn confinement(
        &self,
        rt: &VmRuntime,
        h: &Hosting,
        p: &VmPaths,
    ) -> Result<(vm::Credentials, vm::Limits), HostingError> {
        let cfg = &self.inner.cfg;
        let uid = rt
            .subnet
            .host_offset(h.ip)
            .and_then(|o| vm::confine::vm_uid(cfg.vm.uid_base, o))
            .ok_or_else(|| {
                step_err("user")(format!(
                    "address {} is outside network.subnet {}",
                    h.ip, rt.subnet
                ))
            })?;
        let kvm = (rt.accel == vm::Accel::Kvm).then_some(rt.kvm_gid).flatten();
        vm::confine::hand_over(&p.dir, uid, uid).map_err(|e| step_err("user")(super::chain(&e)))?;
        Ok((vm::Credentials::for_vm(uid, kvm), self.limits(rt.accel)))
    }

    /// A VM's cgroup limits under `accel` (also what capacity admission charges it).
    fn limits(&self, accel: vm::Accel) -> vm::Limits {
        let cfg = &self.inner.cfg;
        vm::Limits::for_vm(cfg.vm.vcpus, cfg.vm.memory_mib, accel)
    }

    /// Removes a VM's cgroups once its QEMU is gone (they are made again at the next start).
    async fn remove_cgroup(&self, id: HostingId) {
        let Ok(rt) = self.inner.runtime.as_ref() else {
            return;
        };
        if let Err(e) = rt
            .cgroups
            .remove(&id.to_string(), CGROUP_REMOVE_DEADLINE)
            .await
        {
            warn!(hosting = %id, error = %super::chain(&e), "cannot remove the vm's cgroup");
        }
    }

    /// Re-applies the firewall for every hosting that may have a tap (plus `extra`).
    async fn sync_firewall(&self, extra: Option<&Hosting>) -> Result<(), FirewallSyncError> {
        let rt = self.rt().map_err(|_| FirewallSyncError::NoRuntime)?;
        let mut ports = Vec::new();
        let mut seen = HashSet::new();
        let hostings = self
            .inner
            .store
            .hostings()
            .map_err(FirewallSyncError::Store)?;
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
            .map_err(FirewallSyncError::Apply)
    }

    /// Waits until the guest answers on :80 and :22, then marks it running.
    async fn await_ready(&self, id: HostingId) {
        let Some(h) = self.inner.store.hosting(id).ok().flatten() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(self.inner.cfg.vm.boot_timeout_secs);
        // Each service is probed on its own cadence and remembered once it answers, so a
        // slow SSH start never delays noticing the web server (and the other way round).
        let (mut web, mut ssh) = (false, false);
        loop {
            match self.inner.store.hosting(id) {
                Ok(Some(cur)) if cur.state == HostingState::Booting => {}
                _ => return, // stopped, deleted or failed meanwhile
            }
            let tick = tokio::time::sleep(READY_POLL);
            let (w, s) = tokio::join!(async { web || probe_http(h.ip).await }, async {
                ssh || probe_ssh(h.ip).await
            },);
            (web, ssh) = (w, s);
            if web && ssh {
                info!(hosting = %id, "guest answers on :80 and :22");
                self.set_state(id, HostingState::Running, None);
                return;
            }
            if Instant::now() > deadline {
                warn!(hosting = %id, web, ssh, "guest did not answer in time");
                self.set_failed(
                    id,
                    &format!(
                        "the guest did not answer on :80 and :22 within {} s",
                        self.inner.cfg.vm.boot_timeout_secs
                    ),
                );
                return;
            }
            tick.await;
        }
    }

    // ----- state and routes -----

    /// Records a state, if [`lifecycle::may_move`] allows it from the current one; an
    /// illegal transition is refused and logged as an error, never written.
    fn set_state(&self, id: HostingId, state: HostingState, reason: Option<String>) {
        let mut refused = None;
        match self.inner.store.modify_hosting(id, |h| {
            if !lifecycle::may_move(h.state, state) {
                refused = Some(h.state);
                return;
            }
            h.state = state;
            if reason.is_some() || state != HostingState::Failed {
                h.reason = reason.clone();
            }
        }) {
            Ok(_) if refused.is_some() => {
                let from = refused.map_or("?", HostingState::as_str);
                error!(hosting = %id, from, to = state.as_str(), "illegal state transition refused");
            }
            Ok(h) => {
                info!(hosting = %id, state = state.as_str(), "state");
                self.publish_route(&h);
            }
            Err(StoreError::NoSuchHosting) => {}
            Err(e) => warn!(hosting = %id, error = %e, "cannot record state"),
        }
    }

    /// Records a failure: the VM is undone (process, tap, routes' SSH port), the row and its
    /// reservations stay so the owner sees why and can delete or an admin can start it again.
    fn set_failed(&self, id: HostingId, reason: &str) {
        self.set_state(id, HostingState::Failed, Some(reason.to_owned()));
    }

    fn route_for(&self, h: &Hosting) -> Route {
        let status = match h.state {
            HostingState::Running => RouteStatus::Live,
            HostingState::Provisioning => RouteStatus::Provisioning,
            HostingState::Booting => RouteStatus::Booting,
            HostingState::Paused | HostingState::Stopped | HostingState::Deleting => {
                RouteStatus::Stopped
            }
            HostingState::Failed => RouteStatus::Failed,
        };
        Route {
            generation: lock(&self.inner.generations)
                .get(&h.id)
                .copied()
                .unwrap_or(0),
            slug: h.slug.clone(),
            hosting_id: h.id.to_string(),
            upstream: Some(SocketAddrV4::new(h.ip, 80)),
            ssh: Some((h.ssh_port, SocketAddrV4::new(h.ip, 22))),
            status,
        }
    }

    fn publish_route(&self, h: &Hosting) {
        if h.state == HostingState::Deleting {
            self.inner.routes.remove(&h.slug);
        } else {
            self.inner.routes.upsert(self.route_for(h));
        }
    }

    async fn open_ssh(&self, h: &Hosting) -> Result<(), forward::ForwardError> {
        self.inner
            .forwarders
            .ensure(
                h.ssh_port,
                SocketAddrV4::new(h.ip, 22),
                forward::ForwardLimits::default(),
            )
            .await
    }
}

/// Turns a step's error text into the error that names the step.
fn step_err(step: &'static str) -> impl Fn(String) -> HostingError {
    move |message| HostingError::Step {
        step: step.into(),
        message,
    }
}

/// How long removing an exited VM's cgroup may wait for the kernel to release it.
const CGROUP_REMOVE_DEADLINE: Duration = Duration::from_secs(5);

/// Serial logs are trimmed to half when they grow past this.
const SERIAL_LOG_CAP: u64 = 1 << 20;
/// How many serial console lines a VM's detail shows.
pub(super) const SERIAL_TAIL_LINES: usize = 40;

/// How often a booting guest is probed (at most: a probe can take longer).
const READY_POLL: Duration = Duration::from_millis(100);
/// Connecting gives up after this: an unanswered SYN is retried by the next probe rather
/// than by TCP's one-second retransmission.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Once connected, a busy guest gets this long to answer.
const PROBE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

async fn probe_connect(ip: Ipv4Addr, port: u16) -> Option<tokio::net::TcpStream> {
    tokio::time::timeout(
        PROBE_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .ok()?
    .ok()
}

/// True when something answers HTTP on ip:80.
async fn probe_http(ip: Ipv4Addr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(mut s) = probe_connect(ip, 80).await else {
        return false;
    };
    let answer = async {
        s.write_all(b"HEAD / HTTP/1.0\r\nHost: roost-probe\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        buf.starts_with(b"HTTP/").then_some(())
    };
    matches!(
        tokio::time::timeout(PROBE_ANSWER_TIMEOUT, answer).await,
        Ok(Some(()))
    )
}

/// True when an SSH server greets on ip:22.
async fn probe_ssh(ip: Ipv4Addr) -> bool {
    use tokio::io::AsyncReadExt;
    let Some(mut s) = probe_connect(ip, 22).await else {
        return false;
    };
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(PROBE_ANSWER_TIMEOUT, s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"SSH-"
    )
}

impl Hostings {
    // ----- supervision -----

    /// Starts watching a QEMU process: QMP events update the state at once, and its exit
    /// is handled by the restart policy.
    fn watch(
        &self,
        id: HostingId,
        proc: vm::VmProcess,
        qmp: Option<vm::Qmp>,
        started: SystemTime,
        p: &VmPaths,
    ) -> Arc<Live> {
        let pid = proc.pid();
        let live = Arc::new(Live {
            proc,
            qmp: Mutex::new(qmp.map(Arc::new)),
            qmp_socket: p.qmp.clone(),
            started,
            requested_exit: AtomicBool::new(false),
            guest_poweroff: AtomicBool::new(false),
            supervisor: Mutex::new(None),
        });
        lock(&self.inner.live).insert(id, live.clone());
        let me = self.clone();
        let l = live.clone();
        let task = tokio::spawn(
            async move { me.supervise(id, l).await }
                .instrument(info_span!("vm", hosting = %id, pid)),
        );
        *lock(&live.supervisor) = Some(task);
        live
    }

    async fn supervise(&self, id: HostingId, live: Arc<Live>) {
        let mut events = live.qmp().await.map(|q| q.events());
        {
            let exit = live.proc.wait_exit();
            tokio::pin!(exit);
            loop {
                tokio::select! {
                    _ = &mut exit => break,
                    ev = async {
                        match events.as_mut() {
                            Some(rx) => rx.recv().await.ok(),
                            None => std::future::pending().await,
                        }
                    } => {
                        match ev {
                            Some(vm::VmEvent::Disconnected) | None => events = None,
                            Some(ev) => self.on_event(id, &live, ev),
                        }
                    }
                }
            }
        }
        if live.requested_exit.load(Ordering::SeqCst) {
            return; // the requester records the state, forgets the VM and its cgroup
        }
        lock(&self.inner.live).remove(&id);
        self.remove_cgroup(id).await;
        let cause = if live.guest_poweroff.load(Ordering::SeqCst) {
            ExitCause::GuestPoweroff
        } else {
            ExitCause::Crash
        };
        info!(?cause, "qemu exited");
        let Some(h) = self.inner.store.hosting(id).ok().flatten() else {
            return;
        };
        if h.state == HostingState::Deleting {
            return;
        }
        let decision = {
            let mut b = lock(&self.inner.backoff);
            lifecycle::after_exit(
                h.desired_running,
                cause,
                b.entry(id).or_default(),
                Instant::now(),
            )
        };
        self.inner.forwarders.remove(h.ssh_port).await;
        match decision {
            AfterExit::Down(state) => {
                if cause == ExitCause::GuestPoweroff {
                    let _ = self
                        .inner
                        .store
                        .modify_hosting(id, |h| h.desired_running = false);
                }
                self.set_state(id, state, None);
            }
            AfterExit::GiveUp(reason) => {
                warn!(%reason, "giving up on restarts");
                self.set_failed(id, &reason);
            }
            AfterExit::Restart(delay) => {
                warn!(?delay, "qemu exited unexpectedly; restarting");
                self.set_state(
                    id,
                    HostingState::Booting,
                    Some("restarting after an unexpected exit".into()),
                );
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Some(_busy) = me.try_busy(id) else { return };
                    let Some(h) = me.inner.store.hosting(id).ok().flatten() else {
                        return;
                    };
                    if h.state != HostingState::Booting || !h.desired_running {
                        return;
                    }
                    match me.boot(&h).await {
                        Ok(()) => me.await_ready(id).await,
                        Err(e) => me.set_failed(id, &format!("restart failed: {e}")),
                    }
                });
            }
        }
    }

    fn on_event(&self, id: HostingId, live: &Live, ev: vm::VmEvent) {
        use vm::VmEvent as E;
        match ev {
            E::Stop => self.set_state_if(
                id,
                &[HostingState::Running, HostingState::Booting],
                HostingState::Paused,
            ),
            E::Resume => self.set_state_if(id, &[HostingState::Paused], HostingState::Running),
            E::Shutdown { guest, .. } => {
                if guest {
                    live.guest_poweroff.store(true, Ordering::SeqCst);
                }
            }
            E::Reset { .. } => {
                // A rebooting guest is not serving: show "starting" until it answers again.
                info!(hosting = %id, "guest reset");
                self.new_generation(id);
                if let Ok(Some(h)) = self.inner.store.hosting(id) {
                    if h.state == HostingState::Running {
                        self.set_state(id, HostingState::Booting, None);
                        let me = self.clone();
                        tokio::spawn(async move { me.await_ready(id).await });
                    }
                }
            }
            E::Powerdown => info!(hosting = %id, "power button pressed"),
            E::Disconnected => {}
        }
    }

    fn new_generation(&self, id: HostingId) {
        *lock(&self.inner.generations).entry(id).or_default() += 1;
    }

    fn set_state_if(&self, id: HostingId, from: &[HostingState], to: HostingState) {
        if let Ok(Some(h)) = self.inner.store.hosting(id) {
            if from.contains(&h.state) {
                self.set_state(id, to, None);
            }
        }
    }

    fn live(&self, id: HostingId) -> Option<Arc<Live>> {
        lock(&self.inner.live).get(&id).cloned()
    }

    /// Stops a VM: graceful powerdown with a deadline, then quit, then SIGKILL.
    async fn stop_live(&self, id: HostingId, live: &Arc<Live>, deadline: Duration) {
        live.requested_exit.store(true, Ordering::SeqCst);
        let q = live.qmp().await;
        match vm::graceful_stop(q.as_deref(), &live.proc, deadline).await {
            Ok(outcome) => info!(hosting = %id, ?outcome, "vm stopped"),
            Err(e) => warn!(hosting = %id, error = %super::chain(&e), "vm did not stop"),
        }
        self.forget(id, live);
        self.remove_cgroup(id).await;
    }

    async fn kill_live(&self, id: HostingId, live: &Arc<Live>) {
        live.requested_exit.store(true, Ordering::SeqCst);
        if let Err(e) = vm::lifecycle::kill(&live.proc) {
            warn!(hosting = %id, error = %super::chain(&e), "kill failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), live.proc.wait_exit()).await;
        self.forget(id, live);
        self.remove_cgroup(id).await;
    }

    fn forget(&self, id: HostingId, live: &Arc<Live>) {
        lock(&self.inner.live).remove(&id);
        if let Some(t) = lock(&live.supervisor).take() {
            t.abort();
        }
    }

    /// Kills a QEMU of this hosting that roost does not watch (found by its pidfile).
    async fn kill_unwatched(&self, id: HostingId) {
        let p = VmPaths::new(&self.inner.cfg.state_dir, id);
        if let Ok(Some(proc)) = vm::adopt(&p.pidfile, id.0) {
            let _ = vm::lifecycle::kill(&proc);
            let _ = tokio::time::timeout(Duration::from_secs(10), proc.wait_exit()).await;
        }
        self.remove_cgroup(id).await;
    }

    // ----- actions -----

    /// Carries out an admin action; returns the hosting as it stands after the request.
    pub async fn act(
        &self,
        id: HostingId,
        action: Action,
        actor: &str,
    ) -> Result<Hosting, HostingError> {
        self.rt()?;
        let h = self
            .inner
            .store
            .hosting(id)?
            .ok_or(HostingError::NotFound)?;
        let _busy = self.try_busy(id).ok_or(HostingError::Busy)?;
        match lifecycle::plan(h.state, action) {
            Plan::Refuse => {
                return Err(HostingError::InvalidState {
                    state: h.state.as_str(),
                    action: action.as_str(),
                })
            }
            Plan::Nothing => {
                self.inner.store.audit(
                    actor,
                    &format!("vm.{}", action.as_str()),
                    &id.to_string(),
                    "no-op",
                )?;
                return Ok(h);
            }
            Plan::Do => {}
        }
        self.inner.store.audit(
            actor,
            &format!("vm.{}", action.as_str()),
            &id.to_string(),
            &h.slug,
        )?;
        info!(hosting = %id, action = action.as_str(), %actor, "admin action");
        let live = self.live(id);
        match action {
            Action::Start => {
                lock(&self.inner.backoff).remove(&id);
                let h = self.inner.store.modify_hosting(id, |h| {
                    h.desired_running = true;
                    h.state = HostingState::Booting;
                    h.reason = None;
                })?;
                self.publish_route(&h);
                let p = VmPaths::new(&self.inner.cfg.state_dir, id);
                let r = if p.overlay.exists() && p.seed.exists() {
                    self.boot(&h).await
                } else {
                    self.build_and_boot(&h).await
                };
                match r {
                    Ok(()) => {
                        let me = self.clone();
                        tokio::spawn(async move { me.await_ready(id).await });
                    }
                    Err(e) => self.set_failed(id, &format!("start failed: {e}")),
                }
            }
            Action::Stop | Action::Kill => {
                let h = self
                    .inner
                    .store
                    .modify_hosting(id, |h| h.desired_running = false)?;
                self.inner.forwarders.remove(h.ssh_port).await;
                if let Some(l) = live {
                    if action == Action::Stop {
                        self.stop_live(
                            id,
                            &l,
                            Duration::from_secs(self.inner.cfg.vm.stop_timeout_secs),
                        )
                        .await;
                    } else {
                        self.kill_live(id, &l).await;
                    }
                }
                self.kill_unwatched(id).await;
                if let Ok(rt) = self.inner.runtime.as_ref() {
                    let _ = rt.net.delete_link(&h.tap).await;
                }
                self.set_state(id, HostingState::Stopped, None);
            }
            Action::Reboot | Action::Pause | Action::Resume => {
                let l = live.ok_or(HostingError::InvalidState {
                    state: h.state.as_str(),
                    action: action.as_str(),
                })?;
                let q = l
                    .qmp()
                    .await
                    .ok_or_else(|| HostingError::Internal("QMP is not connected".into()))?;
                let r = match action {
                    Action::Reboot => q.system_reset().await,
                    Action::Pause => q.stop().await,
                    _ => q.cont().await,
                };
                r.map_err(|e| HostingError::Internal(super::chain(&e)))?;
                match action {
                    Action::Pause => self.set_state(id, HostingState::Paused, None),
                    Action::Resume => self.set_state(id, HostingState::Running, None),
                    _ => {}
                }
            }
        }
        self.inner.store.hosting(id)?.ok_or(HostingError::NotFound)
    }

    // ----- delete -----

    /// Marks the hosting `deleting`, takes its routes down, and removes the rest in the
    /// background: VM (graceful, then forced), tap, files, reservations, row.
    pub async fn delete(&self, id: HostingId, actor: &str) -> Result<Hosting, HostingError> {
        let h = self
            .inner
            .store
            .modify_hosting(id, |h| {
                h.state = HostingState::Deleting;
                h.desired_running = false;
            })
            .map_err(|e| match e {
                StoreError::NoSuchHosting => HostingError::NotFound,
                e => HostingError::Store(e),
            })?;
        self.inner.routes.remove(&h.slug);
        let answer = h.clone();
        let me = self.clone();
        let actor = actor.to_owned();
        tokio::spawn(
            async move {
                // Wait for an in-flight job (creation) on this hosting to finish first.
                let busy = loop {
                    if let Some(b) = me.try_busy(id) {
                        break b;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                me.finish_delete(&h, &actor).await;
                drop(busy);
            }
            .instrument(info_span!("delete", hosting = %id)),
        );
        Ok(answer)
    }

    /// Removes what a hosting's VM may have left in the world: a QEMU nobody watches
    /// (e.g. adoption failed), its tap, its files.
    async fn remove_leftovers(&self, h: &Hosting) {
        self.kill_unwatched(h.id).await;
        if let Ok(rt) = self.inner.runtime.as_ref() {
            if let Err(e) = rt.net.delete_link(&h.tap).await {
                warn!(error = %e, tap = %h.tap, "cannot delete tap");
            }
        }
        let p = VmPaths::new(&self.inner.cfg.state_dir, h.id);
        if let Err(e) = std::fs::remove_dir_all(&p.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, dir = %p.dir.display(), "cannot remove vm files");
            }
        }
    }

    async fn finish_delete(&self, h: &Hosting, actor: &str) {
        let id = h.id;
        self.inner.routes.remove(&h.slug);
        self.inner.forwarders.remove(h.ssh_port).await;
        if let Some(l) = self.live(id) {
            self.stop_live(
                id,
                &l,
                Duration::from_secs(self.inner.cfg.vm.stop_timeout_secs.min(10)),
            )
            .await;
        }
        self.remove_leftovers(h).await;
        lock(&self.inner.backoff).remove(&id);
        match self.inner.store.remove_hosting(id, actor) {
            Ok(()) | Err(StoreError::NoSuchHosting) => info!(hosting = %id, "hosting deleted"),
            Err(e) => warn!(error = %e, "cannot remove hosting row"),
        }
        if let Err(e) = self.sync_firewall(None).await {
            warn!(error = %super::chain(&e), "cannot update the firewall");
        }
    }
}

impl Hostings {
    // ----- reconciler -----

    /// Converges the world to the store: adopts running QEMUs, restarts what should run,
    /// finishes or rolls back interrupted jobs, and removes orphans. Runs at start-up and
    /// then every `interval`.
    pub async fn reconcile(&self) {
        if self.inner.runtime.is_err() {
            return;
        }
        let hostings = match self.inner.store.hostings() {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "reconcile: cannot read hostings");
                return;
            }
        };
        for h in &hostings {
            let Some(busy) = self.try_busy(h.id) else {
                continue;
            };
            self.reconcile_one(h, busy).await;
        }
        self.reap_orphans(&hostings).await;
        self.check_firewall().await;
    }

    /// Puts the firewall back when any of its tables is gone (`nft flush ruleset`, which
    /// Debian's nftables.service runs on start and reload, removes them all).
    async fn check_firewall(&self) {
        let Ok(rt) = self.rt() else { return };
        match rt.net.firewall_missing().await {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => {
                warn!(
                    ?missing,
                    "firewall drift: roost's tables are gone; re-applying them"
                );
                if let Err(e) = self.sync_firewall(None).await {
                    warn!(error = %super::chain(&e), "cannot re-apply the firewall");
                }
            }
            Err(e) => warn!(error = %super::chain(&e), "cannot read the firewall"),
        }
    }

    /// Applies the firewall for every hosting; called once at start, before any VM is
    /// adopted or started, so that guests never run unfiltered under this daemon.
    pub(super) async fn apply_firewall_at_start(&self) {
        if self.rt().is_err() {
            return;
        }
        if let Err(e) = self.sync_firewall(None).await {
            warn!(error = %super::chain(&e), "cannot apply the firewall at start");
        }
    }

    async fn reconcile_one(&self, h: &Hosting, busy: BusyGuard) {
        let id = h.id;
        let p = VmPaths::new(&self.inner.cfg.state_dir, id);
        let watched = self.live(id).is_some();
        match h.state {
            HostingState::Deleting => {
                let me = self.clone();
                let h = h.clone();
                tokio::spawn(async move {
                    me.finish_delete(&h, "system").await;
                    drop(busy);
                });
                return;
            }
            HostingState::Provisioning => {
                // Interrupted creation: undo whatever was made and run it again.
                info!(hosting = %id, "resuming an interrupted creation");
                self.remove_leftovers(h).await;
                let me = self.clone();
                let h = h.clone();
                tokio::spawn(async move {
                    let _busy = busy;
                    me.provision(h).await;
                });
                return;
            }
            _ => {}
        }
        if watched {
            self.publish_route(h);
            return;
        }
        // Not watched: is its QEMU still there (daemon restart)?
        match vm::adopt(&p.pidfile, id.0) {
            Ok(Some(proc)) => {
                let pid = proc.pid();
                // A QEMU of an earlier daemon (or roost version) gets its cgroup limits now.
                if let Ok(rt) = self.rt() {
                    if let Err(e) = rt
                        .cgroups
                        .place(&id.to_string(), pid, &self.limits(rt.accel))
                    {
                        warn!(hosting = %id, pid, error = %super::chain(&e), "cannot move the adopted qemu into its cgroup");
                    }
                }
                let started = vm::procfs::start_time(pid).unwrap_or_else(SystemTime::now);
                let qmp = vm::Qmp::connect(&p.qmp).await.ok();
                let status = match &qmp {
                    Some(q) => q.query_status().await.ok(),
                    None => None,
                };
                info!(hosting = %id, pid, ?status, "adopted running qemu");
                self.watch(id, proc, qmp, started, &p);
                if let Err(e) = self.open_ssh(h).await {
                    warn!(hosting = %id, error = %e, "cannot reopen ssh port");
                }
                match status {
                    Some(vm::RunState::Paused) => self.set_state(id, HostingState::Paused, None),
                    Some(_) if h.state == HostingState::Booting => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let _busy = busy;
                            me.await_ready(id).await
                        });
                    }
                    Some(_) => self.set_state(id, HostingState::Running, None),
                    None => self.set_state(
                        id,
                        h.state,
                        Some("QEMU is alive but QMP does not answer".into()),
                    ),
                }
            }
            _ if h.desired_running
                && matches!(
                    h.state,
                    HostingState::Running | HostingState::Booting | HostingState::Paused
                ) =>
            {
                info!(hosting = %id, "vm should run but no qemu is there; starting it");
                self.set_state(id, HostingState::Booting, None);
                let me = self.clone();
                let h = h.clone();
                tokio::spawn(async move {
                    let _busy = busy;
                    match me.boot(&h).await {
                        Ok(()) => me.await_ready(id).await,
                        Err(e) => me.set_failed(id, &format!("start failed: {e}")),
                    }
                });
            }
            _ => self.publish_route(h),
        }
    }

    /// Removes taps, VM directories and QEMU processes that no hosting claims, and keeps
    /// serial logs under their cap.
    async fn reap_orphans(&self, hostings: &[Hosting]) {
        let Ok(rt) = self.inner.runtime.as_ref() else {
            return;
        };
        let vms_dir = paths::vms_dir(&self.inner.cfg.state_dir);
        let ids: HashSet<String> = hostings.iter().map(|h| h.id.to_string()).collect();
        for (pid, dir) in vm::procfs::qemus_under(&vms_dir) {
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
        let claimed: std::collections::BTreeSet<String> =
            hostings.iter().map(|h| h.tap.clone()).collect();
        match rt.net.orphan_taps(&claimed).await {
            Ok(names) => {
                for name in names {
                    warn!(tap = %name, "deleting orphan tap");
                    let _ = rt.net.delete_link(&name).await;
                }
            }
            Err(e) => warn!(error = %e, "cannot list taps"),
        }
        if let Ok(rd) = std::fs::read_dir(&vms_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !ids.contains(&name) {
                    warn!(dir = %e.path().display(), "removing orphan vm directory");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        // Empty cgroups of VMs that no longer exist (an occupied one cannot be removed, and
        // its QEMU was killed above).
        for name in rt.cgroups.unclaimed(&ids) {
            match rt.cgroups.remove(&name, Duration::ZERO).await {
                Ok(()) => info!(cgroup = %name, "removed orphan vm cgroup"),
                // Its killed QEMU is not reaped yet: the next pass removes it.
                Err(vm::VmError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    warn!(cgroup = %name, error = %super::chain(&e), "cannot remove orphan cgroup")
                }
            }
        }
        for h in hostings {
            let p = VmPaths::new(&self.inner.cfg.state_dir, h.id);
            let _ = vm::process::cap_serial_log(&p.serial_log, SERIAL_LOG_CAP);
        }
    }

    // ----- queries -----

    pub fn of_user(&self, user: UserId) -> Result<Option<Hosting>, HostingError> {
        Ok(self.inner.store.hostings_of(user)?.into_iter().next())
    }

    async fn status(&self, h: Hosting, owners: &HashMap<UserId, String>) -> VmStatus {
        let live = self.live(h.id);
        let (pid, uptime_secs, qmp_status) = match &live {
            Some(l) => {
                let s = match l.qmp().await {
                    Some(q) => match q.query_status().await {
                        Ok(s) => Some(run_state(s)),
                        Err(e) => Some(format!("unavailable: {e}")),
                    },
                    None => Some("unavailable: QMP not connected".into()),
                };
                (
                    Some(l.pid()),
                    l.started.elapsed().ok().map(|d| d.as_secs()),
                    s,
                )
            }
            None => (None, None, None),
        };
        VmStatus {
            owner: owners.get(&h.user).cloned().unwrap_or_default(),
            hosting: h,
            pid,
            uptime_secs,
            qmp_status,
        }
    }

    fn owners(&self) -> Result<HashMap<UserId, String>, HostingError> {
        super::offline::owners(&self.inner.store)
    }

    pub async fn vm_list(&self) -> Result<Vec<VmStatus>, HostingError> {
        let owners = self.owners()?;
        let mut out = Vec::new();
        for h in self.inner.store.hostings()? {
            out.push(self.status(h, &owners).await);
        }
        Ok(out)
    }

    pub async fn vm_detail(&self, id: HostingId) -> Result<VmDetail, HostingError> {
        let h = self
            .inner
            .store
            .hosting(id)?
            .ok_or(HostingError::NotFound)?;
        let owners = self.owners()?;
        let status = self.status(h.clone(), &owners).await;
        let proc_stats = status.pid.and_then(vm::procfs::proc_stats);
        let block_stats = match self.live(id) {
            Some(l) => match l.qmp().await {
                Some(q) => q
                    .query_blockstats()
                    .await
                    .ok()
                    .and_then(|b| serde_json::to_value(b).ok()),
                None => None,
            },
            None => None,
        };
        let counters = match self.inner.runtime.as_ref() {
            Ok(rt) => rt.net.counters(&h.tap).await,
            Err(_) => None,
        };
        let p = VmPaths::new(&self.inner.cfg.state_dir, id);
        Ok(VmDetail {
            cpu_time_secs: proc_stats.map(|s| s.cpu_time_secs),
            rss_bytes: proc_stats.map(|s| s.rss_bytes),
            block_stats,
            tap_rx_bytes: counters.map(|c| c.0),
            tap_tx_bytes: counters.map(|c| c.1),
            serial_tail: vm::process::tail_lines(&p.serial_log, SERIAL_TAIL_LINES),
            status,
        })
    }

    /// How `h` is reached from outside.
    pub fn urls(&self, h: &Hosting) -> super::urls::SiteUrls {
        let cfg = &self.inner.cfg;
        super::urls::site_urls(&cfg.domain, cfg.http.listen.port(), &h.slug, h.ssh_port)
    }

    pub fn routes_info(&self, only: Option<UserId>) -> Result<Vec<RouteInfo>, HostingError> {
        let table = self.inner.routes.snapshot();
        let mut out = Vec::new();
        for h in self.inner.store.hostings()? {
            if only.is_some_and(|u| u != h.user) {
                continue;
            }
            let r = table.get(&h.slug);
            out.push(RouteInfo {
                slug: h.slug.clone(),
                hosting_id: h.id.to_string(),
                urls: self.urls(&h),
                upstream: r.and_then(|r| r.upstream).map(|u| u.to_string()),
                ssh_port: r.and_then(|r| r.ssh).map(|s| s.0),
                status: r.map(|r| r.status.as_str()).unwrap_or("absent").to_owned(),
                live: r.is_some_and(|r| r.status == RouteStatus::Live),
            });
        }
        Ok(out)
    }

    /// Rebuilds the whole route table (and SSH listeners) from the store, on an
    /// administrator's request (audited).
    pub async fn reload_routes(&self, actor: &str) -> Result<super::ReloadDiff, HostingError> {
        let d = self.rebuild_routes().await?;
        self.inner.store.audit(
            actor,
            "proxy.reload",
            "routes",
            &format!(
                "added={:?} removed={:?} changed={:?}",
                d.added, d.removed, d.changed
            ),
        )?;
        Ok(d)
    }

    /// Rebuilds the whole route table (and SSH listeners) from the store.
    pub async fn rebuild_routes(&self) -> Result<super::ReloadDiff, HostingError> {
        let hostings = self.inner.store.hostings()?;
        let routes: Vec<Route> = hostings
            .iter()
            .filter(|h| h.state != HostingState::Deleting)
            .map(|h| self.route_for(h))
            .collect();
        let total = routes.len();
        let diff = self.inner.routes.replace(routes);
        for h in &hostings {
            if matches!(
                h.state,
                HostingState::Running | HostingState::Booting | HostingState::Paused
            ) {
                if let Err(e) = self.open_ssh(h).await {
                    warn!(hosting = %h.id, error = %e, "cannot open ssh port");
                }
            }
        }
        let unchanged = total.saturating_sub(diff.added.len() + diff.changed.len());
        Ok(super::ReloadDiff {
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            unchanged,
        })
    }
}

/// Prepares what VMs need, or says why this host cannot run them.
pub(super) async fn setup_runtime(cfg: &Config) -> Result<VmRuntime, RuntimeError> {
    let subnet = cfg
        .subnet()
        .ok_or_else(|| RuntimeError::Subnet(cfg.network.subnet.clone()))?;
    let image = vm::Image::load(&cfg.vm.image).map_err(RuntimeError::Image)?;
    let templates = match &cfg.cloudinit.templates {
        Some(dir) => cloudinit::Templates::load(dir),
        None => cloudinit::Templates::embedded(),
    }
    .map_err(RuntimeError::Templates)?;
    let (accel, why) = vm::resolve(cfg.vm.accel.into()).await;
    info!(?accel, %why, "accelerator");
    let net = NetRuntime::setup(&cfg.network.bridge, subnet)
        .await
        .map_err(RuntimeError::Network)?;
    // Each QEMU must pass through to its own (0700) directory; no one may list them.
    paths::prepare_vms_dir(&cfg.state_dir).map_err(RuntimeError::StateDir)?;
    let cgroups = if cfg.vm.cgroups {
        vm::Cgroups::discover()
    } else {
        info!("[vm] cgroups = false: QEMUs run without cgroup limits");
        vm::Cgroups::disabled()
    };
    Ok(VmRuntime {
        net,
        image,
        accel,
        templates,
        subnet,
        cgroups,
        kvm_gid: vm::confine::kvm_gid(),
    })
}

/// QEMU's own word for a run state (`running`, `paused`, ...).
fn run_state(s: vm::RunState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}").to_lowercase())
}
