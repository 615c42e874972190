//! Carrying out the decision core's effects, and attaching or detaching the live VM.

use std::sync::Arc;

use tracing::{info, warn};

use super::{Actor, DELETE_STOP};
use crate::hosting::core::{Effect, Event};
use crate::hosting::effects::{Effects, Vm};
use crate::hosting::HostingError;
use crate::store::{HostingState, StoreError};

impl<E: Effects> Actor<E> {
    pub(super) async fn attach(&mut self, vm: Arc<E::Vm>) {
        self.events = vm.events().await;
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(vm.clone());
        self.vm = Some(vm);
    }

    pub(super) fn detach(&mut self) {
        self.vm = None;
        self.events = None;
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Carries out one effect; what it reports is the next event.
    pub(super) async fn apply(&mut self, effect: Effect) -> Result<Option<Event>, HostingError> {
        let fx = self.ctx.fx.clone();
        let h = self.row.clone();
        match effect {
            Effect::Cleanup => {
                info!("undoing an interrupted creation");
                fx.kill_unwatched(h.id).await;
                fx.delete_tap(&h).await;
                fx.remove_cgroup(h.id).await;
                fx.remove_files(h.id);
                Ok(None)
            }
            Effect::StartVm => Ok(Some(match self.start_vm().await {
                Ok(()) => Event::Started,
                Err(e) => {
                    warn!(error = %e, "start failed; undone");
                    Event::StartFailed(e.to_string())
                }
            })),
            Effect::Qmp(action) => {
                let vm = self.vm.clone().ok_or(HostingError::InvalidState {
                    state: h.state.as_str(),
                    action: action.as_str(),
                })?;
                vm.qmp(action)
                    .await
                    .map_err(|e| HostingError::Internal(crate::hosting::chain(&e)))?;
                Ok(Some(Event::QmpDone(action)))
            }
            Effect::StopVm { graceful } => {
                if let Some(vm) = self.vm.clone() {
                    if graceful {
                        let deadline = match h.state {
                            HostingState::Deleting => self.ctx.stop_timeout.min(DELETE_STOP),
                            _ => self.ctx.stop_timeout,
                        };
                        // A paused guest (asleep, or paused by an administrator) cannot
                        // hear the power button: let it run first, or every stop of one
                        // would wait the whole deadline.
                        if vm.status().await.is_ok_and(|s| s == "paused") {
                            if let Err(e) = vm.qmp(crate::hosting::lifecycle::Action::Resume).await
                            {
                                warn!(error = %crate::hosting::chain(&e), "cannot resume a paused vm before its stop");
                            }
                        }
                        vm.stop(deadline).await;
                    } else {
                        vm.kill().await;
                    }
                }
                Ok(None)
            }
            Effect::Unplug => {
                fx.close_ssh(&h).await;
                fx.kill_unwatched(h.id).await;
                fx.delete_tap(&h).await;
                fx.remove_cgroup(h.id).await;
                Ok(None)
            }
            Effect::Sleep => {
                let Some(vm) = self.vm.clone() else {
                    return Ok(None);
                };
                match vm.qmp(crate::hosting::lifecycle::Action::Pause).await {
                    Ok(()) => {
                        info!("asleep: nobody visited for the idle period");
                        Ok(Some(Event::Slept))
                    }
                    Err(e) => {
                        warn!(error = %crate::hosting::chain(&e), "cannot pause an idle vm; it stays awake");
                        Ok(None)
                    }
                }
            }
            Effect::SyncClock => {
                if let Err(e) = fx.sync_clock(&h).await {
                    warn!(error = %e, "cannot set the guest's clock after a pause");
                }
                Ok(None)
            }
            Effect::OpenSsh => {
                if let Err(e) = fx.open_ssh(&h).await {
                    warn!(error = %e, "cannot reopen the ssh port");
                }
                Ok(None)
            }
            Effect::Destroy => {
                fx.remove_files(h.id);
                match self.ctx.store.remove_hosting(h.id, &self.deleted_by) {
                    Ok(()) | Err(StoreError::NoSuchHosting) => info!("hosting deleted"),
                    Err(e) => warn!(error = %e, "cannot remove the hosting's row"),
                }
                if let Err(e) = fx.firewall(None).await {
                    warn!(error = %e, "cannot update the firewall");
                }
                Ok(None)
            }
        }
    }
}
