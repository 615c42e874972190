//! One task per hosting: the only writer of its row and the only owner of its QEMU.
//!
//! The actor receives, in one `select!`, commands (provision, recover, actions, delete,
//! reconciler ticks), its QEMU's exit and QMP events, readiness rounds, the creation slot
//! and the restart timer. Each input becomes an [`Event`] for the decision core
//! ([`Machine::step`]); the actor writes the resulting state (one store write per
//! transition), publishes the route, and carries out the effects through [`Effects`].
//! Work on one hosting is serialised by construction: no busy flags, no polling.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit};
use tracing::{error, info, warn};

use super::core::{Event, Machine, Refusal, RunState, Slot};
use super::effects::{Effects, Vm};
use super::lifecycle::ExitCause;
use super::timing::BootClock;
use super::HostingError;
use crate::store::{Hosting, StoreError};
use crate::vm::VmEvent;

/// What woke the actor.
enum Input {
    Command(Command),
    Event(Event),
    /// The attached QEMU has exited.
    Exited,
    Slot(OwnedSemaphorePermit),
    /// Time to see whether the site has been idle long enough to sleep.
    IdleCheck,
}

/// One readiness round in flight.
type ProbeRound = std::pin::Pin<Box<dyn std::future::Future<Output = (bool, bool)> + Send>>;

struct Actor<E: Effects> {
    ctx: Arc<Ctx<E>>,
    /// The row as last written.
    row: Hosting,
    m: Machine,
    vm: Option<Arc<E::Vm>>,
    view: Arc<Mutex<Option<Arc<E::Vm>>>>,
    events: Option<broadcast::Receiver<VmEvent>>,
    permit: Option<OwnedSemaphorePermit>,
    probe: Option<ProbeRound>,
    /// The readiness period the probe results belong to, and what answered in it.
    probe_period: Option<Instant>,
    known: (bool, bool),
    /// Who asked for the deletion (for the audit entry of the removal).
    deleted_by: String,
    /// When the boot in progress began (for the metrics).
    clock: BootClock,
    /// Who visits the site, and its doorbell (shared with the route and the SSH forward).
    presence: Arc<crate::presence::Presence>,
    /// The site is marked asleep for visitors while the VM is being paused.
    dozing: bool,
}

async fn run<E: Effects>(
    ctx: Arc<Ctx<E>>,
    row: Hosting,
    mut rx: mpsc::Receiver<Command>,
    view: Arc<Mutex<Option<Arc<E::Vm>>>>,
    serial: u64,
) {
    let id = row.id;
    let mut m = Machine::new(
        row.state,
        row.reason.clone(),
        row.desired_running,
        ctx.boot_timeout,
    );
    m.asleep = row.asleep && row.state == crate::store::HostingState::Paused;
    let presence = ctx.fx.presence(id);
    // A VM found asleep (daemon restart): visitors ring from the start.
    if m.asleep {
        presence.set_asleep();
    }
    let mut a = Actor {
        m,
        ctx: ctx.clone(),
        row,
        vm: None,
        view,
        events: None,
        permit: None,
        probe: None,
        probe_period: None,
        known: (false, false),
        deleted_by: "system".into(),
        clock: BootClock::default(),
        presence,
        dozing: false,
    };
    while !a.m.finished {
        let restart_at = a.m.restart_at.map(tokio::time::Instant::from_std);
        let want_slot = a.m.slot == Slot::Wanted && a.permit.is_none();
        let idle_check = a.idle_check();
        let presence = a.presence.clone();
        let input = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => Input::Command(c),
                None => break,
            },
            _ = exited(a.vm.as_deref()) => Input::Exited,
            ev = next_event(&mut a.events) => match ev {
                Some(ev) => Input::Event(Event::Qmp(ev)),
                None => continue,
            },
            p = ctx.slots.clone().acquire_owned(), if want_slot => match p {
                Ok(p) => Input::Slot(p),
                Err(_) => break,
            },
            _ = sleep_until(restart_at), if restart_at.is_some() => Input::Event(Event::RestartDue),
            _ = sleep_until(idle_check), if idle_check.is_some() => Input::IdleCheck,
            _ = presence.rung(), if a.m.asleep => Input::Event(Event::Wake),
            r = async { a.probe.as_mut().expect("guarded").await }, if a.probe.is_some() => {
                a.probe = None;
                a.known = (a.known.0 || r.0, a.known.1 || r.1);
                Input::Event(Event::Probed { web: a.known.0, ssh: a.known.1 })
            }
        };
        a.handle(input).await;
    }
    ctx.registry.remove(id, serial);
}

