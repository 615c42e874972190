//! How long boots take, for the metrics: the actor feeds every accepted step to a
//! [`BootClock`], which reports a boot when a started QEMU's guest becomes ready. Pure.

use std::time::{Duration, Instant};

use super::core::{Event, StartKind};
use crate::store::HostingState;

/// A boot that ended in readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Booted {
    /// From the QEMU start (the saga's end) to the guest answering on :80 and :22.
    pub boot: Duration,
    /// It was a new hosting's first boot.
    pub creation: bool,
}

/// When the boot in progress began (`Started`), and whether it is a creation's.
#[derive(Debug, Default)]
pub(super) struct BootClock {
    began: Option<(Instant, bool)>,
}

impl BootClock {
    /// Follows one accepted step: `ev` took the hosting from `before` to `after`;
    /// `starting` is what the start in flight was for, as it was before the step.
    /// A guest reset (no new QEMU) is not timed; leaving `booting` any other way than to
    /// `running` forgets the boot.
    pub fn step(
        &mut self,
        ev: &Event,
        starting: Option<StartKind>,
        before: HostingState,
        after: HostingState,
        now: Instant,
    ) -> Option<Booted> {
        if *ev == Event::Started {
            self.began = Some((now, starting == Some(StartKind::Create)));
            return None;
        }
        if before == HostingState::Booting && after == HostingState::Running {
            return self.began.take().map(|(t, creation)| Booted {
                boot: now.saturating_duration_since(t),
                creation,
            });
        }
        if after != HostingState::Booting {
            self.began = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosting::core::QmpSignal;
    use HostingState as S;

    #[test]
    fn a_creation_is_timed_from_the_qemu_start_to_readiness() {
        let t0 = Instant::now();
        let mut c = BootClock::default();
        let ready = Event::Probed {
            web: true,
            ssh: true,
        };
        let start = Some(StartKind::Create);
        assert_eq!(
            c.step(
                &Event::Provision,
                None,
                S::Provisioning,
                S::Provisioning,
                t0
            ),
            None
        );
        assert_eq!(
            c.step(&Event::Started, start, S::Provisioning, S::Booting, t0),
            None
        );
        let probing = Event::Probed {
            web: true,
            ssh: false,
        };
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(c.step(&probing, None, S::Booting, S::Booting, t1), None);
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(
            c.step(&ready, None, S::Booting, S::Running, t2),
            Some(Booted {
                boot: Duration::from_secs(30),
                creation: true
            })
        );
        // Reported once.
        assert_eq!(c.step(&ready, None, S::Booting, S::Running, t2), None);
    }

    #[test]
    fn starts_are_timed_and_resets_and_failures_are_not() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(9);
        let ready = Event::Probed {
            web: true,
            ssh: true,
        };
        let mut c = BootClock::default();
        c.step(
            &Event::Started,
            Some(StartKind::Start),
            S::Booting,
            S::Booting,
            t0,
        );
        assert_eq!(
            c.step(&ready, None, S::Booting, S::Running, later),
            Some(Booted {
                boot: Duration::from_secs(9),
                creation: false
            })
        );
        // A guest reset: booting again without a new QEMU.
        let reset = Event::Qmp(QmpSignal::Reset);
        c.step(&reset, None, S::Running, S::Booting, t0);
        assert_eq!(c.step(&ready, None, S::Booting, S::Running, later), None);
        // A boot that fails is forgotten, and the next readiness is not counted for it.
        c.step(
            &Event::Started,
            Some(StartKind::Restart),
            S::Booting,
            S::Booting,
            t0,
        );
        let deadline = Event::Probed {
            web: false,
            ssh: false,
        };
        c.step(&deadline, None, S::Booting, S::Failed, later);
        assert_eq!(c.step(&ready, None, S::Booting, S::Running, later), None);
    }
}
