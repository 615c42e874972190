//! Where a hosting's files live: `state_dir/vms/<id>/`. Deterministic, so that a new
//! daemon finds the pidfile and QMP socket of a VM started by an earlier one.
//!
//! A VM directory belongs to its QEMU's uid, mode 0700 (`vm::confine::hand_over`); the
//! directories above it are 0711 so that uid can reach it and no other VM can list them.

use std::path::{Path, PathBuf};

use crate::store::HostingId;

/// The files of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    pub dir: PathBuf,
    pub overlay: PathBuf,
    pub seed: PathBuf,
    pub qmp: PathBuf,
    pub pidfile: PathBuf,
    pub serial_log: PathBuf,
    /// The serial console's socket (QEMU listens, roost's console hub connects).
    pub serial_sock: PathBuf,
    /// The guest agent channel's socket (QEMU listens, roost connects after a pause).
    pub agent_sock: PathBuf,
    pub qemu_log: PathBuf,
}

/// Mode of `state_dir/vms` (and of the state directory itself): each QEMU, running as its
/// VM's own uid, may pass through to its own 0700 directory, but nobody may list them.
pub const VMS_DIR_MODE: u32 = 0o711;

/// The directory holding every VM's directory.
pub fn vms_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("vms")
}

/// Creates `state_dir/vms` if needed and sets its mode to exactly [`VMS_DIR_MODE`].
pub fn prepare_vms_dir(state_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let vms = vms_dir(state_dir);
    std::fs::create_dir_all(&vms)?;
    std::fs::set_permissions(&vms, std::fs::Permissions::from_mode(VMS_DIR_MODE))?;
    Ok(vms)
}

impl VmPaths {
    pub fn new(state_dir: &Path, id: HostingId) -> VmPaths {
        let dir = vms_dir(state_dir).join(id.to_string());
        VmPaths {
            overlay: dir.join("disk.qcow2"),
            seed: dir.join("seed.img"),
            qmp: dir.join("qmp.sock"),
            pidfile: dir.join("qemu.pid"),
            serial_log: dir.join("serial.log"),
            serial_sock: dir.join("serial.sock"),
            agent_sock: dir.join("agent.sock"),
            qemu_log: dir.join("qemu.log"),
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let id: HostingId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().expect("ulid");
        let p = VmPaths::new(Path::new("/var/lib/roost"), id);
        assert_eq!(
            p.dir,
            Path::new("/var/lib/roost/vms/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        );
        assert_eq!(p.qmp, p.dir.join("qmp.sock"));
        // A unix socket path must fit in sun_path (108 bytes).
        assert!(p.qmp.as_os_str().len() < 108);
    }
}
