//! The hosting state machine as pure functions: which admin actions a state allows, what
//! a VM event or process exit does to the state, and the crash-restart backoff.

use std::time::{Duration, Instant};

use crate::store::HostingState;

/// What an administrator (or the owner) can ask of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reboot,
    Pause,
    Resume,
    Kill,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "stop" => Action::Stop,
            "reboot" => Action::Reboot,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "kill" => Action::Kill,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reboot => "reboot",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Kill => "kill",
        }
    }
}

/// What to do with an action in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Carry it out.
    Do,
    /// Already there: answer success and do nothing.
    Nothing,
    /// Not possible in this state.
    Refuse,
}

/// Decides an action against the current state.
pub fn plan(state: HostingState, action: Action) -> Plan {
    use Action as A;
    use HostingState as S;
    match (state, action) {
        (S::Deleting | S::Provisioning, _) => Plan::Refuse,
        (S::Stopped | S::Failed, A::Start) => Plan::Do,
        (S::Running | S::Booting | S::Paused, A::Start) => Plan::Nothing,
        (S::Running | S::Booting | S::Paused, A::Stop) => Plan::Do,
        (S::Stopped | S::Failed, A::Stop) => Plan::Nothing,
        (S::Running | S::Booting, A::Reboot) => Plan::Do,
        (_, A::Reboot) => Plan::Refuse,
        (S::Running | S::Booting, A::Pause) => Plan::Do,
        (S::Paused, A::Pause) => Plan::Nothing,
        (_, A::Pause) => Plan::Refuse,
        (S::Paused, A::Resume) => Plan::Do,
        (S::Running | S::Booting, A::Resume) => Plan::Nothing,
        (_, A::Resume) => Plan::Refuse,
        (S::Running | S::Booting | S::Paused, A::Kill) => Plan::Do,
        (S::Stopped | S::Failed, A::Kill) => Plan::Nothing,
    }
}

/// Why a QEMU process went away, as far as roost can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// roost asked for it (stop, kill, delete).
    Requested,
    /// The guest powered itself off (a SHUTDOWN event from the guest came first).
    GuestPoweroff,
    /// Anything else: killed from outside, crashed, or QMP vanished without SHUTDOWN.
    Crash,
}

/// What follows a process exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Stay down, in this state.
    Down(HostingState),
    /// Start it again after this delay.
    Restart(Duration),
    /// Give up: `failed` with this reason.
    GiveUp(String),
}

/// Restart policy: a VM that should run and crashed is restarted with exponential backoff
/// (1 s, 2 s, 4 s ... at most 30 s); `max_crashes` crashes within `window` end the loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    crashes: Vec<Instant>,
    pub max_crashes: usize,
    pub window: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            crashes: Vec::new(),
            max_crashes: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// Records a crash at `now`; the delay before the next start, or `None` to give up.
    pub fn crash(&mut self, now: Instant) -> Option<Duration> {
        self.crashes
            .retain(|t| now.duration_since(*t) < self.window);
        self.crashes.push(now);
        let n = self.crashes.len();
        if n >= self.max_crashes {
            return None;
        }
        Some(Duration::from_secs(1u64 << (n - 1).min(5)).min(Duration::from_secs(30)))
    }

    pub fn crashes(&self) -> usize {
        self.crashes.len()
    }
}

/// Decides what a process exit means for a hosting.
pub fn after_exit(
    desired_running: bool,
    cause: ExitCause,
    backoff: &mut Backoff,
    now: Instant,
) -> AfterExit {
    match cause {
        ExitCause::Requested => AfterExit::Down(HostingState::Stopped),
        ExitCause::GuestPoweroff => AfterExit::Down(HostingState::Stopped),
        ExitCause::Crash if !desired_running => AfterExit::Down(HostingState::Stopped),
        ExitCause::Crash => match backoff.crash(now) {
            Some(d) => AfterExit::Restart(d),
            None => AfterExit::GiveUp(format!(
                "QEMU exited unexpectedly {} times within {} s; not restarting",
                backoff.crashes(),
                backoff.window.as_secs()
            )),
        },
    }
}

