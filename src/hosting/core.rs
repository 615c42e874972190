//! The decision core of a hosting's actor: (state, desired, observed, event) → (next state,
//! effects), as plain data and one function, [`Machine::step`]. No I/O, no clock: the
//! actor passes `now` in and carries the effects out (see `actor`).
//!
//! Every state change goes through [`Machine::step`] and is checked against
//! [`lifecycle::may_move`]; an illegal one is an error, never a write. Crash restarts
//! (backoff, giving up), what an exit means, readiness deadlines and the creation slot live
//! here too, as fields the actor reads after each step.

use std::time::{Duration, Instant};

use super::lifecycle::{self, Action, AfterExit, Backoff, ExitCause, Plan};
use crate::store::HostingState;

mod vocab;
pub use vocab::{Decision, Effect, Event, QmpSignal, Refusal, RunState, Slot, StartKind, ASLEEP};

/// One hosting's state as its actor knows it: the persisted part (`state`, `reason`,
/// `desired`) and what the actor observes and waits for.
#[derive(Debug, Clone)]
pub struct Machine {
    pub state: HostingState,
    pub reason: Option<String>,
    /// Whether the owner wants it running (persisted as `desired_running`).
    pub desired: bool,
    /// A QEMU is watched.
    pub vm: bool,
    /// The guest announced its own poweroff before the exit.
    pub poweroff_seen: bool,
    /// Probing :80 and :22 until this deadline (booting with a VM only).
    pub probing: Option<Instant>,
    /// Start again at this instant (after a crash).
    pub restart_at: Option<Instant>,
    pub slot: Slot,
    /// What the running `StartVm` is for.
    pub starting: Option<StartKind>,
    /// Boots of the VM seen by this daemon (QEMU starts and guest resets): the proxy drops
    /// pooled connections to an older generation.
    pub generation: u64,
    pub backoff: Backoff,
    /// The actor is done (deleted).
    pub finished: bool,
    /// Paused because it was idle (persisted as `asleep`): a visit wakes it. Only ever
    /// true in `paused`.
    pub asleep: bool,
    /// How long a booting guest gets to answer.
    pub boot_timeout: Duration,
}

impl Machine {
    pub fn new(
        state: HostingState,
        reason: Option<String>,
        desired: bool,
        boot_timeout: Duration,
    ) -> Machine {
        Machine {
            state,
            reason,
            desired,
            vm: false,
            poweroff_seen: false,
            probing: None,
            restart_at: None,
            slot: Slot::None,
            starting: None,
            generation: 0,
            backoff: Backoff::default(),
            finished: false,
            asleep: false,
            boot_timeout,
        }
    }

    /// What an exit of the watched QEMU ([`Event::Exited`]) would mean now: a stop or kill
    /// roost was asked for (the VM is not wanted running), the guest's own poweroff, or a
    /// crash.
    pub fn exit_cause(&self) -> ExitCause {
        if !self.desired {
            ExitCause::Requested
        } else if self.poweroff_seen {
            ExitCause::GuestPoweroff
        } else {
            ExitCause::Crash
        }
    }

    /// Moves to `to` with `reason`, if the table allows it.
    fn go(&mut self, to: HostingState, reason: Option<String>) -> Result<(), Refusal> {
        if !lifecycle::may_move(self.state, to) {
            return Err(Refusal::Illegal {
                from: self.state.as_str(),
                to: to.as_str(),
            });
        }
        self.state = to;
        self.reason = reason;
        if to != HostingState::Paused {
            self.asleep = false;
        }
        Ok(())
    }

    fn start(&mut self, kind: StartKind, fx: &mut Vec<Effect>) {
        self.starting = Some(kind);
        fx.push(Effect::StartVm);
    }

    /// Effects that end the VM (if any) and free what it held.
    fn take_down(&mut self, graceful: bool, fx: &mut Vec<Effect>) {
        if self.vm {
            fx.push(Effect::StopVm { graceful });
        }
        fx.push(Effect::Unplug);
        self.vm = false;
        self.restart_at = None;
    }

