//! Snapshots through the actor: live over QMP while the VM runs, with `qemu-img` while it
//! is stopped, restore only while stopped, a failed take leaves no record, and records and
//! disk agree again after a daemon restart.

use super::*;
use crate::hosting::snapshots::SnapshotOp;
use crate::store::Snapshot;

impl Rig {
    /// What the manager does before asking: the record.
    fn record(&self, id: HostingId, name: &str) {
        self.store
            .modify_hosting(id, |h| {
                h.snapshots.push(Snapshot {
                    name: name.into(),
                    created_at: crate::store::now(),
                })
            })
            .expect("record");
    }

    fn records(&self, id: HostingId) -> Vec<String> {
        let h = self.store.hosting(id).expect("store").expect("row");
        h.snapshots.into_iter().map(|s| s.name).collect()
    }

    async fn snap(
        &self,
        id: HostingId,
        op: SnapshotOp,
        name: &str,
    ) -> Result<Hosting, HostingError> {
        if op == SnapshotOp::Take {
            self.record(id, name);
        }
        let (reply, answer) = oneshot::channel();
        self.ctx
            .registry
            .sender(id)
            .expect("actor")
            .send(Command::Snapshot {
                op,
                name: name.into(),
                actor: "owner".into(),
                reply,
            })
            .await
            .expect("send");
        answer.await.expect("answer")
    }
}

#[tokio::test(start_paused = true)]
async fn live_and_offline_snapshots_and_restore_only_while_stopped() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("olga");
    r.until_state(h.id, HostingState::Running).await;
    // Live: over QMP.
    let got = r.snap(h.id, SnapshotOp::Take, "first").await.expect("take");
    assert_eq!(got.snapshots.len(), 1);
    assert!(r.fx.w().log.contains(&"qmp snapshot take first".to_owned()));
    assert_eq!(r.fx.w().snapshots, ["first"]);
    // No restore under a running guest; nothing changes.
    let e = r
        .snap(h.id, SnapshotOp::Restore, "first")
        .await
        .expect_err("running");
    assert!(
        matches!(
            e,
            HostingError::InvalidState {
                state: "running",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e
        .to_string()
        .contains("restore a snapshot of a VM that is running"));
    assert!(!r.fx.w().log.iter().any(|l| l.starts_with("qemu-img")));
    // Stopped: qemu-img takes, restores and deletes.
    r.act(h.id, Action::Stop).await.expect("stop");
    r.until_state(h.id, HostingState::Stopped).await;
    r.snap(h.id, SnapshotOp::Take, "second")
        .await
        .expect("take");
    r.snap(h.id, SnapshotOp::Restore, "first")
        .await
        .expect("restore");
    assert!(r.fx.w().log.contains(&"qemu-img Revert first".to_owned()));
    assert_eq!(r.records(h.id), ["first", "second"], "a restore keeps them");
    r.snap(h.id, SnapshotOp::Delete, "first")
        .await
        .expect("delete");
    assert_eq!(r.records(h.id), ["second"]);
    assert_eq!(r.fx.w().snapshots, ["second"]);
    let e = r
        .snap(h.id, SnapshotOp::Delete, "first")
        .await
        .expect_err("gone");
    assert!(matches!(e, HostingError::NoSuchSnapshot), "{e:?}");
    // The audit log names each.
    let audit = r.store.audit_log(100).expect("audit");
    let acts: Vec<_> = audit
        .iter()
        .filter(|a| a.action.starts_with("snapshot."))
        .map(|a| format!("{} {}", a.action, a.detail))
        .collect();
    for want in [
        "snapshot.create first",
        "snapshot.create second",
        "snapshot.restore first",
        "snapshot.delete first",
    ] {
        assert!(acts.contains(&want.to_owned()), "{acts:?}");
    }
    // Deleting the hosting takes its disk, snapshots and all.
    r.delete(h.id).await;
    r.until("removed", || r.state(h.id).is_none()).await;
    r.fx.assert_empty("after delete");
}

#[tokio::test(start_paused = true)]
async fn a_failed_take_leaves_no_record_and_a_provisioning_hosting_has_none() {
    let r = rig(1);
    r.fx.w().answers = (true, true);
    let h = r.create("petra");
    r.until_state(h.id, HostingState::Running).await;
    r.fx.w().fail.insert("qmp snapshot");
    let e = r
        .snap(h.id, SnapshotOp::Take, "doomed")
        .await
        .expect_err("fails");
    assert!(matches!(e, HostingError::Step { .. }), "{e:?}");
    assert!(r.records(h.id).is_empty());
    r.fx.w().fail.clear();
    // A hosting whose disk does not exist yet refuses, and keeps no record.
    let p = r.row("quinn", HostingState::Provisioning);
    r.start(&p, Command::Tick);
    let e = r
        .snap(p.id, SnapshotOp::Take, "early")
        .await
        .expect_err("no disk yet");
    assert!(matches!(e, HostingError::InvalidState { .. }), "{e:?}");
    assert!(r.records(p.id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn records_and_disk_agree_after_a_restart() {
    let r = rig(1);
    let h = r.row("rosa", HostingState::Stopped);
    r.fx.w().dirs.insert(h.id);
    // "kept" is in both; "taken" was taken just before a crash but its record was lost
    // (an older backup), "deleted" was deleted from the disk but not from the row.
    r.record(h.id, "kept");
    r.record(h.id, "deleted");
    r.fx.w().snapshots = vec!["kept".into(), "taken".into()];
    let (done, seen) = oneshot::channel();
    r.start(&h, Command::Recover { done: Some(done) });
    seen.await.expect("recovered");
    assert_eq!(r.records(h.id), ["kept"]);
    assert_eq!(r.fx.w().snapshots, ["kept"]);
    assert_eq!(r.state(h.id), Some(HostingState::Stopped));
}