/// Whether a hosting may move from `from` to `to`: the one table every state write is
/// checked against. Deletion is final (a late failure or exit report must not bring a
/// deleted hosting back), only a reservation creates a provisioning hosting, and a creation
/// ends booting, running or failed, never stopped. Writing the same state again (a new
/// reason) is always allowed.
pub fn may_move(from: HostingState, to: HostingState) -> bool {
    use HostingState as S;
    match (from, to) {
        (a, b) if a == b => true,
        (S::Deleting, _) => false,
        (_, S::Provisioning) => false,
        (S::Provisioning, S::Stopped) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostingState as S;

    #[test]
    fn plans() {
        assert_eq!(plan(S::Running, Action::Stop), Plan::Do);
        assert_eq!(plan(S::Stopped, Action::Stop), Plan::Nothing);
        assert_eq!(plan(S::Stopped, Action::Start), Plan::Do);
        assert_eq!(plan(S::Failed, Action::Start), Plan::Do);
        assert_eq!(plan(S::Running, Action::Start), Plan::Nothing);
        assert_eq!(plan(S::Paused, Action::Resume), Plan::Do);
        assert_eq!(plan(S::Stopped, Action::Resume), Plan::Refuse);
        assert_eq!(plan(S::Stopped, Action::Reboot), Plan::Refuse);
        assert_eq!(plan(S::Paused, Action::Kill), Plan::Do);
        for a in [
            Action::Start,
            Action::Stop,
            Action::Reboot,
            Action::Pause,
            Action::Resume,
            Action::Kill,
        ] {
            assert_eq!(plan(S::Deleting, a), Plan::Refuse, "{a:?}");
            assert_eq!(plan(S::Provisioning, a), Plan::Refuse, "{a:?}");
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("explode"), None);
    }

    #[test]
    fn crashes_restart_with_backoff_then_give_up() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let delays: Vec<AfterExit> = (0..5)
            .map(|i| after_exit(true, ExitCause::Crash, &mut b, t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(delays[0], AfterExit::Restart(Duration::from_secs(1)));
        assert_eq!(delays[1], AfterExit::Restart(Duration::from_secs(2)));
        assert_eq!(delays[3], AfterExit::Restart(Duration::from_secs(8)));
        assert!(matches!(delays[4], AfterExit::GiveUp(ref r) if r.contains("5 times")));
    }

    #[test]
    fn old_crashes_are_forgotten() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        for i in 0..4 {
            b.crash(t0 + Duration::from_secs(i));
        }
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            after_exit(true, ExitCause::Crash, &mut b, later),
            AfterExit::Restart(Duration::from_secs(1))
        );
    }

    #[test]
    fn requested_and_guest_exits_stay_down() {
        let mut b = Backoff::default();
        let now = Instant::now();
        assert_eq!(
            after_exit(true, ExitCause::Requested, &mut b, now),
            AfterExit::Down(S::Stopped)
        );
        assert_eq!(
            after_exit(true, ExitCause::GuestPoweroff, &mut b, now),
            AfterExit::Down(S::Stopped)
        );
        assert_eq!(
            after_exit(false, ExitCause::Crash, &mut b, now),
            AfterExit::Down(S::Stopped)
        );
        assert_eq!(b.crashes(), 0);
    }

    #[test]
    fn transition_table() {
        use HostingState as S;
        let all = [
            S::Provisioning,
            S::Booting,
            S::Running,
            S::Paused,
            S::Stopped,
            S::Failed,
            S::Deleting,
        ];
        for s in all {
            assert!(may_move(s, s), "{s:?} again");
            assert!(may_move(s, S::Deleting) || s == S::Deleting);
            if s != S::Deleting {
                assert!(!may_move(S::Deleting, s), "deleting -> {s:?}");
            }
            if s != S::Provisioning {
                assert!(!may_move(s, S::Provisioning), "{s:?} -> provisioning");
            }
        }
        for (from, to) in [
            (S::Provisioning, S::Booting),
            (S::Provisioning, S::Failed),
            (S::Booting, S::Running),
            (S::Running, S::Booting),
            (S::Running, S::Paused),
            (S::Paused, S::Running),
            (S::Running, S::Stopped),
            (S::Stopped, S::Booting),
            (S::Failed, S::Booting),
        ] {
            assert!(may_move(from, to), "{from:?} -> {to:?}");
        }
        assert!(!may_move(S::Provisioning, S::Stopped));
        assert!(
            !may_move(S::Deleting, S::Failed),
            "a late failure after delete"
        );
    }
}
