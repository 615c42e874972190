//! Sleeping while idle through the actor: only when the owner allows it, never during a
//! visit, woken by a visitor's ring with the guest's clock set, not confused with an
//! administrator's pause, and still asleep (and wakeable) after a daemon restart.

use super::*;
use crate::hosting::core::ASLEEP;
use crate::hosting::effects::Effects;
use crate::presence::Presence;

impl Rig {
    async fn set_sleep(&self, id: HostingId, enabled: bool) -> Result<Hosting, HostingError> {
        let (reply, answer) = oneshot::channel();
        self.ctx
            .registry
            .sender(id)
            .expect("actor")
            .send(Command::SetSleep { enabled, reply })
            .await
            .expect("send");
        answer.await.expect("answer")
    }

    fn asleep(&self, id: HostingId) -> bool {
        self.store
            .hosting(id)
            .expect("store")
            .is_some_and(|h| h.asleep)
    }

    fn presence(&self, id: HostingId) -> Arc<Presence> {
        self.fx.presence(id)
    }

    fn count(&self, what: &str) -> usize {
        self.fx.w().log.iter().filter(|l| *l == what).count()
    }

    async fn running(&self, slug: &str) -> Hosting {
        self.fx.w().answers = (true, true);
        let h = self.create(slug);
        self.until_state(h.id, HostingState::Running).await;
        h
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_vm_sleeps_only_when_allowed_and_a_visit_wakes_it() {
    let r = rig(1);
    let h = r.running("pia").await;
    // Not allowed by its owner: it stays awake however long nobody visits.
    tokio::time::sleep(SLEEP_AFTER * 3).await;
    assert_eq!(r.state(h.id), Some(HostingState::Running));
    assert_eq!(r.count("qmp pause"), 0);

    let got = r.set_sleep(h.id, true).await.expect("allow");
    assert!(got.sleep_when_idle && !got.asleep);
    r.until("asleep", || r.asleep(h.id)).await;
    assert_eq!(r.state(h.id), Some(HostingState::Paused));
    assert_eq!(r.reason(h.id), ASLEEP);
    assert_eq!(r.count("qmp pause"), 1);
    let p = r.presence(h.id);
    assert!(p.asleep(), "visitors are told to ring");

    // A visitor rings and is let through once the VM runs, its clock set again.
    let visit = p.enter();
    assert!(p.wake(Duration::from_secs(15)).await, "woken");
    assert_eq!(r.state(h.id), Some(HostingState::Running));
    assert!(!r.asleep(h.id));
    r.until("clock set", || r.count("clock") == 1).await;
    let log = r.fx.w().log.clone();
    let resume = log.iter().position(|l| l == "qmp resume").expect("resumed");
    assert_eq!(log[resume + 1], "clock", "{log:?}");

    // While a visit lasts the VM stays awake.
    tokio::time::sleep(SLEEP_AFTER * 3).await;
    assert_eq!(r.state(h.id), Some(HostingState::Running));
    drop(visit);
    r.until("asleep again", || r.asleep(h.id)).await;
    assert_eq!(r.count("qmp pause"), 2);

    // Turning it off wakes it, and it stays awake.
    let got = r.set_sleep(h.id, false).await.expect("forbid");
    assert!(!got.sleep_when_idle && !got.asleep);
    assert_eq!(got.state, HostingState::Running);
    assert!(!p.asleep());
    tokio::time::sleep(SLEEP_AFTER * 3).await;
    assert_eq!(r.state(h.id), Some(HostingState::Running));
    assert_eq!(r.count("qmp pause"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_administrators_pause_is_not_a_sleep_and_no_visit_undoes_it() {
    let r = rig(1);
    let h = r.running("quin").await;
    r.set_sleep(h.id, true).await.expect("allow");
    let p = r.presence(h.id);
    // Paused by an administrator while awake: visitors do not ring, nothing wakes it.
    r.act(h.id, Action::Pause).await.expect("pause");
    assert_eq!(r.state(h.id), Some(HostingState::Paused));
    assert!(!r.asleep(h.id) && !p.asleep());
    tokio::time::sleep(SLEEP_AFTER * 3).await;
    assert_eq!(r.state(h.id), Some(HostingState::Paused));
    // Resumed, it falls asleep again; paused by an administrator while asleep, it is held.
    r.act(h.id, Action::Resume).await.expect("resume");
    r.until("asleep", || r.asleep(h.id)).await;
    let held = r.act(h.id, Action::Pause).await.expect("pause");
    assert_eq!(held.state, HostingState::Paused);
    assert!(!held.asleep && !p.asleep(), "{held:?}");
    assert_eq!(held.reason, None);
    // A stop of a sleeping VM is an ordinary stop: the guest runs again first, so that it
    // hears the power button instead of sitting out the whole stop deadline.
    r.act(h.id, Action::Resume).await.expect("resume");
    r.until("asleep", || r.asleep(h.id)).await;
    r.act(h.id, Action::Stop).await.expect("stop");
    assert_eq!(r.state(h.id), Some(HostingState::Stopped));
    assert!(!r.asleep(h.id) && !p.asleep());
    let log = r.fx.w().log.clone();
    assert_eq!(log[log.len() - 2..], ["qmp resume", "stop"], "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn a_sleeping_vm_found_after_a_daemon_restart_stays_asleep_and_wakes_on_a_visit() {
    let r = rig(1);
    let mut row = r.row("rosa", HostingState::Paused);
    row = r
        .store
        .modify_hosting(row.id, |h| {
            h.asleep = true;
            h.sleep_when_idle = true;
            h.reason = Some(ASLEEP.into());
        })
        .expect("asleep row");
    let old = FakeVm::new(&r.fx, 78);
    r.fx.w().adoptable = Some(old);
    r.fx.w().adoptable_paused = true;
    let (done, seen) = oneshot::channel();
    r.start(&row, Command::Recover { done: Some(done) });
    seen.await.expect("recovered");
    assert_eq!(r.state(row.id), Some(HostingState::Paused));
    assert!(r.asleep(row.id));
    assert_eq!(r.reason(row.id), ASLEEP);
    let p = r.presence(row.id);
    assert!(p.asleep());
    let _visit = p.enter();
    assert!(p.wake(Duration::from_secs(15)).await);
    assert_eq!(r.state(row.id), Some(HostingState::Running));
}
