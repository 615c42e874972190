//! What the actor's `select!` waits on besides its mailbox: its QEMU's exit, the restart
//! timer, and the QMP events the core cares about.

use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::hosting::core::QmpSignal;
use crate::hosting::effects::Vm;
use crate::vm::VmEvent;

pub(super) async fn exited<V: Vm>(vm: Option<&V>) {
    match vm {
        Some(v) => v.exited().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next QMP event the core cares about; `None` when there is none to wait for any
/// more (the receiver is then dropped).
pub(super) async fn next_event(rx: &mut Option<broadcast::Receiver<VmEvent>>) -> Option<QmpSignal> {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match r.recv().await {
            Ok(VmEvent::Stop) => return Some(QmpSignal::Stop),
            Ok(VmEvent::Resume) => return Some(QmpSignal::Resume),
            Ok(VmEvent::Reset { .. }) => return Some(QmpSignal::Reset),
            Ok(VmEvent::Shutdown { guest: true, .. }) => return Some(QmpSignal::GuestShutdown),
            Ok(VmEvent::Powerdown) => info!("power button pressed"),
            Ok(VmEvent::Shutdown { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => warn!(n, "missed qmp events"),
            Ok(VmEvent::Disconnected) | Err(broadcast::error::RecvError::Closed) => {
                *rx = None;
                return None;
            }
        }
    }
}
