//! Sleeping while idle: when to look at the site's presence, the doze (the VM paused with
//! the site marked asleep, so the next visitor rings), and the owner's switch.

use tracing::info;

use super::Actor;
use crate::hosting::core::Event;
use crate::hosting::effects::Effects;
use crate::hosting::HostingError;
use crate::store::{Hosting, HostingState};

/// The idle check runs at most this often.
const MIN_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl<E: Effects> Actor<E> {
    /// When to look next whether nobody has visited for the idle period; `None` while the
    /// VM cannot sleep (not running, not wanted by its owner, or off in the config).
    pub(super) fn idle_check(&self) -> Option<tokio::time::Instant> {
        let after = self.ctx.sleep_after;
        if after.is_zero()
            || !self.row.sleep_when_idle
            || self.m.state != HostingState::Running
            || !self.m.vm
        {
            return None;
        }
        let now = tokio::time::Instant::now();
        let left = after.saturating_sub(self.presence.idle_for(now));
        Some(now + left.max(MIN_CHECK))
    }

    /// Puts the VM to sleep if nobody has visited for the idle period and nobody is
    /// visiting now.
    pub(super) async fn maybe_sleep(&mut self) {
        if self.idle_check().is_none()
            || self.presence.idle_for(tokio::time::Instant::now()) < self.ctx.sleep_after
        {
            return;
        }
        // Marked asleep first, then the visits counted (see `presence`): a visit that
        // began in between keeps the VM awake.
        if !self.presence.doze() {
            return;
        }
        self.dozing = true;
        let _ = self.run(Event::Sleep, None).await;
        self.dozing = false;
        if !self.m.asleep {
            self.presence.set_awake();
        }
    }

    /// The owner's switch; turning it off wakes a sleeping VM.
    pub(super) async fn set_sleep(&mut self, enabled: bool) -> Result<Hosting, HostingError> {
        if self.m.state == HostingState::Deleting {
            return Err(HostingError::InvalidState {
                state: self.m.state.as_str(),
                action: "change",
            });
        }
        self.row = self
            .ctx
            .store
            .modify_hosting(self.row.id, |h| h.sleep_when_idle = enabled)?;
        info!(enabled, "sleep while idle");
        if !enabled && self.m.asleep {
            self.run(Event::Wake, None).await?;
        }
        Ok(self.row.clone())
    }
}