impl<E: Effects> Actor<E> {
    async fn handle(&mut self, input: Input) {
        match input {
            Input::Event(ev) => {
                let _ = self.run(ev, None).await;
            }
            Input::Exited => {
                let gone = self.vm.clone();
                if self.m.exit_cause() == ExitCause::Crash {
                    self.ctx.fx.crashed();
                }
                let _ = self.run(Event::Exited, None).await;
                // A process that has exited stays exited: never wait on it again, whatever
                // the core made of its exit (or the loop would see it exit forever).
                if let (Some(gone), Some(vm)) = (gone, &self.vm) {
                    if Arc::ptr_eq(&gone, vm) {
                        error!("the core kept a VM that has exited; letting it go");
                        self.detach();
                    }
                }
            }
            Input::Slot(p) => {
                self.permit = Some(p);
                let _ = self.run(Event::SlotGranted, None).await;
            }
            Input::Command(Command::Provision) => {
                let _ = self.run(Event::Provision, None).await;
            }
            Input::Command(Command::Tick) => {
                let _ = self.run(Event::Tick, None).await;
            }
            Input::IdleCheck => self.maybe_sleep().await,
            Input::Command(Command::SetSleep { enabled, reply }) => {
                let _ = reply.send(self.set_sleep(enabled).await);
            }
            Input::Command(Command::ConsolePassword { crypted, reply }) => {
                let _ = reply.send(self.console_password(crypted).await);
            }
            Input::Command(Command::Recover { done }) => {
                let found = match &self.vm {
                    Some(_) => None,
                    None => self.ctx.fx.adopt(&self.row).await,
                };
                let adopted = match found {
                    Some((vm, status)) => {
                        info!(pid = vm.pid(), ?status, "adopted running qemu");
                        self.attach(Arc::new(vm)).await;
                        Some(status)
                    }
                    None => self.vm.as_ref().map(|_| Some(RunState::Running)),
                };
                let _ = self.run(Event::Recovered(adopted), None).await;
                self.reconcile_snapshots().await;
                if let Some(d) = done {
                    let _ = d.send(());
                }
            }
            Input::Command(Command::Act {
                action,
                actor,
                reply,
            }) => {
                let r = self
                    .run(Event::Act(action), Some(Audit::Action(&actor)))
                    .await;
                let _ = reply.send(r.map(|()| self.row.clone()));
            }
            Input::Command(Command::Snapshot {
                op,
                name,
                actor,
                reply,
            }) => {
                let r = self.snapshot(op, &name, &actor).await;
                let _ = reply.send(r);
            }
            Input::Command(Command::Delete { actor, reply }) => {
                self.deleted_by = actor;
                let r = self.run(Event::Delete, Some(Audit::Delete(reply))).await;
                if let Err(e) = r {
                    warn!(error = %e, "delete refused");
                }
            }
        }
    }

