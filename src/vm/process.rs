//! QEMU processes: spawn in a new session, adopt after a daemon restart, watch through a pidfd.
//!
//! QEMU is started with `setsid` (its own session and process group), so neither the daemon's
//! death nor a signal to the daemon's group reaches it; the daemon still is its parent while it
//! lives, so it knows the pid without `-daemonize`. Exit is observed through a pidfd, which
//! works the same for a child and for an adopted process, and a pidfd also makes signalling
//! race-free against pid reuse. A process is adopted only when `/proc/PID/cmdline` names
//! `qemu-system` and carries this VM's `-uuid` (see [`super::argv::cmdline_matches`]).
//!
//! Confinement starts in the forked child, before `exec`: it writes itself into the VM's
//! cgroups (files opened by the daemon, see [`super::cgroup`]) and drops to the VM's own uid
//! without capabilities and with `no_new_privs` ([`super::confine`]). Adoption and signals
//! work the same afterwards: the daemon is root (CAP_KILL for a pidfd signal to another uid).
//!
//! Serial log cap: the console goes to a file chardev opened with `append=on`;
//! [`cap_serial_log`] (called periodically by the supervisor) keeps the newest half when the
//! file grows past its cap, truncating in place, which is safe because QEMU appends.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};
use ulid::Ulid;

use super::argv::{cmdline_matches, qemu_argv, VmSpec, QEMU_BINARY};
use super::confine::{drop_privileges, Credentials};
use super::VmError;

/// How long [`spawn`] waits for the QMP socket to accept by default. Generous: TCG start-up on
/// a loaded 2-core host takes well under a second, but a cold page cache does not.
pub const DEFAULT_READY_DEADLINE: Duration = Duration::from_secs(10);

/// A running (or just exited) QEMU, held by pid and pidfd.
#[derive(Debug)]
pub struct VmProcess {
    pid: i32,
    pidfd: OwnedFd,
}

/// What [`spawn_argv`] needs besides argv.
#[derive(Debug)]
pub struct SpawnOptions<'a> {
    /// An fd to pass to QEMU under its own number (its CLOEXEC flag is cleared in the child
    /// only). The argv must refer to `tap.as_raw_fd()`.
    pub tap: Option<BorrowedFd<'a>>,
    /// QEMU's own stdout and stderr are appended here.
    pub stderr_log: PathBuf,
    /// The QMP socket to wait for; removed first if a stale file is there.
    pub qmp_socket: PathBuf,
    /// How long to wait for the socket to accept before killing QEMU.
    pub ready_deadline: Duration,
    /// Who QEMU runs as: the child drops to these credentials before exec
    /// ([`super::confine::drop_privileges`]). `None` keeps the caller's.
    pub user: Option<Credentials>,
    /// Open `cgroup.procs` files ([`super::cgroup::VmCgroup::procs`]) the child writes
    /// itself into before it drops privileges and execs, so QEMU starts confined.
    pub cgroups: Vec<OwnedFd>,
}

/// Starts QEMU for `spec` and returns once its QMP socket accepts.
///
/// `tap` is the open tap device; its fd number replaces `spec.net.tap_fd` in argv, so callers
/// may leave that at any value. QEMU's stdout/stderr are appended to `stderr_log`.
pub async fn spawn(
    spec: &VmSpec,
    tap: Option<BorrowedFd<'_>>,
    stderr_log: &Path,
) -> Result<VmProcess, VmError> {
    let mut spec = spec.clone();
    match (spec.net.as_mut(), tap) {
        (Some(net), Some(fd)) => net.tap_fd = fd.as_raw_fd(),
        (Some(_), None) => {
            return Err(VmError::Spawn(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the spec has a network card but no tap was given",
            )))
        }
        (None, _) => {}
    }
    let argv = qemu_argv(&spec);
    spawn_argv(
        QEMU_BINARY.as_ref(),
        &argv,
        SpawnOptions {
            tap,
            stderr_log: stderr_log.to_path_buf(),
            qmp_socket: spec.qmp_socket.clone(),
            ready_deadline: DEFAULT_READY_DEADLINE,
            user: spec.user.clone(),
            cgroups: Vec::new(),
        },
    )
    .await
}

