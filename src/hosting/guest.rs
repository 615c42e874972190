//! What the owner asks of the running guest itself, through its guest agent: a new
//! console password (the agent sets it as a crypt(3) hash; the guest never sees the
//! password).

use super::actor::Command;
use super::manager::Hostings;
use super::HostingError;
use crate::store::{Hosting, HostingId};

impl Hostings {
    /// Sets the owner's console password in the running VM, through its guest agent; the
    /// hash is recorded once the guest took it.
    pub async fn set_console_password(
        &self,
        id: HostingId,
        password: &str,
    ) -> Result<Hosting, HostingError> {
        let password = password.to_owned();
        let crypted =
            tokio::task::spawn_blocking(move || crate::cloudinit::hash_console_password(&password))
                .await
                .map_err(|e| HostingError::Internal(e.to_string()))?
                .map_err(|e| HostingError::Internal(crate::error_chain(&e)))?;
        self.ask(id, |reply| Command::ConsolePassword { crypted, reply })
            .await
    }
}
