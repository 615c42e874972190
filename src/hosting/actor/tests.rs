//! The actor and its saga driven through a fake effect boundary: a small in-memory world
//! of directories, taps, cgroups, SSH ports and VMs that tests crash, pause and query.
//! Time is tokio's paused clock, so boot deadlines and crash backoff pass at once.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::*;
use crate::hosting::lifecycle::Action;
use crate::store::{Hosting, HostingId, HostingState, Store};
use fake::{Fake, FakeVm, World};

mod fake;
mod guest;
mod sleep;
mod snapshots;

/// The idle period of the sleep tests.
const SLEEP_AFTER: Duration = Duration::from_secs(60);

struct Rig {
    ctx: Arc<Ctx<Fake>>,
    fx: Fake,
    store: Store,
    _dir: tempfile::TempDir,
}

fn rig(slots: usize) -> Rig {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("store");
    let fx = Fake(Arc::new(Mutex::new(World::default())));
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        fx: Arc::new(fx.clone()),
        slots: Arc::new(Semaphore::new(slots)),
        faults: HashSet::new(),
        boot_timeout: Duration::from_secs(300),
        stop_timeout: Duration::from_secs(30),
        sleep_after: SLEEP_AFTER,
        registry: Registry::default(),
    });
    Rig {
        ctx,
        fx,
        store,
        _dir: dir,
    }
}

impl Rig {
    /// A reserved hosting in `state` (no actor yet).
    fn row(&self, slug: &str, state: HostingState) -> Hosting {
        let id = HostingId::new();
        let n = self.store.hostings().expect("hostings").len() as u8;
        let ip = Ipv4Addr::new(10, 77, 0, 2 + n);
        let owner = self
            .store
            .create_user(
                crate::store::NewUser {
                    username: slug,
                    email: None,
                    password_hash: "$argon2id$x",
                    role: crate::store::Role::User,
                },
                "test",
            )
            .expect("owner");
        self.store
            .reserve_hosting(
                owner.id,
                [ip],
                22000 + u16::from(n)..=22000 + u16::from(n),
                |_| true,
                |ip, port| Hosting {
                    id,
                    user: owner.id,
                    slug: slug.into(),
                    state,
                    reason: None,
                    desired_running: true,
                    ip,
                    ssh_port: port,
                    mac: crate::net::mac_for_ip(ip).to_string(),
                    tap: format!("rt{slug}"),
                    incarnation: 1,
                    ssh_keys: vec![],
                    console_password_hash: None,
                    snapshots: Vec::new(),
                    sleep_when_idle: false,
                    asleep: false,
                    created_at: crate::store::now(),
                    updated_at: crate::store::now(),
                },
                "test",
            )
            .expect("reserve")
    }

    fn start(&self, h: &Hosting, first: Command) {
        let row = h.clone();
        self.ctx
            .registry
            .spawn_with(&self.ctx, move || Ok((row, ())), Some(first))
            .expect("spawn")
            .expect("a new actor");
    }

    /// A new hosting, provisioned.
    fn create(&self, slug: &str) -> Hosting {
        let h = self.row(slug, HostingState::Provisioning);
        self.start(&h, Command::Provision);
        h
    }

    fn state(&self, id: HostingId) -> Option<HostingState> {
        self.store.hosting(id).expect("store").map(|h| h.state)
    }

    fn reason(&self, id: HostingId) -> String {
        self.store
            .hosting(id)
            .expect("store")
            .and_then(|h| h.reason)
            .unwrap_or_default()
    }

    async fn until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn until_state(&self, id: HostingId, want: HostingState) {
        self.until(&format!("{want:?}"), || self.state(id) == Some(want))
            .await;
    }

    async fn act(&self, id: HostingId, action: Action) -> Result<Hosting, HostingError> {
        let (reply, answer) = oneshot::channel();
        self.ctx
            .registry
            .sender(id)
            .expect("actor")
            .send(Command::Act {
                action,
                actor: "admin".into(),
                reply,
            })
            .await
            .expect("send");
        answer.await.expect("answer")
    }

    async fn delete(&self, id: HostingId) -> Hosting {
        let (reply, answer) = oneshot::channel();
        self.ctx
            .registry
            .sender(id)
            .expect("actor")
            .send(Command::Delete {
                actor: "owner".into(),
                reply,
            })
            .await
            .expect("send");
        answer.await.expect("answer").expect("deleting")
    }
}