/// Starts `program argv` as a QEMU would be (own session, stdin null, output to a log, one
/// inherited fd) and waits until `opts.qmp_socket` accepts. On failure nothing is left running.
pub async fn spawn_argv(
    program: &std::ffi::OsStr,
    argv: &[OsString],
    opts: SpawnOptions<'_>,
) -> Result<VmProcess, VmError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.stderr_log)
        .map_err(|source| VmError::Io {
            what: "opening",
            path: opts.stderr_log.clone(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| VmError::Io {
        what: "duplicating",
        path: opts.stderr_log.clone(),
        source,
    })?;
    match std::fs::remove_file(&opts.qmp_socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(VmError::Io {
                what: "removing stale socket",
                path: opts.qmp_socket.clone(),
                source,
            })
        }
    }

    let mut cmd = Command::new(program);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let keep_fd = opts.tap.map(|fd| fd.as_raw_fd());
    let cgroup_fds: Vec<i32> = opts.cgroups.iter().map(|f| f.as_raw_fd()).collect();
    let user = opts.user.clone();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setsid, write, setgroups, setresgid, setresuid, prctl, fcntl) without
    // allocating: everything it reads was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Join the VM's cgroups first, while still root ("0" is the writer itself).
            for &fd in &cgroup_fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(c) = &user {
                drop_privileges(c)?;
            }
            if let Some(fd) = keep_fd {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(VmError::Spawn)?;
    let pid = child.id() as i32;
    // Dropping a std Child neither waits nor kills; the pidfd (opened before any reaping, so
    // the pid cannot have been reused) is our handle from here on.
    drop(child);
    let proc = VmProcess::from_pid(pid)?;
    info!(pid, "qemu started");

    let deadline = Instant::now() + opts.ready_deadline;
    loop {
        if !proc.is_running() {
            let status = proc
                .reap()
                .map_or("unknown status".to_string(), describe_exit);
            return Err(VmError::ExitedEarly {
                status,
                log: opts.stderr_log.clone(),
            });
        }
        if tokio::net::UnixStream::connect(&opts.qmp_socket)
            .await
            .is_ok()
        {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            warn!(pid, "qemu's QMP socket never accepted; killing it");
            let _ = proc.kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), proc.wait_exit()).await;
            return Err(VmError::QmpSocketTimeout {
                path: opts.qmp_socket.clone(),
                after: opts.ready_deadline,
            });
        }
        // Polling a socket that is created by another process: there is nothing to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn describe_exit(code: i32) -> String {
    if code >= 128 {
        format!("killed by signal {}", code - 128)
    } else {
        format!("exit code {code}")
    }
}

/// Finds the QEMU of VM `id` from its pidfile, if it is still running.
///
/// Returns `Ok(None)` when there is no pidfile, the pid is gone, or the pid now belongs to
/// another program or another VM (pid reuse): in all those cases the VM is not running.
pub fn adopt(pidfile: &Path, id: Ulid) -> Result<Option<VmProcess>, VmError> {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(VmError::Pidfile {
                path: pidfile.to_path_buf(),
                source,
            })
        }
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        warn!(pidfile = %pidfile.display(), "pidfile does not hold a pid");
        return Ok(None);
    };
    if pid <= 1 {
        return Ok(None);
    }
    // Open the pidfd first, then check the cmdline: if the pid is reused in between, the check
    // looks at the same process the pidfd refers to.
    let proc = match VmProcess::from_pid(pid) {
        Ok(p) => p,
        Err(VmError::Pidfd { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline_matches(&cmdline, id) || !proc.is_running() {
        warn!(pid, vm = %id, "pidfile names a process that is not this VM's qemu");
        return Ok(None);
    }
    info!(pid, vm = %id, "adopted running qemu");
    Ok(Some(proc))
}

impl VmProcess {
    /// Opens a pidfd for `pid`.
    pub fn from_pid(pid: i32) -> Result<VmProcess, VmError> {
        // SAFETY: plain syscall with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(VmError::Pidfd {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the kernel just returned this new fd, and nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(VmProcess { pid, pidfd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// True until the process has exited (a pidfd polls readable on exit).
    pub fn is_running(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0
    }

    /// Waits until the process exits. Returns the exit code (128+signal when killed) if this
    /// process is QEMU's parent and so could reap it, `None` for an adopted process.
    /// Cancel-safe.
    pub async fn wait_exit(&self) -> Result<Option<i32>, VmError> {
        let err = |source| VmError::Pidfd {
            pid: self.pid,
            source,
        };
        // A duplicate fd is its own epoll registration, so several waiters may coexist.
        let dup = self.pidfd.try_clone().map_err(err)?;
        // SAFETY: `dup` is an fd we own; the AsyncFd owns it until it is dropped here.
        let afd = unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }
            .map_err(|e| err(e.into_parts().1))?;
        let _guard = afd.readable().await.map_err(err)?;
        Ok(self.reap())
    }

    /// Collects the exit status of an exited child; `None` if not our child or still running.
    fn reap(&self) -> Option<i32> {
        match waitid(
            Id::PIDFd(self.pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            _ => None,
        }
    }

    /// Sends `sig` through the pidfd (cannot hit a reused pid). An exited process is not an
    /// error.
    pub fn signal(&self, sig: Signal) -> Result<(), VmError> {
        // SAFETY: plain syscall; a null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(VmError::Signal {
                pid: self.pid,
                source: e,
            });
        }
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&self) -> Result<(), VmError> {
        self.signal(Signal::SIGKILL)
    }
}

