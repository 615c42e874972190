//! What `/proc` says about a QEMU process: CPU time, memory, start time, and which
//! processes are QEMUs of a given state directory (for the orphan reaper).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Resource figures of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStats {
    /// User plus system CPU time, in seconds.
    pub cpu_time_secs: f64,
    pub rss_bytes: u64,
}

fn ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// The fields of `/proc/PID/stat` after the command name (which may contain spaces).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time and resident memory of `pid`.
pub fn proc_stats(pid: i32) -> Option<ProcStats> {
    let f = stat_fields(pid)?;
    // After the name: state(0) ... utime(11) stime(12) ... rss(21, in pages).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some(ProcStats {
        cpu_time_secs: (utime + stime) / ticks_per_sec(),
        rss_bytes: rss_pages * page,
    })
}

/// When `pid` started (wall clock).
pub fn start_time(pid: i32) -> Option<SystemTime> {
    let f = stat_fields(pid)?;
    let start_ticks: f64 = f.get(19)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    Some(
        UNIX_EPOCH
            + Duration::from_secs(btime)
            + Duration::from_secs_f64(start_ticks / ticks_per_sec()),
    )
}

/// QEMU processes whose `-pidfile` lies under `vms_dir`: `(pid, name of the VM directory)`.
/// Only those are roost's to reap; QEMUs of other state directories are never touched.
pub fn qemus_under(vms_dir: &Path) -> Vec<(i32, String)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, qemu_vm_dir(pid, vms_dir)?)))
        .collect()
}

/// The VM directory (under `vms_dir`) of the QEMU that `pid` is right now, if it is one.
/// Read after opening a pidfd for `pid`, it proves what that pidfd refers to.
pub fn qemu_vm_dir(pid: i32, vms_dir: &Path) -> Option<String> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    vm_dir_of_cmdline(&cmd, vms_dir)
}

/// `qemu_vm_dir` on a NUL-separated command line.
fn vm_dir_of_cmdline(cmd: &[u8], vms_dir: &Path) -> Option<String> {
    let prefix = vms_dir.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
    if !args
        .first()
        .is_some_and(|a| a.windows(11).any(|w| w == b"qemu-system"))
    {
        return None;
    }
    let p = args
        .windows(2)
        .find(|w| w[0] == b"-pidfile")
        .map(|w| w[1])?;
    if !(p.starts_with(prefix) && p.get(prefix.len()) == Some(&b'/')) {
        return None;
    }
    let rest = &p[prefix.len() + 1..];
    let dir = rest.split(|&b| b == b'/').next().unwrap_or_default();
    (!dir.is_empty()).then(|| String::from_utf8_lossy(dir).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures() {
        let me = std::process::id() as i32;
        let s = proc_stats(me).expect("stats");
        assert!(s.rss_bytes > 0);
        let t = start_time(me).expect("start");
        assert!(t <= SystemTime::now());
        assert!(qemus_under(Path::new("/nonexistent/vms")).is_empty());
    }

    #[test]
    fn vm_dir_from_a_qemu_command_line() {
        let vms = Path::new("/var/lib/roost/vms");
        let cmd =
            b"/usr/bin/qemu-system-x86_64\0-name\0x\0-pidfile\0/var/lib/roost/vms/01ABC/qemu.pid\0";
        assert_eq!(vm_dir_of_cmdline(cmd, vms).as_deref(), Some("01ABC"));
        // Another state directory, a prefix that is not a directory, not QEMU at all.
        let other = b"qemu-system-x86_64\0-pidfile\0/srv/other/vms/01ABC/qemu.pid\0";
        assert_eq!(vm_dir_of_cmdline(other, vms), None);
        let lookalike = b"qemu-system-x86_64\0-pidfile\0/var/lib/roost/vms2/01ABC/qemu.pid\0";
        assert_eq!(vm_dir_of_cmdline(lookalike, vms), None);
        let sleeper = b"sleep\0-pidfile\0/var/lib/roost/vms/01ABC/qemu.pid\0";
        assert_eq!(vm_dir_of_cmdline(sleeper, vms), None);
    }
}