    /// Decides `ev` at `now`: updates the machine and returns the effects to carry out.
    pub fn step(&mut self, ev: Event, now: Instant) -> Result<Decision, Refusal> {
        use HostingState as S;
        let mut fx = Vec::new();
        let mut noop = false;
        match ev {
            Event::Provision => {
                self.go(S::Provisioning, None)?;
                self.slot = Slot::Wanted;
            }
            Event::SlotGranted => {
                if self.slot == Slot::Wanted && self.state == S::Provisioning {
                    self.slot = Slot::Held;
                    self.start(StartKind::Create, &mut fx);
                }
            }
            Event::Started => {
                self.vm = true;
                self.poweroff_seen = false;
                self.generation += 1;
                if self.state == S::Provisioning {
                    self.go(S::Booting, None)?;
                }
                self.starting = None;
                self.probing = Some(now + self.boot_timeout);
            }
            Event::StartFailed(message) => {
                let reason = match self.starting.take() {
                    Some(StartKind::Start) => format!("start failed: {message}"),
                    Some(StartKind::Restart) => format!("restart failed: {message}"),
                    _ => message,
                };
                self.go(S::Failed, Some(reason))?;
            }
            Event::Probed { web, ssh } => {
                if self.state == S::Booting && self.probing.is_some() {
                    if web && ssh {
                        self.go(S::Running, None)?;
                    } else if self.probing.is_some_and(|d| now >= d) {
                        let reason = format!(
                            "the guest did not answer on :80 and :22 within {} s",
                            self.boot_timeout.as_secs()
                        );
                        self.take_down(false, &mut fx);
                        self.go(S::Failed, Some(reason))?;
                    }
                }
            }
            Event::Exited => {
                let cause = self.exit_cause();
                self.vm = false;
                fx.push(Effect::Unplug);
                match lifecycle::after_exit(self.desired, cause, &mut self.backoff, now) {
                    AfterExit::Down(state) => {
                        if cause == ExitCause::GuestPoweroff {
                            self.desired = false;
                        }
                        self.go(state, None)?;
                    }
                    AfterExit::GiveUp(reason) => self.go(S::Failed, Some(reason))?,
                    AfterExit::Restart(delay) => {
                        self.go(
                            S::Booting,
                            Some("restarting after an unexpected exit".into()),
                        )?;
                        self.restart_at = Some(now + delay);
                    }
                }
            }
            Event::RestartDue => {
                if self.restart_at.take().is_some()
                    && self.state == S::Booting
                    && self.desired
                    && !self.vm
                {
                    self.start(StartKind::Restart, &mut fx);
                }
            }
            Event::Qmp(sig) => match sig {
                QmpSignal::Stop if matches!(self.state, S::Running | S::Booting) => {
                    self.go(S::Paused, None)?
                }
                QmpSignal::Resume if self.state == S::Paused => self.go(S::Running, None)?,
                QmpSignal::Reset => {
                    self.generation += 1;
                    if self.state == S::Running {
                        self.go(S::Booting, None)?;
                        self.probing = Some(now + self.boot_timeout);
                    }
                }
                QmpSignal::GuestShutdown => self.poweroff_seen = true,
                _ => {}
            },
            Event::Act(action) => match lifecycle::plan(self.state, action) {
                Plan::Refuse => return Err(self.invalid(action)),
                Plan::Nothing => {
                    noop = true;
                    // Pausing a sleeping VM keeps it paused: visits no longer wake it.
                    if action == Action::Pause && self.asleep {
                        self.asleep = false;
                        self.reason = None;
                        noop = false;
                    }
                }
                Plan::Do => match action {
                    Action::Start => {
                        self.backoff = Backoff::default();
                        self.desired = true;
                        self.go(S::Booting, None)?;
                        self.start(StartKind::Start, &mut fx);
                    }
                    Action::Stop | Action::Kill => {
                        self.desired = false;
                        self.take_down(action == Action::Stop, &mut fx);
                        self.go(S::Stopped, None)?;
                    }
                    Action::Reboot | Action::Pause | Action::Resume => {
                        if !self.vm {
                            return Err(self.invalid(action));
                        }
                        fx.push(Effect::Qmp(action));
                    }
                },
            },
            Event::QmpDone(action) => match action {
                Action::Pause => self.go(S::Paused, None)?,
                Action::Resume => {
                    self.go(S::Running, None)?;
                    fx.push(Effect::SyncClock);
                }
                _ => {}
            },
            Event::Sleep => {
                if self.state == S::Running && self.vm {
                    fx.push(Effect::Sleep);
                } else {
                    noop = true;
                }
            }
            Event::Slept => {
                if self.state == S::Running {
                    self.go(S::Paused, Some(ASLEEP.into()))?;
                    self.asleep = true;
                }
            }
            Event::Wake => {
                if self.state == S::Paused && self.asleep && self.vm {
                    fx.push(Effect::Qmp(Action::Resume));
                } else {
                    noop = true;
                }
            }
            Event::Delete => {
                self.desired = false;
                self.go(S::Deleting, None)?;
                self.take_down(true, &mut fx);
                fx.push(Effect::Destroy);
                self.finished = true;
            }
            Event::Recovered(adopted) => {
                self.vm = adopted.is_some();
                match self.state {
                    S::Deleting => {
                        self.take_down(true, &mut fx);
                        fx.push(Effect::Destroy);
                        self.finished = true;
                    }
                    S::Provisioning => {
                        // Interrupted creation: undo whatever was made and run it again.
                        self.take_down(false, &mut fx);
                        fx.push(Effect::Cleanup);
                        self.slot = Slot::Wanted;
                    }
                    _ => match adopted {
                        Some(status) => {
                            self.generation += 1;
                            fx.push(Effect::OpenSsh);
                            match status {
                                Some(RunState::Paused) => {
                                    let reason = self.asleep.then(|| ASLEEP.into());
                                    self.go(S::Paused, reason)?
                                }
                                Some(RunState::Running) if self.state == S::Booting => {
                                    self.probing = Some(now + self.boot_timeout)
                                }
                                Some(RunState::Running) => self.go(S::Running, None)?,
                                None => {
                                    let state = self.state;
                                    self.go(
                                        state,
                                        Some("QEMU is alive but QMP does not answer".into()),
                                    )?
                                }
                            }
                        }
                        None => self.should_run_but_is_gone(&mut fx)?,
                    },
                }
            }
            Event::Tick => {
                if !self.vm && self.restart_at.is_none() && self.slot == Slot::None {
                    self.should_run_but_is_gone(&mut fx)?;
                }
            }
        }
        self.settle();
        Ok(Decision { effects: fx, noop })
    }

    /// A hosting that should run has no QEMU (found at start, or lost without an exit
    /// report): start it.
    fn should_run_but_is_gone(&mut self, fx: &mut Vec<Effect>) -> Result<(), Refusal> {
        use HostingState as S;
        if self.desired && matches!(self.state, S::Running | S::Booting | S::Paused) {
            self.go(S::Booting, None)?;
            self.start(StartKind::Start, fx);
        }
        Ok(())
    }

    fn invalid(&self, action: Action) -> Refusal {
        Refusal::InvalidState {
            state: self.state.as_str(),
            action: action.as_str(),
        }
    }

    /// Keeps the derived fields consistent with the state: probing only while booting with
    /// a VM, the creation slot only while creating or first booting.
    fn settle(&mut self) {
        use HostingState as S;
        if self.state != S::Booting || !self.vm {
            self.probing = None;
        }
        if !matches!(self.state, S::Provisioning | S::Booting) {
            self.slot = Slot::None;
            self.restart_at = None;
        }
    }
}

#[cfg(test)]
mod tests;
