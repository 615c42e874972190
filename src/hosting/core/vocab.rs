//! The decision core's vocabulary: the events it hears, the effects it asks for, and its
//! verdicts. Plain data.

use super::super::lifecycle::Action;

/// What happened to a hosting: a command, an observation, or the outcome of an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A reservation was made: build and boot it (after a creation slot is granted).
    Provision,
    /// The creation slot asked for by [`Slot::Wanted`] was granted.
    SlotGranted,
    /// [`Effect::StartVm`] succeeded: a QEMU runs and its SSH port is open.
    Started,
    /// [`Effect::StartVm`] failed (and undid its steps); the step and its error.
    StartFailed(String),
    /// One readiness round: whether :80 and :22 have answered so far.
    Probed { web: bool, ssh: bool },
    /// The watched QEMU exited without roost asking.
    Exited,
    /// A QMP event from the guest or QEMU.
    Qmp(QmpSignal),
    /// An administrator's (or owner's) action.
    Act(Action),
    /// The QMP command of an action was accepted.
    QmpDone(Action),
    /// Delete the hosting: the actor ends after this.
    Delete,
    /// The restart delay set after a crash has passed.
    RestartDue,
    /// The actor's first look at the world after a daemon start: a QEMU of this hosting was
    /// adopted (with its run state, `None` when QMP did not answer), or none was found.
    Recovered(Option<Option<RunState>>),
    /// The reconciler's periodic nudge.
    Tick,
    /// Nobody has visited the site for the idle period, and the site is marked asleep for
    /// visitors (`presence`): pause the VM.
    Sleep,
    /// [`Effect::Sleep`] paused the VM.
    Slept,
    /// A visitor rang at a sleeping site: resume the VM.
    Wake,
}

/// QMP events the core reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QmpSignal {
    Stop,
    Resume,
    /// The guest was reset (it reboots and is not serving until it answers again).
    Reset,
    /// The guest itself powered off (QEMU exits next).
    GuestShutdown,
}

/// The reason a sleeping hosting shows.
pub const ASLEEP: &str = "asleep while idle: the next visit wakes it";

/// The run states that matter to the core (from QMP `query-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
}

/// Side effects the actor carries out, in order, through the effect boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Undo what an interrupted creation may have left (QEMU, tap, cgroup, files).
    Cleanup,
    /// The start saga (directory, overlay and seed when missing; tap, firewall, QEMU, SSH
    /// port), each step undone on a later failure. Reports `Started` or `StartFailed`.
    StartVm,
    /// Send a QMP command for an action (`reboot`, `pause`, `resume`); reports `QmpDone`.
    Qmp(Action),
    /// End the watched QEMU: graceful (powerdown, quit, SIGTERM, SIGKILL) or killed.
    StopVm { graceful: bool },
    /// After the QEMU is gone: close the SSH port, delete the tap, remove the cgroup, and
    /// kill a QEMU of this hosting that roost does not watch.
    Unplug,
    /// Remove the files, the reservations and the row; update the firewall. Last effect.
    Destroy,
    /// Serve the SSH port (an adopted VM).
    OpenSsh,
    /// Pause the VM because it is idle (QMP `stop`); reports `Slept`.
    Sleep,
    /// Set the guest's clock to the host's (through the guest agent): a paused guest's
    /// clock stood still. Failure is logged, never fatal.
    SyncClock,
}

/// The creation slot (at most `max_concurrent_creates` creations boot at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    None,
    Wanted,
    Held,
}

/// Why a start was made (names the failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    Create,
    Start,
    Restart,
}

/// A step's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub effects: Vec<Effect>,
    /// The action was asked of a state that already is what it asks (answered, not done).
    pub noop: bool,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("cannot {action} a VM that is {state}")]
    InvalidState {
        state: &'static str,
        action: &'static str,
    },
    #[error("illegal transition {from} -> {to}")]
    Illegal {
        from: &'static str,
        to: &'static str,
    },
}