#[tokio::test(start_paused = true)]
async fn a_creation_runs_the_saga_in_order_and_ends_running() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("alice");
    r.until_state(h.id, HostingState::Running).await;
    {
        let w = r.fx.w();
        assert_eq!(
            w.log,
            [
                "directory",
                "overlay",
                "seed",
                "tap",
                "firewall",
                "qemu",
                "routes"
            ]
        );
        assert!(w.taps.contains(&h.tap) && w.ssh.contains(&h.ssh_port));
        assert_eq!(w.routes["alice"], (HostingState::Running, 1));
    }
    assert_eq!(r.fx.live_vms(), 1);
    // The creation slot is free again: a second creation goes through.
    r.fx.w().answers = (true, true);
    let b = r.create("bob");
    r.until_state(b.id, HostingState::Running).await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_each_creation_step_is_undone_and_named() {
    for step in [
        "directory",
        "overlay",
        "seed",
        "tap",
        "firewall",
        "qemu",
        "routes",
    ] {
        let r = rig(1);
        r.fx.w().fail.insert(step);
        let h = r.create("carol");
        r.until_state(h.id, HostingState::Failed).await;
        assert!(
            r.reason(h.id).starts_with(&format!("{step}: ")),
            "{step}: {}",
            r.reason(h.id)
        );
        r.fx.assert_empty(step);
        // The slot was given back, and deleting the failed hosting removes its row.
        r.fx.w().fail.clear();
        let d = r.delete(h.id).await;
        assert_eq!(d.state, HostingState::Deleting);
        r.until("row removed", || r.state(h.id).is_none()).await;
        r.until("actor ended", || r.ctx.registry.is_empty()).await;
        let again = r.create("carol2");
        r.until_state(again.id, HostingState::Booting).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_roost_faults_hook_fails_the_named_step() {
    let mut r = rig(1);
    Arc::get_mut(&mut r.ctx).expect("sole owner").faults = ["seed".to_owned()].into();
    let h = r.create("dave");
    r.until_state(h.id, HostingState::Failed).await;
    assert_eq!(r.reason(h.id), "seed: injected fault");
    r.fx.assert_empty("seed fault");
}

#[tokio::test(start_paused = true)]
async fn a_qemu_killed_while_booting_is_restarted() {
    let r = rig(1);
    r.fx.w().answers = (true, false); // the site answers, SSH not yet
    let h = r.create("erin");
    r.until_state(h.id, HostingState::Booting).await;
    r.until("first qemu", || r.fx.spawned() == 1).await;
    r.fx.vm(0).crash();
    r.until("restarted", || r.fx.spawned() == 2).await;
    assert_eq!(r.state(h.id), Some(HostingState::Booting));
    r.fx.w().answers = (true, true);
    r.until_state(h.id, HostingState::Running).await;
    assert_eq!(r.fx.live_vms(), 1);
    assert_eq!(r.fx.w().routes["erin"], (HostingState::Running, 2));
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_gives_up_after_five_crashes() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("frank");
    r.until_state(h.id, HostingState::Running).await;
    for i in 0..5 {
        r.until(&format!("vm {i}"), || r.fx.spawned() == i + 1)
            .await;
        r.fx.vm(i).crash();
    }
    r.until_state(h.id, HostingState::Failed).await;
    assert!(r.reason(h.id).contains("5 times"), "{}", r.reason(h.id));
    assert_eq!(r.fx.spawned(), 5, "no sixth start");
    assert_eq!(r.fx.live_vms(), 0);
    assert!(r.fx.w().ssh.is_empty());
    assert_eq!(r.fx.w().crashes, 5, "each crash counted once");
}

#[tokio::test(start_paused = true)]
async fn a_guest_poweroff_is_no_crash() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("gina");
    r.until_state(h.id, HostingState::Running).await;
    let vm = r.fx.vm(0);
    vm.event(VmEvent::Shutdown {
        guest: true,
        reason: "guest-shutdown".into(),
    });
    // The QMP event reaches the actor before the process is seen gone, as with QEMU (the
    // clock is paused: this returns once every task, the actor's too, is idle).
    tokio::time::sleep(Duration::from_millis(10)).await;
    vm.crash();
    r.until("the exit handled", || r.fx.live_vms() == 0).await;
    r.until_state(h.id, HostingState::Stopped).await;
    assert_eq!(r.fx.w().crashes, 0);
    // Nor is a kill an administrator asked for.
    r.act(h.id, Action::Start).await.expect("start");
    r.until_state(h.id, HostingState::Running).await;
    r.act(h.id, Action::Kill).await.expect("kill");
    r.until("killed", || r.fx.live_vms() == 0).await;
    assert_eq!(r.fx.w().crashes, 0);
}

#[tokio::test(start_paused = true)]
async fn delete_while_waiting_for_a_creation_slot() {
    let r = rig(0);
    let h = r.create("gina");
    let d = r.delete(h.id).await;
    assert_eq!(d.state, HostingState::Deleting);
    r.until("row removed", || r.state(h.id).is_none()).await;
    r.until("actor ended", || r.ctx.registry.is_empty()).await;
    assert_eq!(r.fx.spawned(), 0);
    r.fx.assert_empty("delete before slot");
}

#[tokio::test(start_paused = true)]
async fn delete_while_booting_stops_the_vm_and_frees_everything() {
    let r = rig(1);
    let h = r.create("hank");
    r.until_state(h.id, HostingState::Booting).await;
    r.delete(h.id).await;
    r.until("row removed", || r.state(h.id).is_none()).await;
    r.fx.assert_empty("delete while booting");
    assert!(!r.fx.w().routes.contains_key("hank"));
    assert!(r.fx.w().log.contains(&"stop".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn stop_during_boot_and_actions_while_creating_are_answered_in_turn() {
    let r = rig(0);
    let h = r.create("ivy");
    // Waiting for a slot: the action is refused by the state, not by a busy flag.
    let e = r.act(h.id, Action::Stop).await.expect_err("refused");
    assert!(
        matches!(
            e,
            HostingError::InvalidState {
                state: "provisioning",
                ..
            }
        ),
        "{e}"
    );
    r.ctx.slots.add_permits(1);
    r.until_state(h.id, HostingState::Booting).await;
    let after = r.act(h.id, Action::Stop).await.expect("stop");
    assert_eq!(
        (after.state, after.desired_running),
        (HostingState::Stopped, false)
    );
    r.fx.w().answers = (true, true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        r.state(h.id),
        Some(HostingState::Stopped),
        "no late readiness"
    );
    assert_eq!(r.fx.live_vms(), 0);
    assert!(r.fx.w().taps.is_empty() && r.fx.w().ssh.is_empty());
    // Start reuses the disk: no directory, overlay or seed step.
    r.fx.w().log.clear();
    r.act(h.id, Action::Start).await.expect("start");
    r.until_state(h.id, HostingState::Running).await;
    assert_eq!(r.fx.w().log, ["tap", "firewall", "qemu", "routes"]);
}

#[tokio::test(start_paused = true)]
async fn a_reset_while_running_waits_for_the_guest_again() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("jack");
    r.until_state(h.id, HostingState::Running).await;
    r.fx.w().answers = (false, false);
    r.act(h.id, Action::Reboot).await.expect("reboot");
    r.until_state(h.id, HostingState::Booting).await;
    assert_eq!(r.fx.w().routes["jack"], (HostingState::Booting, 2));
    r.fx.w().answers = (true, true);
    r.until_state(h.id, HostingState::Running).await;
    assert_eq!(r.fx.spawned(), 1, "a reset is not a new process");
    // Pause and resume go through QMP and its events.
    let p = r.act(h.id, Action::Pause).await.expect("pause");
    assert_eq!(p.state, HostingState::Paused);
    r.act(h.id, Action::Resume).await.expect("resume");
    r.until_state(h.id, HostingState::Running).await;
}

#[tokio::test(start_paused = true)]
async fn adoption_after_a_daemon_restart() {
    let r = rig(1);
    // A running hosting whose QEMU outlived the daemon is adopted, not started again.
    let a = r.row("kate", HostingState::Running);
    let old = FakeVm::new(&r.fx, 77);
    r.fx.w().adoptable = Some(old.clone());
    let (done, seen) = oneshot::channel();
    r.start(&a, Command::Recover { done: Some(done) });
    seen.await.expect("recovered");
    assert_eq!(r.state(a.id), Some(HostingState::Running));
    assert_eq!(r.ctx.registry.vm(a.id).map(|v| v.pid()), Some(77));
    assert!(r.fx.w().ssh.contains(&a.ssh_port));
    assert!(!r.fx.w().log.contains(&"qemu".to_owned()));
    // Its crash is handled like any other.
    old.crash();
    r.until("restarted", || r.fx.spawned() == 2).await;
    // One that should run but whose QEMU is gone is started; a stopped one stays down.
    let b = r.row("liam", HostingState::Running);
    let c = r.row("mia", HostingState::Stopped);
    r.fx.w().answers = (true, true);
    let (done_b, seen_b) = oneshot::channel();
    let (done_c, seen_c) = oneshot::channel();
    r.start(&b, Command::Recover { done: Some(done_b) });
    r.start(&c, Command::Recover { done: Some(done_c) });
    seen_b.await.expect("recovered");
    seen_c.await.expect("recovered");
    r.until_state(b.id, HostingState::Running).await;
    assert_eq!(r.fx.spawned(), 3, "liam started again");
    assert_eq!(r.state(c.id), Some(HostingState::Stopped));
    // An interrupted creation is undone (its leftover QEMU killed) and run again.
    let d = r.row("noah", HostingState::Provisioning);
    let leftover = FakeVm::new(&r.fx, 99);
    r.fx.w().adoptable = Some(leftover.clone());
    r.start(&d, Command::Recover { done: None });
    r.until_state(d.id, HostingState::Running).await;
    assert!(!leftover.alive(), "{:?}", r.fx.w().log);
}
