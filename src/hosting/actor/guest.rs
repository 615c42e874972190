//! The owner's requests to the running guest through its agent: the console password.

use tracing::info;

use super::Actor;
use crate::hosting::core::Event;
use crate::hosting::effects::Effects;
use crate::hosting::HostingError;
use crate::store::{Hosting, HostingState};

impl<E: Effects> Actor<E> {
    /// Sets the owner's console password in the running guest (a sleeping one is woken
    /// first), then records its hash for the guest's later seeds.
    pub(super) async fn console_password(
        &mut self,
        crypted: String,
    ) -> Result<Hosting, HostingError> {
        if self.m.asleep {
            self.run(Event::Wake, None).await?;
        }
        if self.m.state != HostingState::Running || self.vm.is_none() {
            return Err(HostingError::InvalidState {
                state: self.m.state.as_str(),
                action: "set the console password of",
            });
        }
        if let Err(e) = self.ctx.fx.set_password(&self.row, &crypted).await {
            tracing::warn!(error = %e, "cannot set the console password in the guest");
            return Err(HostingError::GuestAgent);
        }
        self.row = self
            .ctx
            .store
            .modify_hosting(self.row.id, |h| h.console_password_hash = Some(crypted))?;
        info!("console password set through the guest agent");
        Ok(self.row.clone())
    }
}
