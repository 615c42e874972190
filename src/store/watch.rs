//! Who watches what the store writes: every committed write that changes what a user's
//! `GET /api/v1/host` shows (their hosting, its state, its domains) is announced with the
//! user's id, and a [`UserWatch`] wakes only for its own user. A watcher that falls behind
//! is told "changed" (it re-reads), never blocked and never blocking the writer.

use tokio::sync::broadcast;

use super::UserId;

/// How many announcements a slow watcher may be behind before it is told to re-read.
const BACKLOG: usize = 1024;

/// The announcing side, one per store.
pub(super) struct Announcer(broadcast::Sender<UserId>);

impl Announcer {
    pub(super) fn new() -> Announcer {
        Announcer(broadcast::channel(BACKLOG).0)
    }

    /// Announces a committed write that concerns `user` (no watcher: nothing happens).
    pub(super) fn written(&self, user: UserId) {
        let _ = self.0.send(user);
    }

    pub(super) fn watch(&self, user: UserId) -> UserWatch {
        UserWatch {
            user,
            rx: self.0.subscribe(),
        }
    }
}

/// Wakes when what one user's hosting view shows may have changed.
pub struct UserWatch {
    user: UserId,
    rx: broadcast::Receiver<UserId>,
}

/// The store is gone: nothing will be announced again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store is closed")]
pub struct Closed;

impl UserWatch {
    /// Returns after the next write concerning this user (at once when writes were missed,
    /// so the caller re-reads); writes concerning other users are skipped without a wake
    /// of the caller.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            match self.rx.recv().await {
                Ok(u) if u == self.user => return Ok(()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                Err(broadcast::error::RecvError::Closed) => return Err(Closed),
            }
        }
    }
}
