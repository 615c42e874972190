//! KVM or TCG: decided by running a real (tiny) guest, not by looking at `/dev/kvm`.
//!
//! Nested KVM can be present and openable yet hang every guest, so [`probe_kvm`] boots a
//! 64 KiB firmware whose reset vector writes one byte to an `isa-debug-exit` port (QEMU then
//! exits with status 1) and requires that to happen within [`PROBE_DEADLINE`]. The same
//! payload under TCG finishes in milliseconds, which [`run_test_guest`] lets tests check. The
//! result is computed once per process.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tracing::info;

use super::argv::{Accel, QEMU_BINARY};

/// How long the KVM test guest may take.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);

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

/// The I/O port the test firmware writes to.
const EXIT_PORT: u8 = 0xf4;

/// A 64 KiB firmware image: at the reset vector (F000:FFF0), `mov al,0; out 0xf4,al; hlt;
/// jmp hlt`. With `-device isa-debug-exit,iobase=0xf4` QEMU exits with status (0<<1)|1 = 1.
pub fn probe_firmware() -> Vec<u8> {
    let mut fw = vec![0u8; 64 * 1024];
    let code = [0xb0, 0x00, 0xe6, EXIT_PORT, 0xf4, 0xeb, 0xfd];
    fw[0xfff0..0xfff0 + code.len()].copy_from_slice(&code);
    fw
}

/// The argv (without program) that runs the test firmware under `accel`.
pub fn probe_argv(accel: Accel, firmware: &Path) -> Vec<std::ffi::OsString> {
    let accel = match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let mut a: Vec<std::ffi::OsString> = [
        "-machine",
        "pc",
        "-accel",
        accel,
        "-m",
        "16",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x01",
        "-bios",
    ]
    .iter()
    .map(Into::into)
    .collect();
    a.push(firmware.into());
    a
}

/// Runs the test firmware under `accel`; `Ok(elapsed)` when QEMU exits the expected way
/// within `deadline`, otherwise a sentence saying what happened.
pub async fn run_test_guest(accel: Accel, deadline: Duration) -> Result<Duration, String> {
    let fw_path = std::env::temp_dir().join(format!(
        "roost-accel-probe-{}-{}.bin",
        std::process::id(),
        ulid::Ulid::new()
    ));
    std::fs::write(&fw_path, probe_firmware())
        .map_err(|e| format!("could not write the test firmware: {e}"))?;
    let result = run_firmware(accel, &fw_path, deadline).await;
    let _ = std::fs::remove_file(&fw_path);
    result
}

async fn run_firmware(accel: Accel, fw: &Path, deadline: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(QEMU_BINARY)
        .args(probe_argv(accel, fw))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start {QEMU_BINARY}: {e}"))?;
    let stderr = child.stderr.take();
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("waiting for the test guest failed: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!(
                "a test guest did not finish in {}s",
                deadline.as_secs_f32()
            ));
        }
    };
    if status.code() == Some(1) {
        return Ok(start.elapsed());
    }
    let mut err = String::new();
    if let Some(mut s) = stderr {
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_string(&mut err).await;
    }
    Err(format!(
        "the test guest ended with {status}: {}",
        err.lines().next().unwrap_or("no message")
    ))
}

static PROBE: OnceCell<KvmProbe> = OnceCell::const_new();

/// Whether KVM really runs guests here (cached for the life of the process).
pub async fn probe_kvm() -> KvmProbe {
    PROBE.get_or_init(probe_kvm_uncached).await.clone()
}

/// [`probe_kvm`] without the cache.
pub async fn probe_kvm_uncached() -> KvmProbe {
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
    let probe = match run_test_guest(Accel::Kvm, PROBE_DEADLINE).await {
        Ok(t) => KvmProbe {
            usable: true,
            reason: format!("KVM present and a test guest finished in {} ms", t.as_millis()),
        },
        Err(why) => KvmProbe {
            usable: false,
            reason: format!("KVM present but {why}: using TCG"),
        },
    };
    info!(usable = probe.usable, reason = %probe.reason, "kvm probe");
    probe
}

/// The accelerator to use for `choice`, with the reason.
pub async fn resolve(choice: AccelChoice) -> (Accel, String) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, "KVM forced by configuration".into()),
        AccelChoice::Tcg => (Accel::Tcg, "TCG forced by configuration".into()),
        AccelChoice::Auto => {
            let p = probe_kvm().await;
            (if p.usable { Accel::Kvm } else { Accel::Tcg }, p.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_layout() {
        let fw = probe_firmware();
        assert_eq!(fw.len(), 65536);
        assert_eq!(&fw[0xfff0..0xfff7], &[0xb0, 0x00, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]);
        // jmp rel8 -3 from the end of the jmp lands on the hlt.
        assert_eq!(0xfff7_i32 - 3, 0xfff4);
        assert_eq!(fw[0xfff4], 0xf4);
    }

    #[test]
    fn probe_command() {
        let a = probe_argv(Accel::Kvm, Path::new("/tmp/fw.bin"));
        let s: Vec<_> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert_eq!(s[3], "kvm");
        assert_eq!(s.last().map(String::as_str), Some("/tmp/fw.bin"));
        assert!(s.contains(&"isa-debug-exit,iobase=0xf4,iosize=0x01".to_string()));
    }

    #[tokio::test]
    async fn forced_choices_do_not_probe() {
        assert_eq!(resolve(AccelChoice::Tcg).await.0, Accel::Tcg);
        assert_eq!(resolve(AccelChoice::Kvm).await.0, Accel::Kvm);
    }
}
