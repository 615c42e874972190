use super::*;
use HostingState as S;

const BOOT: Duration = Duration::from_secs(300);

fn machine(state: HostingState) -> Machine {
    Machine::new(state, None, true, BOOT)
}

/// A hosting that was created and answers: running, with its VM.
fn running(t: Instant) -> Machine {
    let mut m = machine(S::Provisioning);
    m.step(Event::Provision, t).expect("provision");
    m.step(Event::SlotGranted, t).expect("slot");
    m.step(Event::Started, t).expect("started");
    m.step(
        Event::Probed {
            web: true,
            ssh: true,
        },
        t,
    )
    .expect("ready");
    assert_eq!(m.state, S::Running);
    m
}

#[test]
fn creation_waits_for_a_slot_then_boots_until_both_services_answer() {
    let t = Instant::now();
    let mut m = machine(S::Provisioning);
    assert_eq!(m.step(Event::Provision, t).expect("ok").effects, vec![]);
    assert_eq!(m.slot, Slot::Wanted);
    let d = m.step(Event::SlotGranted, t).expect("ok");
    assert_eq!(d.effects, vec![Effect::StartVm]);
    assert_eq!((m.slot, m.state), (Slot::Held, S::Provisioning));
    m.step(Event::Started, t).expect("ok");
    assert_eq!(m.state, S::Booting);
    assert_eq!(m.probing, Some(t + BOOT));
    assert_eq!(m.generation, 1);
    m.step(
        Event::Probed {
            web: true,
            ssh: false,
        },
        t,
    )
    .expect("ok");
    assert_eq!((m.state, m.slot), (S::Booting, Slot::Held));
    m.step(
        Event::Probed {
            web: true,
            ssh: true,
        },
        t,
    )
    .expect("ok");
    assert_eq!((m.state, m.slot, m.probing), (S::Running, Slot::None, None));
}

#[test]
fn a_failed_creation_step_ends_failed_naming_it_and_frees_the_slot() {
    let t = Instant::now();
    let mut m = machine(S::Provisioning);
    m.step(Event::Provision, t).expect("ok");
    m.step(Event::SlotGranted, t).expect("ok");
    m.step(Event::StartFailed("tap: injected fault".into()), t)
        .expect("ok");
    assert_eq!(m.state, S::Failed);
    assert_eq!(m.reason.as_deref(), Some("tap: injected fault"));
    assert_eq!(m.slot, Slot::None);
    // A later start says what it was.
    m.step(Event::Act(Action::Start), t).expect("ok");
    m.step(Event::StartFailed("qemu: no".into()), t)
        .expect("ok");
    assert_eq!(m.reason.as_deref(), Some("start failed: qemu: no"));
}