    /// Steps the machine through `ev` and what its effects report, writing each transition.
    async fn run(&mut self, ev: Event, mut audit: Option<Audit<'_>>) -> Result<(), HostingError> {
        let mut queue = VecDeque::from([ev]);
        let mut failure = None;
        while let Some(ev) = queue.pop_front() {
            // What the actor holds, not what the core thought before this step: recovery
            // attaches an adopted VM before the core hears of it.
            let had_vm = self.vm.is_some();
            let (before, starting) = (self.m.state, self.m.starting);
            // A refused step changes nothing: it runs on a copy.
            let mut next = self.m.clone();
            let d = match next.step(ev.clone(), Instant::now()) {
                Ok(d) => {
                    self.m = next;
                    d
                }
                Err(r) => {
                    if let Refusal::Illegal { .. } = r {
                        error!(event = ?ev, refusal = %r, "illegal state transition refused");
                    }
                    if let Some(Audit::Delete(reply)) = audit.take() {
                        let _ = reply.send(Err(refused(&r)));
                    }
                    failure.get_or_insert(refused(&r));
                    continue;
                }
            };
            let booted = self
                .clock
                .step(&ev, starting, before, self.m.state, Instant::now());
            if let Some(b) = booted {
                let since_request = crate::store::now() - self.row.created_at;
                let creation = b.creation.then(|| since_request.try_into().ok()).flatten();
                self.ctx.fx.booted(b.boot, creation);
            }
            match audit.take() {
                Some(Audit::Action(actor)) => {
                    if let Event::Act(action) = &ev {
                        let detail = if d.noop {
                            "no-op"
                        } else {
                            self.row.slug.as_str()
                        };
                        if !d.noop {
                            info!(action = action.as_str(), %actor, "admin action");
                        }
                        let what = format!("vm.{}", action.as_str());
                        if let Err(e) =
                            self.ctx
                                .store
                                .audit(actor, &what, &self.row.id.to_string(), detail)
                        {
                            warn!(error = %e, "cannot write the audit log");
                        }
                    }
                }
                Some(Audit::Delete(reply)) => {
                    self.persist();
                    let _ = reply.send(Ok(self.row.clone()));
                }
                None => {}
            }
            self.persist();
            for effect in d.effects {
                match self.apply(effect).await {
                    Ok(Some(next)) => queue.push_back(next),
                    Ok(None) => {}
                    Err(e) => {
                        failure.get_or_insert(e);
                        break;
                    }
                }
            }
            // The machine let go of its VM (exit, stop, kill): so does the actor.
            if had_vm && !self.m.vm {
                self.detach();
            }
            if self.m.slot == Slot::None {
                self.permit = None;
            }
            self.keep_probing();
        }
        failure.map_or(Ok(()), Err)
    }

    /// Writes state, reason and desire when they changed (one store write), and
    /// publishes the route.
    fn persist(&mut self) {
        let m = &self.m;
        let r = &self.row;
        if (r.state, &r.reason, r.desired_running, r.asleep)
            != (m.state, &m.reason, m.desired, m.asleep)
        {
            let (state, reason, desired, asleep) = (m.state, m.reason.clone(), m.desired, m.asleep);
            match self.ctx.store.modify_hosting(r.id, |h| {
                h.state = state;
                h.reason = reason.clone();
                h.desired_running = desired;
                h.asleep = asleep;
            }) {
                Ok(h) => {
                    info!(
                        state = state.as_str(),
                        reason = h.reason.as_deref().unwrap_or(""),
                        "state"
                    );
                    self.row = h;
                }
                Err(StoreError::NoSuchHosting) => {}
                Err(e) => warn!(error = %e, "cannot record state"),
            }
        }
        self.ctx.fx.publish(&self.row, self.m.generation);
        if self.m.asleep {
            self.presence.set_asleep();
        } else if !self.dozing {
            self.presence.set_awake();
        }
    }

    /// Starts or ends the readiness rounds the machine asks for.
    fn keep_probing(&mut self) {
        match self.m.probing {
            Some(period) => {
                if self.probe_period != Some(period) {
                    self.probe_period = Some(period);
                    self.known = (false, false);
                    self.probe = None;
                }
                if self.probe.is_none() {
                    let round = self.ctx.fx.probe(self.row.ip, self.known);
                    self.probe = Some(Box::pin(async move {
                        let pace = tokio::time::sleep(READY_POLL);
                        let r = round.await;
                        pace.await;
                        r
                    }));
                }
            }
            None => {
                self.probe = None;
                self.probe_period = None;
            }
        }
    }
}

/// What a request wants done around its first step.
enum Audit<'a> {
    /// Audit the action as this actor (or as a no-op).
    Action(&'a str),
    /// Answer once `deleting` is recorded.
    Delete(oneshot::Sender<Result<Hosting, HostingError>>),
}

fn refused(r: &Refusal) -> HostingError {
    match r {
        Refusal::InvalidState { state, action } => HostingError::InvalidState { state, action },
        Refusal::Illegal { .. } => HostingError::Internal(r.to_string()),
    }
}

/// A deleted VM's guest gets at most this long to power off.
const DELETE_STOP: Duration = Duration::from_secs(10);
/// How often a booting guest is probed (at most: a probe can take longer).
pub(super) const READY_POLL: Duration = Duration::from_millis(100);

mod apply;
mod command;
mod guest;
mod inputs;
mod registry;
mod saga;
mod sleep;
mod snapshot;
#[cfg(test)]
mod tests;

pub(super) use command::{Command, Ctx};
use inputs::{exited, next_event, sleep_until};
pub(super) use registry::Registry;
