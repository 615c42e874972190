//! Stopping a VM: ask the guest, then QEMU, then the kernel.

use std::time::Duration;

use tracing::{info, warn};

use super::process::VmProcess;
use super::qmp::Qmp;
use super::VmError;

/// How long `quit` and SIGKILL each get to take effect once the guest has had its chance.
pub const QUIT_GRACE: Duration = Duration::from_secs(3);

/// How a VM ended in [`graceful_stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was already gone.
    AlreadyExited,
    /// The guest powered off after the ACPI power button.
    Powerdown,
    /// QEMU quit on request, `quit` or SIGTERM (the guest did not shut down in time).
    Quit,
    /// SIGKILL was needed.
    Killed,
}

/// Powers the VM down: ACPI power button, wait up to `deadline` for QEMU to exit; then QMP
/// `quit`; then SIGTERM (QEMU's clean exit; the first step without a QMP connection); then
/// SIGKILL. Only an error when even SIGKILL did not end the process.
pub async fn graceful_stop(
    qmp: Option<&Qmp>,
    proc: &VmProcess,
    deadline: Duration,
) -> Result<StopOutcome, VmError> {
    let pid = proc.pid();
    if !proc.is_running() {
        return Ok(StopOutcome::AlreadyExited);
    }
    if let Some(qmp) = qmp {
        match qmp.system_powerdown().await {
            Ok(()) => {
                if exited_within(proc, deadline).await {
                    info!(pid, "vm powered off");
                    return Ok(StopOutcome::Powerdown);
                }
                warn!(
                    pid,
                    ?deadline,
                    "guest did not power off in time; quitting qemu"
                );
            }
            Err(e) => warn!(pid, error = %e, "system_powerdown failed; quitting qemu"),
        }
        match qmp.quit().await {
            Ok(()) => {
                if exited_within(proc, QUIT_GRACE).await {
                    info!(pid, "qemu quit");
                    return Ok(StopOutcome::Quit);
                }
            }
            Err(e) => warn!(pid, error = %e, "quit failed"),
        }
    }
    // No QMP, or it failed: SIGTERM makes QEMU exit as cleanly as `quit` does.
    proc.signal(nix::sys::signal::Signal::SIGTERM)?;
    if exited_within(proc, QUIT_GRACE).await {
        info!(pid, "qemu terminated");
        return Ok(StopOutcome::Quit);
    }
    kill(proc)?;
    if exited_within(proc, QUIT_GRACE).await {
        warn!(pid, "qemu killed");
        Ok(StopOutcome::Killed)
    } else {
        Err(VmError::Signal {
            pid,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "still running after SIGKILL",
            ),
        })
    }
}

/// SIGKILL through the pidfd.
pub fn kill(proc: &VmProcess) -> Result<(), VmError> {
    proc.kill()
}

async fn exited_within(proc: &VmProcess, d: Duration) -> bool {
    matches!(tokio::time::timeout(d, proc.wait_exit()).await, Ok(Ok(_))) || !proc.is_running()
}
