//! VM disks: qcow2 overlays on the shared base image, and the free-space check before creating.
//!
//! An overlay records its backing file's path, so [`create_overlay`] resolves the base to its
//! real path first: the image's `default` symlink may later point at a newer build, and an
//! overlay silently re-based onto different bytes would corrupt the guest's file system.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tracing::info;

use super::VmError;

/// The `qemu-img` argv for an overlay of `base` (pure; `base` should already be canonical).
pub fn overlay_argv(base: &Path, overlay: &Path, size_gib: u32) -> Vec<OsString> {
    vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        "qcow2".into(),
        "-b".into(),
        base.into(),
        overlay.into(),
        format!("{size_gib}G").into(),
    ]
}

/// Creates `overlay` as a qcow2 backed by `base` with a virtual size of `size_gib` GiB. Costs
/// the same whatever the base's size (only a header is written). Refuses to overwrite.
pub async fn create_overlay(base: &Path, overlay: &Path, size_gib: u32) -> Result<(), VmError> {
    if overlay.exists() {
        return Err(VmError::OverlayExists(overlay.to_path_buf()));
    }
    let base: PathBuf = std::fs::canonicalize(base).map_err(|source| VmError::Io {
        what: "resolving base image",
        path: base.to_path_buf(),
        source,
    })?;
    // A new file, written by nothing else yet: roost's own identity is fine here.
    if let Err(e) = qemu_img(overlay_argv(&base, overlay, size_gib), None).await {
        // Do not leave a half-written overlay behind.
        let _ = std::fs::remove_file(overlay);
        return Err(e);
    }
    info!(overlay = %overlay.display(), base = %base.display(), size_gib, "overlay created");
    Ok(())
}

/// How long one `qemu-img` run may take before it is killed.
const QEMU_IMG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `qemu-img` with `args`, as `user` when given (a VM's disk is written by its QEMU,
/// which may be compromised: the file is parsed with that QEMU's identity and no
/// capabilities, never as root), killed after [`QEMU_IMG_DEADLINE`]. Its standard output,
/// or its status and standard error.
pub(super) async fn qemu_img<I, S>(
    args: I,
    user: Option<&super::Credentials>,
) -> Result<Vec<u8>, VmError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = tokio::process::Command::new("qemu-img");
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(c) = user.cloned() {
        // SAFETY: `drop_privileges` only makes system calls on data built before the fork.
        unsafe {
            cmd.pre_exec(move || super::confine::drop_privileges(&c));
        }
    }
    let out = tokio::time::timeout(QEMU_IMG_DEADLINE, cmd.output())
        .await
        .map_err(|_| {
            VmError::QemuImg(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", QEMU_IMG_DEADLINE.as_secs()),
            ))
        })?
        .map_err(VmError::QemuImg)?;
    if !out.status.success() {
        return Err(VmError::QemuImgFailed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Whether `qemu-img` runs here (tests that need it skip without it).
#[cfg(test)]
pub(super) fn qemu_img_at_hand() -> bool {
    let at_hand = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok();
    if !at_hand {
        eprintln!("skipping: no qemu-img");
    }
    at_hand
}

/// Fails with [`VmError::DiskFull`] unless the file system holding `dir` has `needed` bytes
/// available to unprivileged writers after keeping `reserve` bytes free.
pub fn check_free_space(dir: &Path, needed: u64, reserve: u64) -> Result<(), VmError> {
    check_space(dir, available_bytes(dir)?, needed, reserve)
}

/// Bytes available to unprivileged writers on the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> Result<u64, VmError> {
    let st = statvfs(dir)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Size of the file system holding `dir`, in bytes.
pub fn total_bytes(dir: &Path) -> Result<u64, VmError> {
    let st = statvfs(dir)?;
    Ok(st.blocks().saturating_mul(st.fragment_size()))
}

/// Bytes the file system has allocated to `path` (a sparse overlay's real size).
pub fn allocated_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.blocks().saturating_mul(512))
}

fn statvfs(dir: &Path) -> Result<nix::sys::statvfs::Statvfs, VmError> {
    nix::sys::statvfs::statvfs(dir).map_err(|source| VmError::Statvfs {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Pure part of [`check_free_space`].
fn check_space(dir: &Path, available: u64, needed: u64, reserve: u64) -> Result<(), VmError> {
    let enough = needed
        .checked_add(reserve)
        .is_some_and(|total| available >= total);
    if !enough {
        return Err(VmError::DiskFull {
            dir: dir.to_path_buf(),
            needed,
            available,
            reserve,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_bytes_count_blocks_not_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sparse");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(1 << 30).expect("set_len");
        assert!(allocated_bytes(&p).expect("allocated") < 1 << 20);
        std::fs::write(&p, vec![1u8; 64 << 10]).expect("write");
        assert!(allocated_bytes(&p).expect("allocated") >= 64 << 10);
        assert_eq!(allocated_bytes(&dir.path().join("absent")), None);
    }

    #[test]
    fn overlay_command() {
        let argv = overlay_argv(
            Path::new("/img/b-1/disk.qcow2"),
            Path::new("/vms/a.qcow2"),
            8,
        );
        let s: Vec<_> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            s,
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "/img/b-1/disk.qcow2",
                "/vms/a.qcow2",
                "8G"
            ]
        );
    }

    #[test]
    fn space_table() {
        let d = Path::new("/x");
        let cases = [
            (100, 50, 50, true),
            (100, 50, 51, false),
            (100, 0, 0, true),
            (0, 1, 0, false),
            (u64::MAX, u64::MAX, u64::MAX, false),
        ];
        for (available, needed, reserve, ok) in cases {
            assert_eq!(
                check_space(d, available, needed, reserve).is_ok(),
                ok,
                "{available} {needed} {reserve}"
            );
        }
    }

    #[test]
    fn free_space_of_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check_free_space(dir.path(), 1, 0).is_ok());
        assert!(matches!(
            check_free_space(dir.path(), u64::MAX / 2, 0),
            Err(VmError::DiskFull { .. })
        ));
    }

    #[tokio::test]
    async fn overlay_is_constant_cost_and_refuses_overwrite() {
        if !qemu_img_at_hand() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("1G")
            .status()
            .expect("qemu-img");
        assert!(st.success());
        let link = dir.path().join("default");
        std::os::unix::fs::symlink(&base, &link).expect("symlink");
        let ov = dir.path().join("vm.qcow2");
        create_overlay(&link, &ov, 2).await.expect("overlay");
        // The backing path is the resolved base, not the symlink.
        let info = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&ov)
            .output()
            .expect("qemu-img info");
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        let canonical = std::fs::canonicalize(&base).expect("canonical");
        assert_eq!(v["backing-filename"], canonical.to_string_lossy().as_ref());
        assert_eq!(v["virtual-size"], 2u64 << 30);
        assert!(matches!(
            create_overlay(&link, &ov, 2).await,
            Err(VmError::OverlayExists(_))
        ));
    }
}
