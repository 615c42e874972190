//! The hosting manager's front: admission and reservation of new hostings, and the
//! commands (actions, delete) handed to each hosting's actor. It never changes a hosting
//! itself: the actor (`actor`) is the one writer of its row and owner of its QEMU.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tracing::info;

use super::actor::{Command, Ctx, Registry};
use super::lifecycle::Action;
use super::real::RealEffects;
use super::runtime::{self, VmRuntime};
use super::{capacity, CapacityReport, Created, HostingError};
use crate::cloudinit;
use crate::config::Config;
use crate::forward;
use crate::net;
use crate::proxy;
use crate::store::{Hosting, HostingId, HostingState, Store, StoreError, UserId};
use crate::vm;

pub(super) struct Inner {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub ctx: Arc<Ctx<RealEffects>>,
    /// Held from the capacity check to the reservation, so two creations cannot both take
    /// the last room.
    pub(super) admission: Mutex<()>,
    /// The serial console hubs of VMs someone is watching.
    pub consoles: super::console::Consoles,
    /// Each account's budget of costly operations.
    budget: super::budget::OperationBudget,
}

/// The manager handle; cheap to clone.
#[derive(Clone)]
pub struct Hostings {
    pub(super) inner: Arc<Inner>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hostings {
    pub(super) fn new(
        cfg: Arc<Config>,
        store: Store,
        routes: proxy::Routes,
        forwarders: forward::Forwarders,
        lifecycle: crate::metrics::LifecycleMetrics,
        runtime: Result<VmRuntime, String>,
    ) -> Hostings {
        let faults: HashSet<String> = std::env::var("ROOST_FAULTS")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            fx: Arc::new(RealEffects {
                cfg: cfg.clone(),
                store: store.clone(),
                routes,
                forwarders,
                lifecycle,
                runtime,
                presences: Default::default(),
            }),
            slots: Arc::new(Semaphore::new(cfg.limits.max_concurrent_creates)),
            faults,
            boot_timeout: Duration::from_secs(cfg.vm.boot_timeout_secs),
            stop_timeout: Duration::from_secs(cfg.vm.stop_timeout_secs),
            sleep_after: Duration::from_secs(cfg.vm.sleep_after_secs),
            registry: Registry::default(),
        });
        let budget = super::budget::OperationBudget::new(cfg.limits.operations_per_hour);
        Hostings {
            inner: Arc::new(Inner {
                cfg,
                store,
                ctx,
                admission: Mutex::new(()),
                consoles: Default::default(),
                budget,
            }),
        }
    }

    /// Spends one of `user`'s costly operations (create, delete, start, stop, reboot, a
    /// snapshot's take, restore or delete), or says how long to wait.
    pub fn spend(&self, user: UserId) -> Result<(), HostingError> {
        self.inner
            .budget
            .spend(user)
            .map_err(HostingError::RateLimited)
    }

    pub fn routes(&self) -> proxy::Routes {
        self.inner.ctx.fx.routes.clone()
    }

    pub(super) fn runtime(&self) -> Result<&VmRuntime, &String> {
        self.inner.ctx.fx.runtime.as_ref()
    }

    /// Why VM hosting is unavailable on this host, if it is.
    pub fn disabled_reason(&self) -> Option<String> {
        self.runtime().err().cloned()
    }

    pub(super) fn rt(&self) -> Result<&VmRuntime, HostingError> {
        self.runtime()
            .map_err(|r| HostingError::Unavailable(r.clone()))
    }

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
        let accel = self.runtime().map_or(vm::Accel::Tcg, |rt| rt.accel);
        let vm = capacity::VmSize {
            memory_mib: runtime::limits(cfg, accel).memory_bytes >> 20,
            disk_gib: u64::from(cfg.vm.disk_gib),
        };
        let hostings = self.inner.store.hostings()?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let snapshots = count(hostings.iter().map(|h| h.snapshots.len()).sum());
        Ok(CapacityReport {
            host,
            budget: capacity::budget(host, &limits),
            usage: capacity::Usage::of(count(hostings.len()), snapshots, vm),
            vm,
        })
    }

    /// Validates, admits and reserves (one transaction), then hands the new hosting to its
    /// actor, which builds and boots it in the background.
    pub async fn create(
        &self,
        user: UserId,
        slug: &str,
        key: Option<&str>,
        generate_key: bool,
        console_password: Option<&str>,
    ) -> Result<Created, HostingError> {
        // The slug is the login name in the VM: refuse now what the seed would refuse later.
        cloudinit::validate_username(slug).map_err(|e| {
            HostingError::InvalidName(format!(
                "your username cannot be a login name in the VM ({e}); ask the operator to rename the account"
            ))
        })?;
        // Keys: the given one, else the user's registered ones (unless a new pair is asked
        // for), else a generated pair.
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
                if registered.is_empty() || generate_key {
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
        let console_password_hash = match console_password {
            Some(pw) => {
                let pw = pw.to_owned();
                let hash =
                    tokio::task::spawn_blocking(move || cloudinit::hash_console_password(&pw))
                        .await
                        .map_err(|e| HostingError::Internal(e.to_string()))?
                        .map_err(|e| HostingError::Internal(e.to_string()))?;
                Some(hash)
            }
            None => None,
        };
        // From the capacity check to the reservation, one creation at a time.
        let _admission = lock(&self.inner.admission);
        let report = self.capacity()?;
        capacity::admit(&report.budget, &report.usage, report.vm).map_err(|r| match r {
            capacity::Refusal::Disk { .. } => HostingError::DiskFull(r.to_string()),
            r => HostingError::NoCapacity(r.to_string()),
        })?;
        let rt = self.rt()?;
        let cfg = &self.inner.cfg;
        vm::disk::check_free_space(
            &cfg.state_dir,
            u64::from(cfg.vm.disk_gib) << 30,
            u64::from(cfg.vm.disk_reserve_gib) << 30,
        )
        .map_err(|e| match e {
            vm::VmError::DiskFull { .. } => HostingError::DiskFull(e.to_string()),
            e => HostingError::Internal(e.to_string()),
        })?;
        // Reserved under the registry's lock, so the reconciler never meets the new row
        // without its actor.
        let reserve = || {
            let h = self.reserve(rt, user, slug, keys, console_password_hash)?;
            Ok((h.clone(), h))
        };
        let ctx = &self.inner.ctx;
        let h = ctx
            .registry
            .spawn_with(ctx, reserve, Some(Command::Provision))?
            .ok_or_else(|| HostingError::Internal("a new hosting already had an actor".into()))?;
        info!(hosting = %h.id, slug = %h.slug, ip = %h.ip, ssh_port = h.ssh_port, "hosting reserved");
        Ok(Created {
            hosting: h,
            private_key,
        })
    }

    /// The row, with an address, a port and a tap name taken in one transaction.
    fn reserve(
        &self,
        rt: &VmRuntime,
        user: UserId,
        slug: &str,
        keys: Vec<String>,
        console_password_hash: Option<String>,
    ) -> Result<Hosting, HostingError> {
        let ports = self.inner.cfg.ssh.port_range.ports();
        let id = HostingId::new();
        let now = crate::store::now();
        self.inner
            .store
            .reserve_hosting(
                user,
                rt.subnet.hosts(),
                ports,
                forward::port_is_free,
                |ip, port| Hosting {
                    id,
                    user,
                    slug: slug.to_owned(),
                    state: HostingState::Provisioning,
                    reason: None,
                    desired_running: true,
                    ip,
                    ssh_port: port,
                    mac: net::mac_for_ip(ip).to_string(),
                    tap: net::tap_name(&id.0.to_bytes()),
                    incarnation: 1,
                    ssh_keys: keys,
                    console_password_hash,
                    snapshots: Vec::new(),
                    sleep_when_idle: false,
                    asleep: false,
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
            })
    }

    /// The actor of `id`, started when none runs (then, with a VM runtime, it first looks
    /// for its QEMU).
    fn actor(&self, id: HostingId) -> Result<tokio::sync::mpsc::Sender<Command>, HostingError> {
        let ctx = &self.inner.ctx;
        loop {
            if let Some(tx) = ctx.registry.sender(id) {
                return Ok(tx);
            }
            let first = self.rt().is_ok().then_some(Command::Recover { done: None });
            self.spawn_actor(id, first)?;
        }
    }

    /// Starts the actor of the existing hosting `id` with `first`, unless one runs; true
    /// when it started one. The row is read under the registry's lock, so a hosting
    /// deleted meanwhile gets no actor (`NotFound`).
    pub(super) fn spawn_actor(
        &self,
        id: HostingId,
        first: Option<Command>,
    ) -> Result<bool, HostingError> {
        let ctx = &self.inner.ctx;
        let row = || {
            let h = self
                .inner
                .store
                .hosting(id)?
                .ok_or(HostingError::NotFound)?;
            Ok((h, ()))
        };
        Ok(ctx.registry.spawn_with(ctx, row, first)?.is_some())
    }

    /// Hands `make(reply)` to the hosting's actor and waits for its answer.
    pub(super) async fn ask(
        &self,
        id: HostingId,
        make: impl FnOnce(oneshot::Sender<Result<Hosting, HostingError>>) -> Command,
    ) -> Result<Hosting, HostingError> {
        let (reply, answer) = oneshot::channel();
        self.actor(id)?
            .send(make(reply))
            .await
            .map_err(|_| HostingError::NotFound)?;
        // An actor that ends without answering was deleting the hosting.
        answer.await.map_err(|_| HostingError::NotFound)?
    }

    /// Carries out an admin action; returns the hosting as it stands after the request.
    pub async fn act(
        &self,
        id: HostingId,
        action: Action,
        actor: &str,
    ) -> Result<Hosting, HostingError> {
        self.rt()?;
        let actor = actor.to_owned();
        self.ask(id, |reply| Command::Act {
            action,
            actor,
            reply,
        })
        .await
    }

    /// Marks the hosting `deleting` (its routes go at once) and removes the rest in the
    /// background: VM (graceful, then forced), tap, files, reservations, row.
    pub async fn delete(&self, id: HostingId, actor: &str) -> Result<Hosting, HostingError> {
        let actor = actor.to_owned();
        self.ask(id, |reply| Command::Delete { actor, reply }).await
    }
}
