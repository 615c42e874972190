//! What reaches a hosting's actor from outside ([`Command`]) and what every actor shares
//! ([`Ctx`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::Registry;
use crate::hosting::effects::{Effects, StepError};
use crate::hosting::lifecycle::Action;
use crate::hosting::snapshots::SnapshotOp;
use crate::hosting::HostingError;
use crate::store::{Hosting, Store};

/// What others ask of a hosting's actor.
pub(in crate::hosting) enum Command {
    /// Build and boot a new reservation.
    Provision,
    /// First look after a daemon start: adopt a running QEMU or act on its absence.
    Recover { done: Option<oneshot::Sender<()>> },
    /// An action; answered with the hosting as it stands after it.
    Act {
        action: Action,
        actor: String,
        reply: oneshot::Sender<Result<Hosting, HostingError>>,
    },
    /// Delete; answered once `deleting` is recorded, before the teardown.
    Delete {
        actor: String,
        reply: oneshot::Sender<Result<Hosting, HostingError>>,
    },
    /// A snapshot of the disk: take (its record is written), delete or restore; answered
    /// with the hosting as it stands after it.
    Snapshot {
        op: SnapshotOp,
        name: String,
        actor: String,
        reply: oneshot::Sender<Result<Hosting, HostingError>>,
    },
    /// The reconciler's periodic nudge.
    Tick,
    /// The owner's new console password (its crypt(3) hash), set in the running guest
    /// through its agent and then recorded; answered with the hosting.
    ConsolePassword {
        crypted: String,
        reply: oneshot::Sender<Result<Hosting, HostingError>>,
    },
    /// The owner's choice whether the VM sleeps while idle; answered with the hosting.
    SetSleep {
        enabled: bool,
        reply: oneshot::Sender<Result<Hosting, HostingError>>,
    },
}

/// What every actor shares.
pub(in crate::hosting) struct Ctx<E: Effects> {
    pub store: Store,
    pub fx: Arc<E>,
    /// Creations booting at once (held from the slot to readiness).
    pub slots: Arc<Semaphore>,
    /// Test hook: `ROOST_FAULTS=step,...` makes those steps of the start saga fail.
    pub faults: HashSet<String>,
    pub boot_timeout: Duration,
    pub stop_timeout: Duration,
    /// A hosting that lets its VM sleep does so after nobody visited for this long (zero:
    /// never).
    pub sleep_after: Duration,
    pub registry: Registry<E>,
}

impl<E: Effects> Ctx<E> {
    pub(in crate::hosting) fn fault(&self, step: &'static str) -> Result<(), StepError> {
        if self.faults.contains(step) {
            Err(StepError::new(step, "injected fault"))
        } else {
            Ok(())
        }
    }
}
