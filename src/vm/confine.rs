//! Who a QEMU runs as: one uid per VM, dropped to in the child before `exec`.
//!
//! Owns the per-VM credentials ([`vm_uid`]: a reserved range plus the VM's address offset,
//! so two VMs never share a uid), handing a VM directory to its uid ([`hand_over`]), and the
//! drop itself ([`drop_privileges`], called between fork and exec by `process`). Must not
//! touch anything outside the VM directory it is given; knows nothing of users or hostings.
//!
//! Why a drop before exec instead of QEMU's `-runas`: with `-runas` QEMU starts as root with
//! every capability, opens its files as root and calls setuid itself, so its seccomp filter
//! must allow privilege changes (`-sandbox elevateprivileges=allow`). Dropped in the child,
//! QEMU never holds a capability (`CapEff` 0, `no_new_privs` set, so no setuid binary or file
//! capability can give one back), opens every file as the VM's uid (so a wrong mode shows at
//! once instead of being bypassed by root), and its sandbox denies setuid/setgid outright.
//! What QEMU must have before the drop is already open in the daemon: the tap fd and its
//! output log are inherited, the cgroup files are written by the child before it drops.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::VmError;

pub use crate::addr::{vm_uid, DEFAULT_UID_BASE};

/// Mode of a VM directory: its QEMU only (root, the daemon, reads it through
/// CAP_DAC_OVERRIDE).
pub const VM_DIR_MODE: u32 = 0o700;
/// Mode of the files in a VM directory.
pub const VM_FILE_MODE: u32 = 0o600;

/// The uid, gid and supplementary groups a QEMU runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`kvm` under KVM, nothing else).
    pub groups: Vec<u32>,
}

impl Credentials {
    /// uid = gid = `uid`; the `kvm` group (when `kvm_gid` is given) so QEMU can open
    /// `/dev/kvm`.
    pub fn for_vm(uid: u32, kvm_gid: Option<u32>) -> Credentials {
        Credentials {
            uid,
            gid: uid,
            groups: kvm_gid.into_iter().collect(),
        }
    }
}

/// The gid of the `kvm` group, if the host has one.
pub fn kvm_gid() -> Option<u32> {
    nix::unistd::Group::from_name("kvm")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Gives `dir` and everything directly in it to `uid:gid`: the directory 0700, regular
/// files roost made 0600 (overlay, seed, its QEMU output log); sockets keep their mode.
/// Symlinks are not followed (a link planted in the directory cannot make roost chown its
/// target). Needs CAP_CHOWN, not CAP_FOWNER.
pub fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<(), VmError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what, path: &Path, source| VmError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io("reading", dir, e))?;
    if !meta.is_dir() {
        return Err(io(
            "handing over",
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    // Modes are set while roost still owns the file (after the chown that would take
    // CAP_FOWNER). What already belongs to the VM's uid keeps its mode: the 0700 directory
    // is what keeps other VMs out.
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != uid {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(VM_DIR_MODE))
            .map_err(|e| io("chmod", dir, e))?;
    }
    lchown(dir, uid, gid).map_err(|e| io("chown", dir, e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| io("listing", dir, e))?;
    for e in entries {
        let e = e.map_err(|e| io("listing", dir, e))?;
        let path = e.path();
        let m = std::fs::symlink_metadata(&path).map_err(|e| io("reading", &path, e))?;
        let ft = m.file_type();
        if ft.is_symlink() || ft.is_dir() {
            continue;
        }
        if ft.is_file() && m.uid() != uid {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(VM_FILE_MODE))
                .map_err(|e| io("chmod", &path, e))?;
        }
        lchown(&path, uid, gid).map_err(|e| io("chown", &path, e))?;
    }
    Ok(())
}

fn lchown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a NUL-terminated path and integer ids.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Becomes `c` for good: supplementary groups, gid, uid (which clears every capability),
/// then `no_new_privs`. Must be called in the child between fork and exec: it only makes
/// system calls and does not allocate (`c.groups` was built before the fork).
///
/// # Safety
/// Only to be called in a freshly forked child (it changes the whole process's identity).
pub unsafe fn drop_privileges(c: &Credentials) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls with integer arguments and a pointer/length pair into a
    // live Vec.
    unsafe {
        // Ambient capabilities would survive exec; a daemon never sets any, but clear them.
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        check(libc::setgroups(c.groups.len(), c.groups.as_ptr()))?;
        check(libc::setresgid(c.gid, c.gid, c.gid))?;
        // Leaving uid 0 in all three ids clears the permitted and effective capabilities.
        check(libc::setresuid(c.uid, c.uid, c.uid))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_add_only_the_kvm_group() {
        assert_eq!(
            Credentials::for_vm(7, Some(108)),
            Credentials {
                uid: 7,
                gid: 7,
                groups: vec![108]
            }
        );
        assert!(Credentials::for_vm(7, None).groups.is_empty());
    }

    #[test]
    fn hand_over_refuses_a_file_and_keeps_the_modes_of_what_the_uid_owns() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        assert!(hand_over(&f, uid, gid).is_err());
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        // Already the uid's: nothing to chmod (and no CAP_FOWNER needed).
        hand_over(dir.path(), uid, gid).expect("hand over");
        assert_eq!(mode(&f), 0o644);
        if uid == 0 {
            // As root: to another uid, modes first, then owners.
            hand_over(dir.path(), 65534, 65534).expect("hand over to nobody");
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&f), 0o600);
            assert_eq!(std::fs::metadata(&f).expect("stat").uid(), 65534);
        }
    }
}