/// Keeps a serial log under `max_bytes`: when it is larger, keeps its newest `max_bytes / 2`
/// bytes and drops the rest, in place (QEMU appends, so its writes land after the kept tail).
/// Returns whether it trimmed. A few bytes QEMU writes during the trim may be lost.
pub fn cap_serial_log(path: &Path, max_bytes: u64) -> Result<bool, VmError> {
    let io = |what, source| VmError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut f = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("opening", e)),
    };
    let len = f.metadata().map_err(|e| io("stat", e))?.len();
    if len <= max_bytes {
        return Ok(false);
    }
    let keep = max_bytes / 2;
    f.seek(SeekFrom::Start(len - keep))
        .map_err(|e| io("seeking", e))?;
    let mut tail = Vec::with_capacity(keep as usize);
    Read::by_ref(&mut f)
        .take(keep)
        .read_to_end(&mut tail)
        .map_err(|e| io("reading", e))?;
    f.set_len(0).map_err(|e| io("truncating", e))?;
    f.write_all(&tail).map_err(|e| io("writing", e))?;
    Ok(true)
}

/// The last `n` lines of a text file (lossy UTF-8); empty when it cannot be read.
pub fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return vec![];
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_log_cap_keeps_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("serial.log");
        assert!(!cap_serial_log(&p, 10).expect("missing is fine"));
        std::fs::write(&p, b"0123456789").expect("write");
        assert!(!cap_serial_log(&p, 10).expect("at cap"));
        std::fs::write(&p, b"0123456789abcdef").expect("write");
        assert!(cap_serial_log(&p, 10).expect("over cap"));
        assert_eq!(std::fs::read(&p).expect("read"), b"bcdef");
    }

    #[test]
    fn adopt_without_pidfile_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = adopt(&dir.path().join("none.pid"), Ulid::new()).expect("no error");
        assert!(r.is_none());
        std::fs::write(dir.path().join("bad.pid"), "not a pid").expect("write");
        let r = adopt(&dir.path().join("bad.pid"), Ulid::new()).expect("no error");
        assert!(r.is_none());
    }

    #[tokio::test]
    async fn a_network_card_needs_a_tap() {
        let spec = VmSpec {
            id: Ulid::new(),
            name: "x".into(),
            memory_mib: 64,
            vcpus: 1,
            accel: super::super::Accel::Tcg,
            boot: super::super::Boot::Firmware,
            overlay: "/nonexistent/disk.qcow2".into(),
            seed: None,
            net: Some(super::super::argv::NetSpec {
                tap_fd: 3,
                mac: "52:54:00:00:00:01".into(),
            }),
            qmp_socket: "/nonexistent/qmp.sock".into(),
            pidfile: "/nonexistent/qemu.pid".into(),
            serial_log: "/nonexistent/serial.log".into(),
            serial_socket: None,
            agent_socket: None,
            user: None,
        };
        let err = spawn(&spec, None, Path::new("/nonexistent/qemu.log"))
            .await
            .expect_err("refused");
        assert!(matches!(err, VmError::Spawn(_)), "{err:?}");
    }

    #[tokio::test]
    async fn pidfd_sees_a_child_exit() {
        let child = Command::new("true").spawn().expect("spawn true");
        let p = VmProcess::from_pid(child.id() as i32).expect("pidfd");
        drop(child);
        let code = tokio::time::timeout(Duration::from_secs(5), p.wait_exit())
            .await
            .expect("exits in time")
            .expect("wait works");
        assert_eq!(code, Some(0));
        assert!(!p.is_running());
    }
}
