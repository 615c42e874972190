//! Internal qcow2 snapshots of a VM's overlay: taken and deleted over QMP while its QEMU
//! runs (see [`super::Qmp::snapshot_create`]), and with `qemu-img` while it does not.
//! Reverting is offline only: the disk changes under a running guest's page cache otherwise.
//!
//! Snapshots hold the overlay's clusters only; the base image beneath never changes, so an
//! overlay's snapshot is the whole disk. They are disk-only (no memory state): taking one is
//! like cutting the power at that instant, which a journalling file system survives.
//!
//! `qemu-img` takes the image's lock, so an offline operation on a disk that a QEMU still
//! holds fails instead of corrupting it; listing reads with `-U` (shared), so it works in
//! any state.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use super::disk::qemu_img;
use super::{Credentials, VmError};

/// The QMP device name of the VM's disk: the first `-drive if=virtio` (see `argv`).
pub const DISK_DEVICE: &str = "virtio0";

/// What `qemu-img snapshot` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineOp {
    Create,
    Delete,
    Revert,
}

/// The `qemu-img` argv for `op` on snapshot `name` of `overlay` (pure). `name` must start
/// with a letter: `qemu-img` matches a snapshot's numeric id before its name.
pub fn offline_argv(op: OfflineOp, name: &str, overlay: &Path) -> Vec<OsString> {
    let flag = match op {
        OfflineOp::Create => "-c",
        OfflineOp::Delete => "-d",
        OfflineOp::Revert => "-a",
    };
    vec![
        "snapshot".into(),
        "-q".into(),
        flag.into(),
        name.into(),
        overlay.into(),
    ]
}

/// Runs `op` on `overlay` (no QEMU may hold it) as `user` (the VM's own identity: see
/// [`super::disk`]'s `qemu_img`). Creating refuses a name the disk has already (`qemu-img`
/// itself would make a second snapshot of that name).
pub async fn offline(
    op: OfflineOp,
    name: &str,
    overlay: &Path,
    user: Option<&Credentials>,
) -> Result<(), VmError> {
    if op == OfflineOp::Create && names(overlay, user).await?.iter().any(|n| n == name) {
        return Err(VmError::QemuImgFailed {
            status: "refused".into(),
            stderr: format!("a snapshot named {name:?} exists already"),
        });
    }
    qemu_img(offline_argv(op, name, overlay), user)
        .await
        .map(drop)
}

/// The names of the snapshots in `overlay`, read shared (a running QEMU may hold it), as
/// `user`.
pub async fn names(overlay: &Path, user: Option<&Credentials>) -> Result<Vec<String>, VmError> {
    let info = [
        OsStr::new("info"),
        OsStr::new("-U"),
        OsStr::new("--output=json"),
        overlay.as_os_str(),
    ];
    parse_names(&qemu_img(info, user).await?).map_err(|detail| VmError::QemuImgFailed {
        status: "unreadable output".into(),
        stderr: detail,
    })
}

/// Pure part of [`names`]: `qemu-img info --output=json`'s snapshot names.
pub fn parse_names(json: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let Some(list) = v.get("snapshots") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("snapshots is not a list")?;
    list.iter()
        .map(|s| {
            s.get("name")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
                .ok_or_else(|| "a snapshot has no name".to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_names_the_operation_and_the_snapshot_by_name() {
        let a = offline_argv(
            OfflineOp::Revert,
            "before-upgrade",
            Path::new("/v/disk.qcow2"),
        );
        let a: Vec<_> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            a,
            ["snapshot", "-q", "-a", "before-upgrade", "/v/disk.qcow2"]
        );
        let flag = |op| offline_argv(op, "x", Path::new("d"))[2].clone();
        assert_eq!(flag(OfflineOp::Create), "-c");
        assert_eq!(flag(OfflineOp::Delete), "-d");
    }

    #[test]
    fn names_come_from_qemu_img_info() {
        let j = br#"{"virtual-size": 1073741824, "snapshots": [
            {"vm-clock-nsec": 0, "name": "one", "date-sec": 1796334788, "id": "1", "vm-state-size": 0},
            {"name": "two", "id": "2"}], "format": "qcow2"}"#;
        assert_eq!(parse_names(j).expect("parse"), ["one", "two"]);
        assert_eq!(
            parse_names(br#"{"format": "qcow2"}"#).expect("none"),
            Vec::<String>::new()
        );
        assert!(parse_names(br#"{"snapshots": [{"id": "1"}]}"#).is_err());
        assert!(parse_names(b"not json").is_err());
    }

    /// `qemu-img` on a VM's disk runs as the VM's uid, not as root: a root-only disk is
    /// refused to it, the same disk handed to that uid is read. (Needs root to drop.)
    #[tokio::test]
    async fn qemu_img_reads_a_disk_as_the_given_user_only() {
        if !super::super::disk::qemu_img_at_hand() || !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs qemu-img and root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("16M")
            .status()
            .expect("qemu-img create");
        assert!(st.success());
        // Private as a VM's files are (`confine`): root's own until handed over.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        // An unused uid from the range VMs get (see `confine::vm_uid`).
        let vm = Credentials::for_vm(64_999, None);
        assert!(names(&disk, None).await.is_ok(), "root reads it");
        let e = names(&disk, Some(&vm)).await.expect_err("not the VM's");
        assert!(e.to_string().contains("qemu-img"), "{e}");
        super::super::confine::hand_over(dir.path(), vm.uid, vm.gid).expect("hand over");
        assert_eq!(
            names(&disk, Some(&vm)).await.expect("the VM's"),
            Vec::<String>::new()
        );
        offline(OfflineOp::Create, "mine", &disk, Some(&vm))
            .await
            .expect("create as the VM");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&disk).expect("meta").uid(), vm.uid);
    }

    /// With `qemu-img` at hand: create, list, revert and delete on a real overlay, and a
    /// revert that brings the old bytes back.
    #[tokio::test]
    async fn a_real_overlay_round_trip() {
        if !super::super::disk::qemu_img_at_hand() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("16M")
            .status()
            .expect("qemu-img create");
        assert!(st.success());
        let io = |cmd: &str| {
            std::process::Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", cmd])
                .arg(&disk)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        io("write -P 0xab 0 64k");
        offline(OfflineOp::Create, "first", &disk, None)
            .await
            .expect("create");
        io("write -P 0xcd 0 64k");
        assert!(offline(OfflineOp::Create, "first", &disk, None)
            .await
            .is_err());
        offline(OfflineOp::Create, "second", &disk, None)
            .await
            .expect("create");
        assert_eq!(
            names(&disk, None).await.expect("names"),
            ["first", "second"]
        );
        offline(OfflineOp::Revert, "first", &disk, None)
            .await
            .expect("revert");
        let read = io("read -P 0xab 0 64k");
        assert!(read.contains("read 65536/65536"), "{read}");
        assert!(!read.contains("Pattern verification failed"), "{read}");
        offline(OfflineOp::Delete, "first", &disk, None)
            .await
            .expect("delete");
        assert_eq!(names(&disk, None).await.expect("names"), ["second"]);
        assert!(offline(OfflineOp::Delete, "first", &disk, None)
            .await
            .is_err());
    }
}
