//! The fake effect boundary: a small in-memory world of directories, taps, cgroups, SSH
//! ports and VMs that the actor's tests crash, pause and query.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};

use super::super::*;
use crate::hosting::effects::StepError;
use crate::hosting::lifecycle::Action;
use crate::store::{Hosting, HostingId, HostingState};

#[derive(Default)]
pub(super) struct World {
    pub(super) log: Vec<String>,
    pub(super) fail: HashSet<&'static str>,
    pub(super) dirs: HashSet<HostingId>,
    pub(super) taps: HashSet<String>,
    pub(super) cgroups: HashSet<HostingId>,
    pub(super) ssh: HashSet<u16>,
    pub(super) vms: Vec<FakeVm>,
    /// What a readiness probe finds: web, ssh.
    pub(super) answers: (bool, bool),
    /// A QEMU from before a daemon restart, found by `adopt`.
    pub(super) adoptable: Option<FakeVm>,
    pub(super) routes: HashMap<String, (HostingState, u64)>,
    /// QEMU exits counted as crashes (the metrics' `crashed`).
    pub(super) crashes: usize,
    /// The snapshots on the (one) disk the snapshot tests use.
    pub(super) snapshots: Vec<String>,
    /// Each hosting's presence (as the real boundary keeps one per hosting).
    pub(super) presences: HashMap<HostingId, Arc<crate::presence::Presence>>,
    /// The adoptable QEMU is paused (`query-status`), not running.
    pub(super) adoptable_paused: bool,
}

#[derive(Clone)]
pub(super) struct Fake(pub(super) Arc<Mutex<World>>);

impl Fake {
    pub(super) fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().expect("world")
    }
    pub(super) fn did(&self, what: impl Into<String>) {
        self.w().log.push(what.into());
    }
    pub(super) fn step(&self, step: &'static str) -> Result<(), StepError> {
        self.did(step);
        if self.w().fail.contains(step) {
            Err(StepError::new(step, "fake failure"))
        } else {
            Ok(())
        }
    }
    pub(super) fn live_vms(&self) -> usize {
        self.w().vms.iter().filter(|v| v.alive()).count()
    }
    pub(super) fn spawned(&self) -> usize {
        self.w().vms.len()
    }
    pub(super) fn vm(&self, i: usize) -> FakeVm {
        self.w().vms[i].clone()
    }
    /// Nothing of any VM is left in the world.
    pub(super) fn assert_empty(&self, what: &str) {
        let w = self.w();
        assert!(w.taps.is_empty(), "{what}: taps {:?}", w.taps);
        assert!(w.dirs.is_empty(), "{what}: dirs {:?}", w.dirs);
        assert!(w.cgroups.is_empty(), "{what}: cgroups");
        assert!(w.ssh.is_empty(), "{what}: ssh ports {:?}", w.ssh);
        assert!(w.vms.iter().all(|v| !v.alive()), "{what}: a vm runs");
    }
}

#[derive(Clone)]
pub(super) struct FakeVm(pub(super) Arc<VmState>);

pub(super) struct VmState {
    pub(super) pid: i32,
    pub(super) alive: watch::Sender<bool>,
    /// QMP `stop` was sent (and no `cont` since).
    pub(super) paused: std::sync::atomic::AtomicBool,
    pub(super) events: broadcast::Sender<VmEvent>,
    pub(super) world: Fake,
}

impl FakeVm {
    pub(super) fn new(world: &Fake, pid: i32) -> FakeVm {
        FakeVm(Arc::new(VmState {
            pid,
            alive: watch::channel(true).0,
            paused: Default::default(),
            events: broadcast::channel(16).0,
            world: world.clone(),
        }))
    }
    pub(super) fn alive(&self) -> bool {
        *self.0.alive.borrow()
    }
    /// `kill -9` from outside.
    pub(super) fn crash(&self) {
        self.0.alive.send_replace(false);
    }
    pub(super) fn event(&self, ev: VmEvent) {
        let _ = self.0.events.send(ev);
    }
}

impl Vm for FakeVm {
    fn pid(&self) -> i32 {
        self.0.pid
    }
    fn started(&self) -> SystemTime {
        SystemTime::now()
    }
    async fn exited(&self) {
        let mut rx = self.0.alive.subscribe();
        let _ = rx.wait_for(|alive| !*alive).await;
    }
    async fn events(&self) -> Option<broadcast::Receiver<VmEvent>> {
        Some(self.0.events.subscribe())
    }
    async fn qmp(&self, action: Action) -> Result<(), crate::hosting::effects::VmOpError> {
        self.0.world.did(format!("qmp {}", action.as_str()));
        match action {
            Action::Pause => {
                self.0
                    .paused
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.event(VmEvent::Stop)
            }
            Action::Resume => {
                self.0
                    .paused
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                self.event(VmEvent::Resume)
            }
            _ => self.event(VmEvent::Reset { guest: false }),
        }
        Ok(())
    }
    async fn snapshot(
        &self,
        take: bool,
        name: &str,
    ) -> Result<(), crate::hosting::effects::VmOpError> {
        let w = &self.0.world;
        w.did(format!(
            "qmp snapshot {} {name}",
            if take { "take" } else { "delete" }
        ));
        if w.w().fail.contains("qmp snapshot") {
            return Err(crate::hosting::effects::VmOpError::NoQmp);
        }
        let mut w = w.w();
        match take {
            true => w.snapshots.push(name.into()),
            false => w.snapshots.retain(|s| s != name),
        }
        Ok(())
    }
    async fn status(&self) -> Result<String, crate::hosting::effects::VmOpError> {
        Ok(
            match self.0.paused.load(std::sync::atomic::Ordering::SeqCst) {
                true => "paused".into(),
                false => "running".into(),
            },
        )
    }
    async fn block_stats(&self) -> Option<serde_json::Value> {
        None
    }
    async fn stop(&self, _deadline: Duration) {
        self.0.world.did("stop");
        self.0.alive.send_replace(false);
    }
    async fn kill(&self) {
        self.0.world.did("kill");
        self.0.alive.send_replace(false);
    }
}