#[test]
fn a_crash_loop_backs_off_then_gives_up() {
    let t0 = Instant::now();
    let mut m = running(t0);
    let mut delays = Vec::new();
    for i in 0..5u64 {
        let t = t0 + Duration::from_secs(i * 10);
        let d = m.step(Event::Exited, t).expect("exit");
        assert_eq!(d.effects, vec![Effect::Unplug], "crash {i}");
        assert!(!m.vm);
        if m.state == S::Failed {
            break;
        }
        assert_eq!(m.state, S::Booting);
        let at = m.restart_at.expect("a restart is scheduled");
        delays.push(at - t);
        assert_eq!(
            m.step(Event::RestartDue, at).expect("due").effects,
            vec![Effect::StartVm]
        );
        m.step(Event::Started, at).expect("started");
        m.step(
            Event::Probed {
                web: true,
                ssh: true,
            },
            at,
        )
        .expect("ready");
    }
    assert_eq!(
        delays,
        [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
        "exponential backoff"
    );
    assert_eq!(m.state, S::Failed);
    assert!(
        m.reason.as_deref().is_some_and(|r| r.contains("5 times")),
        "{:?}",
        m.reason
    );
    assert_eq!(m.restart_at, None);
}

#[test]
fn a_qemu_that_dies_while_booting_is_restarted() {
    // The bug of issue 13: an exit during the first boot was left to the creation, which
    // never restarted it.
    let t = Instant::now();
    let mut m = machine(S::Provisioning);
    m.step(Event::Provision, t).expect("ok");
    m.step(Event::SlotGranted, t).expect("ok");
    m.step(Event::Started, t).expect("ok");
    m.step(
        Event::Probed {
            web: true,
            ssh: false,
        },
        t,
    )
    .expect("ok");
    m.step(Event::Exited, t).expect("ok");
    assert_eq!(m.state, S::Booting);
    assert_eq!(m.probing, None, "nothing to probe without a VM");
    let at = m.restart_at.expect("restart scheduled");
    assert_eq!(
        m.step(Event::RestartDue, at).expect("ok").effects,
        vec![Effect::StartVm]
    );
    m.step(Event::Started, at).expect("ok");
    assert_eq!(m.probing, Some(at + BOOT), "a new readiness period");
    m.step(
        Event::Probed {
            web: true,
            ssh: true,
        },
        at,
    )
    .expect("ok");
    assert_eq!(m.state, S::Running);
    assert_eq!(m.generation, 2);
}

#[test]
fn stop_during_boot_stops_the_vm_and_probing() {
    let t = Instant::now();
    let mut m = machine(S::Provisioning);
    m.step(Event::Provision, t).expect("ok");
    m.step(Event::SlotGranted, t).expect("ok");
    m.step(Event::Started, t).expect("ok");
    let d = m.step(Event::Act(Action::Stop), t).expect("ok");
    assert_eq!(
        d.effects,
        vec![Effect::StopVm { graceful: true }, Effect::Unplug]
    );
    assert_eq!((m.state, m.desired, m.vm), (S::Stopped, false, false));
    assert_eq!((m.probing, m.slot), (None, Slot::None));
    // A late probe result changes nothing.
    m.step(
        Event::Probed {
            web: true,
            ssh: true,
        },
        t,
    )
    .expect("ok");
    assert_eq!(m.state, S::Stopped);
}

#[test]
fn kill_during_a_restart_delay_cancels_the_restart() {
    let t = Instant::now();
    let mut m = running(t);
    m.step(Event::Exited, t).expect("ok");
    assert!(m.restart_at.is_some());
    let d = m.step(Event::Act(Action::Kill), t).expect("ok");
    assert_eq!(d.effects, vec![Effect::Unplug], "no VM to kill");
    assert_eq!((m.state, m.restart_at), (S::Stopped, None));
    assert!(m.step(Event::RestartDue, t).expect("ok").effects.is_empty());
}

#[test]
fn delete_during_creation_ends_the_hosting() {
    let t = Instant::now();
    let mut m = machine(S::Provisioning);
    m.step(Event::Provision, t).expect("ok");
    let d = m.step(Event::Delete, t).expect("ok");
    assert_eq!(d.effects, vec![Effect::Unplug, Effect::Destroy]);
    assert!(m.finished);
    assert_eq!((m.state, m.slot), (S::Deleting, Slot::None));
    // Nothing brings it back.
    assert!(m
        .step(Event::SlotGranted, t)
        .expect("ok")
        .effects
        .is_empty());
    assert!(matches!(
        m.step(Event::Act(Action::Start), t),
        Err(Refusal::InvalidState { .. })
    ));
    assert!(matches!(
        m.step(Event::Provision, t),
        Err(Refusal::Illegal { .. })
    ));
}

#[test]
fn delete_of_a_running_vm_stops_it_first() {
    let t = Instant::now();
    let mut m = running(t);
    let d = m.step(Event::Delete, t).expect("ok");
    assert_eq!(
        d.effects,
        vec![
            Effect::StopVm { graceful: true },
            Effect::Unplug,
            Effect::Destroy
        ]
    );
}

#[test]
fn a_reset_while_running_waits_for_the_guest_again() {
    let t = Instant::now();
    let mut m = running(t);
    m.step(Event::Qmp(QmpSignal::Reset), t).expect("ok");
    assert_eq!((m.state, m.generation), (S::Booting, 2));
    assert_eq!(m.probing, Some(t + BOOT));
    m.step(
        Event::Probed {
            web: true,
            ssh: true,
        },
        t,
    )
    .expect("ok");
    assert_eq!(m.state, S::Running);
    // Reboot is a QMP command; the reset event does the rest.
    assert_eq!(
        m.step(Event::Act(Action::Reboot), t).expect("ok").effects,
        vec![Effect::Qmp(Action::Reboot)]
    );
    m.step(Event::QmpDone(Action::Reboot), t).expect("ok");
    assert_eq!(m.state, S::Running);
}

#[test]
fn a_guest_that_never_answers_fails_at_the_deadline_and_is_killed() {
    let t = Instant::now();
    let mut m = machine(S::Provisioning);
    m.step(Event::Provision, t).expect("ok");
    m.step(Event::SlotGranted, t).expect("ok");
    m.step(Event::Started, t).expect("ok");
    let before = m.step(
        Event::Probed {
            web: true,
            ssh: false,
        },
        t + BOOT / 2,
    );
    assert!(before.expect("ok").effects.is_empty());
    let d = m
        .step(
            Event::Probed {
                web: true,
                ssh: false,
            },
            t + BOOT,
        )
        .expect("ok");
    assert_eq!(
        d.effects,
        vec![Effect::StopVm { graceful: false }, Effect::Unplug]
    );
    assert_eq!(m.state, S::Failed);
    assert!(m.reason.as_deref().is_some_and(|r| r.contains("300 s")));
}

#[test]
fn a_guest_poweroff_stays_down() {
    let t = Instant::now();
    let mut m = running(t);
    m.step(Event::Qmp(QmpSignal::GuestShutdown), t).expect("ok");
    m.step(Event::Exited, t).expect("ok");
    assert_eq!(
        (m.state, m.desired, m.restart_at),
        (S::Stopped, false, None)
    );
    // A tick does not bring it back either.
    assert!(m.step(Event::Tick, t).expect("ok").effects.is_empty());
}

#[test]
fn pause_and_resume_go_through_qmp_and_need_a_vm() {
    let t = Instant::now();
    let mut m = running(t);
    assert_eq!(
        m.step(Event::Act(Action::Pause), t).expect("ok").effects,
        vec![Effect::Qmp(Action::Pause)]
    );
    assert_eq!(m.state, S::Running, "not before QEMU accepted it");
    m.step(Event::QmpDone(Action::Pause), t).expect("ok");
    assert_eq!(m.state, S::Paused);
    assert!(m.step(Event::Act(Action::Pause), t).expect("ok").noop);
    m.step(Event::Qmp(QmpSignal::Resume), t).expect("ok");
    assert_eq!(m.state, S::Running);
    let mut down = running(t);
    down.step(Event::Exited, t).expect("ok");
    assert!(matches!(
        down.step(Event::Act(Action::Pause), t),
        Err(Refusal::InvalidState {
            state: "booting",
            action: "pause"
        })
    ));
}

#[test]
fn recovery_after_a_daemon_restart() {
    let t = Instant::now();
    let recovered = |state, adopted| {
        let mut m = machine(state);
        let d = m.step(Event::Recovered(adopted), t).expect("ok");
        (m, d.effects)
    };
    let (m, fx) = recovered(S::Running, Some(Some(RunState::Running)));
    assert_eq!(
        (m.state, m.vm, fx),
        (S::Running, true, vec![Effect::OpenSsh])
    );
    let (m, _) = recovered(S::Booting, Some(Some(RunState::Running)));
    assert_eq!((m.state, m.probing), (S::Booting, Some(t + BOOT)));
    let (m, _) = recovered(S::Running, Some(Some(RunState::Paused)));
    assert_eq!(m.state, S::Paused);
    let (m, _) = recovered(S::Running, Some(None));
    assert_eq!(m.state, S::Running);
    assert!(m.reason.as_deref().is_some_and(|r| r.contains("QMP")));
    // Should run, but its QEMU is gone: started again.
    let (m, fx) = recovered(S::Running, None);
    assert_eq!((m.state, fx), (S::Booting, vec![Effect::StartVm]));
    assert_eq!(m.starting, Some(StartKind::Start));
    // Stopped stays stopped.
    let (m, fx) = recovered(S::Stopped, None);
    assert_eq!((m.state, fx), (S::Stopped, vec![]));
    // An interrupted creation is undone and run again.
    let (m, fx) = recovered(S::Provisioning, None);
    assert_eq!(fx, vec![Effect::Unplug, Effect::Cleanup]);
    assert_eq!((m.state, m.slot), (S::Provisioning, Slot::Wanted));
    let (_, fx) = recovered(S::Provisioning, Some(Some(RunState::Running)));
    assert_eq!(
        fx,
        vec![
            Effect::StopVm { graceful: false },
            Effect::Unplug,
            Effect::Cleanup
        ]
    );
    // An interrupted deletion is finished.
    let (m, fx) = recovered(S::Deleting, Some(Some(RunState::Running)));
    assert_eq!(
        fx,
        vec![
            Effect::StopVm { graceful: true },
            Effect::Unplug,
            Effect::Destroy
        ]
    );
    assert!(m.finished);
}

#[test]
fn illegal_moves_are_refused_not_written() {
    let t = Instant::now();
    let mut m = running(t);
    let before = m.clone();
    assert!(matches!(
        m.step(Event::Provision, t),
        Err(Refusal::Illegal {
            from: "running",
            to: "provisioning"
        })
    ));
    assert_eq!(m.state, before.state);
    let mut p = machine(S::Provisioning);
    assert!(matches!(
        p.step(Event::Act(Action::Stop), t),
        Err(Refusal::InvalidState {
            state: "provisioning",
            action: "stop"
        })
    ));
}
