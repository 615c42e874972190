//! Serial consoles: at most one hub per VM ([`vm::serial::Hub`]), shared by every viewer
//! of that VM and gone with the last of them.

use std::collections::HashMap;
use std::sync::Weak;

use crate::store::{HostingId, HostingState};
use crate::vm::serial::{ConsoleError, Hub, Viewer};

use super::paths::VmPaths;
use super::{HostingError, Hostings};

/// The live hubs, by hosting.
#[derive(Default)]
pub(super) struct Consoles {
    hubs: tokio::sync::Mutex<HashMap<HostingId, Weak<Hub>>>,
}

impl Hostings {
    /// Joins the serial console of hosting `id` as one more viewer. Who may is the
    /// caller's decision (the owner, an administrator).
    pub async fn console(&self, id: HostingId) -> Result<Viewer, HostingError> {
        let h = self
            .inner
            .store
            .hosting(id)?
            .ok_or(HostingError::NotFound)?;
        if !matches!(
            h.state,
            HostingState::Booting | HostingState::Running | HostingState::Paused
        ) {
            return Err(HostingError::InvalidState {
                state: h.state.as_str(),
                action: "open the console of",
            });
        }
        let cfg = &self.inner.cfg;
        let consoles = &self.inner.consoles;
        // One connection attempt at a time, so two first viewers share one hub.
        let mut hubs = consoles.hubs.lock().await;
        hubs.retain(|_, w| w.strong_count() > 0);
        let live = hubs
            .get(&id)
            .and_then(Weak::upgrade)
            .filter(|hub| !hub.is_closed());
        let hub = match live {
            Some(hub) => hub,
            None => {
                let p = VmPaths::new(&cfg.state_dir, id);
                let hub = Hub::connect(
                    &p.serial_sock,
                    &p.serial_log,
                    cfg.console.scrollback_bytes,
                    cfg.console.max_viewers,
                )
                .await
                .map_err(|e| {
                    tracing::info!(vm = %id, error = %e, "serial console unavailable");
                    HostingError::ConsoleUnavailable(
                        "the VM's serial console is not reachable now: it is not running, or it was started by an older roost (restart the VM)".into(),
                    )
                })?;
                hubs.insert(id, std::sync::Arc::downgrade(&hub));
                hub
            }
        };
        drop(hubs);
        hub.join().map_err(|e| match e {
            ConsoleError::Full(n) => HostingError::ConsoleUnavailable(format!(
                "this console already has {n} viewers; close one and try again"
            )),
            e => HostingError::ConsoleUnavailable(e.to_string()),
        })
    }
}