impl Effects for Fake {
    type Vm = FakeVm;
    type Tap = String;

    fn crashed(&self) {
        self.w().crashes += 1;
    }

    fn files_exist(&self, id: HostingId) -> bool {
        self.w().dirs.contains(&id)
    }

    async fn disk_snapshot(
        &self,
        _h: &Hosting,
        op: crate::vm::snapshot::OfflineOp,
        name: &str,
    ) -> Result<(), StepError> {
        use crate::vm::snapshot::OfflineOp;
        self.step("snapshot")?;
        self.did(format!("qemu-img {op:?} {name}"));
        let mut w = self.w();
        let has = w.snapshots.iter().any(|s| s == name);
        match op {
            OfflineOp::Create if has => return Err(StepError::new("snapshot", "exists")),
            OfflineOp::Create => w.snapshots.push(name.into()),
            _ if !has => return Err(StepError::new("snapshot", "not found")),
            OfflineOp::Delete => w.snapshots.retain(|s| s != name),
            OfflineOp::Revert => {}
        }
        Ok(())
    }

    async fn disk_snapshots(&self, _h: &Hosting) -> Result<Vec<String>, StepError> {
        Ok(self.w().snapshots.clone())
    }
    fn make_dir(&self, h: &Hosting) -> Result<bool, StepError> {
        self.step("directory")?;
        Ok(self.w().dirs.insert(h.id))
    }
    async fn overlay(&self, _h: &Hosting) -> Result<(), StepError> {
        self.step("overlay")
    }
    fn seed(&self, _h: &Hosting) -> Result<(), StepError> {
        self.step("seed")
    }
    fn remove_files(&self, id: HostingId) {
        self.did("remove_files");
        self.w().dirs.remove(&id);
    }
    async fn tap(&self, h: &Hosting) -> Result<String, StepError> {
        self.step("tap")?;
        self.w().taps.insert(h.tap.clone());
        Ok(h.tap.clone())
    }
    async fn delete_tap(&self, h: &Hosting) {
        self.w().taps.remove(&h.tap);
    }
    async fn firewall(&self, _h: Option<&Hosting>) -> Result<(), StepError> {
        self.step("firewall")
    }
    async fn spawn(&self, h: &Hosting, _tap: String) -> Result<FakeVm, StepError> {
        self.step("qemu")?;
        let vm = FakeVm::new(self, 1000 + self.spawned() as i32);
        let mut w = self.w();
        w.cgroups.insert(h.id);
        w.vms.push(vm.clone());
        Ok(vm)
    }
    async fn remove_cgroup(&self, id: HostingId) {
        self.w().cgroups.remove(&id);
    }
    async fn kill_unwatched(&self, _id: HostingId) {
        if let Some(vm) = self.w().adoptable.take() {
            vm.crash();
        }
    }
    async fn open_ssh(&self, h: &Hosting) -> Result<(), StepError> {
        self.step("routes")?;
        self.w().ssh.insert(h.ssh_port);
        Ok(())
    }
    async fn close_ssh(&self, h: &Hosting) {
        self.w().ssh.remove(&h.ssh_port);
    }
    fn publish(&self, h: &Hosting, generation: u64) {
        let mut w = self.w();
        if h.state == HostingState::Deleting {
            w.routes.remove(&h.slug);
        } else {
            w.routes.insert(h.slug.clone(), (h.state, generation));
        }
    }
    fn presence(&self, id: HostingId) -> Arc<crate::presence::Presence> {
        self.w()
            .presences
            .entry(id)
            .or_insert_with(crate::presence::Presence::new)
            .clone()
    }
    async fn sync_clock(&self, _h: &Hosting) -> Result<(), StepError> {
        self.step("clock")
    }
    async fn set_password(&self, _h: &Hosting, crypted: &str) -> Result<(), StepError> {
        self.step("agent")?;
        self.did(format!("password {crypted}"));
        Ok(())
    }
    async fn adopt(&self, _h: &Hosting) -> Option<(FakeVm, Option<RunState>)> {
        let vm = self.w().adoptable.take()?;
        self.w().vms.push(vm.clone());
        let status = if self.w().adoptable_paused {
            RunState::Paused
        } else {
            RunState::Running
        };
        Some((vm, Some(status)))
    }
    fn probe(
        &self,
        _ip: Ipv4Addr,
        known: (bool, bool),
    ) -> impl std::future::Future<Output = (bool, bool)> + Send + 'static {
        let a = self.w().answers;
        async move { (known.0 || a.0, known.1 || a.1) }
    }
}
