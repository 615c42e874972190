//! The owner's switch for sleeping while idle. The sleeping itself is the actor's
//! (`actor/sleep.rs`); visitors wake it through the hosting's `presence`.

use super::actor::Command;
use super::manager::Hostings;
use super::HostingError;
use crate::store::{Hosting, HostingId};

impl Hostings {
    /// Lets the VM sleep while nobody visits (`true`), or keeps it awake (`false`, which
    /// wakes a sleeping one). Answered with the hosting as it stands after it.
    pub async fn set_sleep(&self, id: HostingId, enabled: bool) -> Result<Hosting, HostingError> {
        self.ask(id, |reply| Command::SetSleep { enabled, reply })
            .await
    }

    /// The idle period after which a VM whose owner allows it sleeps (`None`: never).
    pub fn sleep_after(&self) -> Option<std::time::Duration> {
        Some(self.inner.ctx.sleep_after).filter(|d| !d.is_zero())
    }
}
