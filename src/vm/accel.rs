//! KVM or TCG: decided by running a real (tiny) guest, not by looking at `/dev/kvm`.
//!
//! Nested KVM can be present and openable yet run guests pathologically slowly: on this
//! project's hosts a few bytes of real-mode code finish at once, but SeaBIOS's POST takes 8 s
//! and a Linux kernel never gets past its decompressor. So [`probe_kvm`] runs the firmware
//! itself: QEMU with no disk, `-boot reboot-timeout=0 -no-reboot`, which POSTs, finds nothing
//! to boot and exits with status 0 (0.25 s under TCG here). It uses the machine type the VMs
//! use ([`MACHINE`]). It must do so within [`PROBE_DEADLINE`], and, since how slow a
//! broken KVM is varies between hosts (8 s on one, 2.5 s on another), also within
//! [`MAX_KVM_TO_TCG`] times the same guest's run under TCG, measured right after: a KVM that
//! is not clearly faster than emulation is not real hardware virtualisation.
//! The result is computed once per process.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tracing::info;

use super::argv::{Accel, MACHINE};

/// How long the KVM test guest may take.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// How many times the TCG run of the test guest its KVM run may take. Real KVM POSTs in
/// a fraction of TCG's time; a nested KVM that cannot boot Linux took 10x TCG's here.
pub const MAX_KVM_TO_TCG: f64 = 2.0;

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM if the probe passes, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The outcome of [`probe_kvm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProbe {
    pub usable: bool,
    /// One sentence for logs and `roost check`.
    pub reason: String,
}

/// The argv (without program) of the test guest under `accel`.
pub fn probe_argv(accel: Accel) -> Vec<std::ffi::OsString> {
    let accel = match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    [
        "-machine",
        MACHINE,
        "-accel",
        accel,
        "-m",
        "32",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-boot",
        "reboot-timeout=0",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

/// Why the test guest did not run cleanly within its deadline. The message is meant to be
/// read after "KVM present but " (see [`probe_kvm`]); as everywhere, it does not repeat its
/// source, so show it with [`crate::error_chain`].
#[derive(Debug, thiserror::Error)]
pub enum TestGuestError {
    #[error("could not start QEMU")]
    Spawn(#[source] std::io::Error),
    #[error("waiting for the test guest failed")]
    Wait(#[source] std::io::Error),
    #[error("a test guest did not finish in {}s", .deadline.as_secs_f32())]
    Timeout { deadline: Duration },
    /// QEMU exited unsuccessfully; `last_line` is the last line of its stderr, if any.
    #[error(
        "the test guest ended with {status}: {}",
        .last_line.as_deref().unwrap_or("no message")
    )]
    Exited {
        status: ExitStatus,
        last_line: Option<String>,
    },
}

/// Runs the test guest under `accel`; `Ok(elapsed)` when QEMU exits cleanly within
/// `deadline`, otherwise what happened.
pub async fn run_test_guest(
    qemu: &Path,
    accel: Accel,
    deadline: Duration,
) -> Result<Duration, TestGuestError> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(qemu)
        .args(probe_argv(accel))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(TestGuestError::Spawn)?;
    let stderr = child.stderr.take();
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(TestGuestError::Wait(e)),
        Err(_) => {
            let _ = child.kill().await;
            return Err(TestGuestError::Timeout { deadline });
        }
    };
    if status.success() {
        return Ok(start.elapsed());
    }
    let mut err = String::new();
    if let Some(mut s) = stderr {
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_string(&mut err).await;
    }
    Err(TestGuestError::Exited {
        status,
        last_line: err.lines().last().map(str::to_owned),
    })
}

static PROBE: OnceCell<KvmProbe> = OnceCell::const_new();

/// Whether KVM really runs guests here with the QEMU binary `qemu` (cached for the life
/// of the process: a daemon has one binary).
pub async fn probe_kvm(qemu: &Path) -> KvmProbe {
    PROBE.get_or_init(|| probe_kvm_uncached(qemu)).await.clone()
}

/// [`probe_kvm`] without the cache.
pub async fn probe_kvm_uncached(qemu: &Path) -> KvmProbe {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmProbe {
            usable: false,
            reason: format!("KVM not usable (/dev/kvm: {e}): using TCG"),
        };
    }
    let probe = match run_test_guest(qemu, Accel::Kvm, PROBE_DEADLINE).await {
        Ok(kvm) => judge(
            kvm,
            run_test_guest(qemu, Accel::Tcg, PROBE_DEADLINE).await.ok(),
        ),
        Err(why) => KvmProbe {
            usable: false,
            reason: format!("KVM present but {}: using TCG", crate::error_chain(&why)),
        },
    };
    info!(usable = probe.usable, reason = %probe.reason, "kvm probe");
    probe
}

/// KVM is usable when its test guest ran within [`MAX_KVM_TO_TCG`] times the TCG run
/// (when TCG could not run it, the deadline alone decides).
fn judge(kvm: Duration, tcg: Option<Duration>) -> KvmProbe {
    match tcg {
        Some(tcg) if kvm.as_secs_f64() > tcg.as_secs_f64() * MAX_KVM_TO_TCG => KvmProbe {
            usable: false,
            reason: format!(
                "KVM present but its test guest took {} ms against {} ms under TCG: using TCG",
                kvm.as_millis(),
                tcg.as_millis()
            ),
        },
        _ => KvmProbe {
            usable: true,
            reason: format!(
                "KVM present and a test guest finished in {} ms{}",
                kvm.as_millis(),
                tcg.map(|t| format!(" ({} ms under TCG)", t.as_millis()))
                    .unwrap_or_default()
            ),
        },
    }
}

/// The accelerator to use for `choice` with the QEMU binary `qemu`, with the reason.
pub async fn resolve(choice: AccelChoice, qemu: &Path) -> (Accel, String) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, "KVM forced by configuration".into()),
        AccelChoice::Tcg => (Accel::Tcg, "TCG forced by configuration".into()),
        AccelChoice::Auto => {
            let p = probe_kvm(qemu).await;
            (if p.usable { Accel::Kvm } else { Accel::Tcg }, p.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_command() {
        let s: Vec<_> = probe_argv(Accel::Kvm)
            .iter()
            .map(|x| x.to_string_lossy().into_owned())
            .collect();
        assert_eq!(s[3], "kvm");
        assert!(s.contains(&"-no-reboot".to_string()));
        assert!(s.contains(&"reboot-timeout=0".to_string()));
    }

    #[test]
    fn kvm_must_be_clearly_faster_than_tcg() {
        let ms = Duration::from_millis;
        assert!(judge(ms(60), Some(ms(250))).usable);
        assert!(judge(ms(500), Some(ms(250))).usable);
        let slow = judge(ms(2513), Some(ms(250)));
        assert!(!slow.usable);
        assert!(
            slow.reason.contains("2513 ms against 250 ms"),
            "{}",
            slow.reason
        );
        assert!(judge(ms(900), None).usable);
    }

    #[test]
    fn test_guest_messages() {
        use std::os::unix::process::ExitStatusExt;
        let spawn = TestGuestError::Spawn(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            crate::error_chain(&spawn),
            format!(
                "could not start QEMU: {}",
                std::io::Error::from_raw_os_error(libc::ENOENT)
            )
        );
        let timeout = TestGuestError::Timeout {
            deadline: Duration::from_millis(2500),
        };
        assert_eq!(timeout.to_string(), "a test guest did not finish in 2.5s");
        let status = ExitStatus::from_raw(1 << 8);
        let exited = TestGuestError::Exited {
            status,
            last_line: Some("qemu: boom".into()),
        };
        assert_eq!(
            exited.to_string(),
            format!("the test guest ended with {status}: qemu: boom")
        );
        let silent = TestGuestError::Exited {
            status,
            last_line: None,
        };
        assert_eq!(
            silent.to_string(),
            format!("the test guest ended with {status}: no message")
        );
    }

    #[tokio::test]
    async fn forced_choices_do_not_probe() {
        let qemu = Path::new("qemu-system-x86_64");
        assert_eq!(resolve(AccelChoice::Tcg, qemu).await.0, Accel::Tcg);
        assert_eq!(resolve(AccelChoice::Kvm, qemu).await.0, Accel::Kvm);
        // The probe runs the configured binary: one that does not exist never makes KVM
        // usable (whether or not /dev/kvm opens here).
        let p = probe_kvm_uncached(Path::new("/nonexistent/qemu-system-x86_64")).await;
        assert!(!p.usable, "{}", p.reason);
    }
}
