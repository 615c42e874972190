//! Snapshots of a hosting's disk: the name rule, and the manager's side (admission and the
//! record written before the snapshot is taken). The hosting's actor takes, deletes and
//! reverts them (`actor::snapshot`), live over QMP or with `qemu-img` while no QEMU runs.
//!
//! Every snapshot is charged a whole disk against the host's disk budget (`capacity`): it
//! keeps the blocks the guest overwrites after it. Its record is written (under the
//! admission lock) before it is taken and removed after it is deleted, so the charge is
//! never less than what the disk holds; the actor reconciles records with the disk after a
//! daemon restart.

use tracing::info;

use super::actor::Command;
use super::manager::{lock, Hostings};
use super::{capacity, HostingError};
use crate::store::{Hosting, HostingId, Snapshot, StoreError};

/// What can be done to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOp {
    /// Take it (its record is already written).
    Take,
    Delete,
    /// Put the disk back as it was when the snapshot was taken (the VM must be stopped).
    Restore,
}

impl SnapshotOp {
    /// The verb of the audit entry, `snapshot.<verb>`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotOp::Take => "create",
            SnapshotOp::Delete => "delete",
            SnapshotOp::Restore => "restore",
        }
    }
}

/// The longest snapshot name.
pub const MAX_NAME: usize = 40;

/// A snapshot name: 1 to 40 of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter (qcow2
/// looks a snapshot up by its numeric id before its name, so a name of digits could pick
/// another snapshot).
pub fn check_name(name: &str) -> Result<(), HostingError> {
    let bad = |why: &str| Err(HostingError::InvalidSnapshotName(why.into()));
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("a snapshot name has 1 to 40 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("a snapshot name starts with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return bad("a snapshot name has only lowercase letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl Hostings {
    /// Takes snapshot `name` of the hosting's disk: checks the name, the hosting's limit
    /// and the host's disk budget, writes the record, then has the actor take it (live or
    /// not). A refusal or failure leaves no record and no snapshot.
    pub async fn take_snapshot(
        &self,
        id: HostingId,
        name: &str,
        actor: &str,
    ) -> Result<Hosting, HostingError> {
        self.rt()?;
        check_name(name)?;
        let max = self.inner.cfg.limits.snapshots_per_hosting;
        {
            // From the budget check to the record, one admission at a time.
            let _admission = lock(&self.inner.admission);
            let report = self.capacity()?;
            capacity::admit_snapshot(&report.budget, &report.usage, report.vm)
                .map_err(|r| HostingError::DiskFull(r.to_string()))?;
            self.inner
                .store
                .try_modify_hosting(id, |h| {
                    if h.snapshots.iter().any(|s| s.name == name) {
                        return Err(HostingError::SnapshotExists(name.into()));
                    }
                    if h.snapshots.len() >= max {
                        return Err(HostingError::TooManySnapshots(max));
                    }
                    h.snapshots.push(Snapshot {
                        name: name.into(),
                        created_at: crate::store::now(),
                    });
                    Ok(())
                })
                .map_err(not_found)?;
        }
        let h = self.snapshot_op(id, SnapshotOp::Take, name, actor).await?;
        info!(hosting = %id, snapshot = name, "snapshot taken");
        Ok(h)
    }

    /// Deletes snapshot `name`, or puts the disk back to it ([`SnapshotOp::Restore`]: the
    /// hosting must be stopped, or failed).
    pub async fn snapshot_op(
        &self,
        id: HostingId,
        op: SnapshotOp,
        name: &str,
        actor: &str,
    ) -> Result<Hosting, HostingError> {
        self.rt()?;
        let (name, actor) = (name.to_owned(), actor.to_owned());
        self.ask(id, |reply| Command::Snapshot {
            op,
            name,
            actor,
            reply,
        })
        .await
    }
}

fn not_found(e: HostingError) -> HostingError {
    match e {
        HostingError::Store(StoreError::NoSuchHosting) => HostingError::NotFound,
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names() {
        for ok in ["a", "before-upgrade", "v1.2_b", &"x".repeat(MAX_NAME)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "12abc",
            "-x",
            ".x",
            "Upper",
            "a b",
            "a/b",
            "ünï",
            "a;rm",
            &"x".repeat(MAX_NAME + 1),
        ] {
            let e = check_name(bad).expect_err(bad);
            assert!(matches!(e, HostingError::InvalidSnapshotName(_)), "{bad}");
        }
    }

    #[test]
    fn the_limit_says_what_to_do() {
        assert!(HostingError::TooManySnapshots(3)
            .to_string()
            .contains("at most 3 snapshots; delete one"));
        assert!(HostingError::TooManySnapshots(0)
            .to_string()
            .contains("turned off"));
    }
}
