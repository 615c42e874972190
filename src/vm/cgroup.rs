//! Per-VM cgroups: CPU quota, memory and task limits (and an equal I/O weight) for each
//! QEMU, on cgroup v1, v2 or a hybrid of both.
//!
//! Owns finding where each controller is mounted and in which version ([`Mount`],
//! [`Membership`], [`plan`]: pure, from `/proc/self/mountinfo`, `/proc/self/cgroup` and the
//! v2 `cgroup.controllers`), the limit values ([`Limits`], [`limit_files`]: pure), and the
//! directories themselves: `<mount>/<own cgroup>/roost-vms/<id>` on v1 and
//! `<own cgroup>/vms/<id>` on v2, so nothing leaves the daemon's own subtree. Must not touch
//! any cgroup outside those parents, except that on v2 the daemon moves itself (and
//! QEMUs of an earlier daemon) into the leaf `<own cgroup>/daemon`: v2 forbids processes in
//! a cgroup that hands controllers to its children (systemd's `Delegate=yes` gives roost
//! its unit's cgroup for this).
//!
//! A QEMU joins its cgroups before it executes a single instruction: [`Cgroups::create`]
//! opens each `cgroup.procs` in the daemon, and the forked child writes `0` (itself) to them
//! before `exec` (`process::spawn_argv`). A controller that is missing is logged once at
//! start and skipped; cgroups are never a reason for a VM not to run.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::argv::{Accel, TCG_TB_MIB};
use super::VmError;

/// The CPU quota period (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// What QEMU needs besides guest memory (and, under TCG, its translation cache): its own
/// heap, device state, thread stacks, I/O buffers.
pub const QEMU_OVERHEAD_MIB: u64 = 256;
/// Tasks one QEMU may have: vCPU threads, I/O worker threads (up to 64 per pool), RCU,
/// migration and a few more. Generous; this only stops a runaway.
pub const PIDS_MAX: u64 = 512;
/// Every VM gets the same I/O weight (the default): none can starve another's disk.
pub const IO_WEIGHT: u64 = 100;

/// cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A controller roost uses, named as in v2 (`io` is `blkio` on v1; `cpuacct` is v1 only and
/// carries no limit, just the CPU time).
pub const WANTED: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "io"];

fn v1_name(controller: &str) -> &str {
    match controller {
        "io" => "blkio",
        c => c,
    }
}

/// One line of `/proc/self/mountinfo`, the fields roost reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mounted filesystem's own path that appears at `mount_point`.
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo` (octal escapes such as `\040` decoded).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(l.get(3)?),
                mount_point: PathBuf::from(unescape(l.get(4)?)),
                fstype: (*r.first()?).to_owned(),
                super_options: r.get(2)?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`: `ID:CONTROLLERS:PATH`; v2's line has ID 0 and no
/// controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
}

impl Membership {
    fn is_v2(&self) -> bool {
        self.controllers.is_empty()
    }
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let ctrl = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: ctrl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// Where this process's cgroup of a hierarchy is: the mount point plus the membership path
/// relative to the mount's root (in a cgroup namespace both are relative to its root).
fn own_dir(mount: &Mount, path: &str) -> PathBuf {
    let rel = if mount.root != "/" {
        path.strip_prefix(mount.root.as_str()).unwrap_or(path)
    } else {
        path
    };
    let mut dir = mount.mount_point.clone();
    for c in rel.split('/').filter(|c| !c.is_empty() && *c != "..") {
        dir.push(c);
    }
    dir
}

/// The daemon's own v2 cgroup directory, if a cgroup2 filesystem is mounted.
pub fn v2_own_dir(mounts: &[Mount], own: &[Membership]) -> Option<PathBuf> {
    let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let path = own.iter().find(|m| m.is_v2())?;
    Some(own_dir(m, &path.path))
}

/// One hierarchy roost places VMs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// The controllers roost uses in it (v2 names).
    pub controllers: Vec<String>,
    /// The directory holding one cgroup per VM.
    pub parent: PathBuf,
}

/// Where every wanted controller lives, and which are missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub hierarchies: Vec<Hierarchy>,
    pub missing: Vec<String>,
}

/// Decides per wanted controller: a v1 hierarchy mounted with it, else the v2 hierarchy if
/// `v2_controllers` (its own cgroup's `cgroup.controllers`) lists it, else missing.
/// `v2_base` is the daemon's v2 cgroup with the `daemon` leaf already stripped.
pub fn plan(
    mounts: &[Mount],
    own: &[Membership],
    v2_base: Option<&Path>,
    v2_controllers: &[String],
) -> Layout {
    let mut layout = Layout::default();
    let mut v2: Vec<String> = Vec::new();
    for c in WANTED {
        let v1 = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == v1_name(c)));
        if let Some(m) = v1 {
            let Some(membership) = own
                .iter()
                .find(|o| o.controllers.iter().any(|x| x == v1_name(c)))
            else {
                layout.missing.push(c.to_owned());
                continue;
            };
            let parent = own_dir(m, &membership.path).join("roost-vms");
            match layout.hierarchies.iter_mut().find(|h| h.parent == parent) {
                Some(h) => h.controllers.push(c.to_owned()),
                None => layout.hierarchies.push(Hierarchy {
                    version: Version::V1,
                    controllers: vec![c.to_owned()],
                    parent,
                }),
            }
        } else if c == "cpuacct" {
            // v1 accounting only; v2 has cpu.stat in every cgroup.
        } else if v2_base.is_some() && v2_controllers.iter().any(|x| x == c) {
            v2.push(c.to_owned());
        } else {
            layout.missing.push(c.to_owned());
        }
    }
    if let (Some(base), false) = (v2_base, v2.is_empty()) {
        layout.hierarchies.push(Hierarchy {
            version: Version::V2,
            controllers: v2,
            parent: base.join("vms"),
        });
    }
    layout
}

/// The limits of one VM's cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub io_weight: u64,
}

impl Limits {
    /// `vcpus` whole cores; guest memory plus QEMU's overhead plus, under TCG, the
    /// translation cache QEMU is told to use (`-accel tcg,tb-size=`).
    pub fn for_vm(vcpus: u32, memory_mib: u32, accel: Accel) -> Limits {
        let tb = match accel {
            Accel::Tcg => u64::from(TCG_TB_MIB),
            Accel::Kvm => 0,
        };
        Limits {
            cpu_quota_us: u64::from(vcpus) * CPU_PERIOD_US,
            cpu_period_us: CPU_PERIOD_US,
            memory_bytes: (u64::from(memory_mib) + tb + QEMU_OVERHEAD_MIB) << 20,
            pids: PIDS_MAX,
            io_weight: IO_WEIGHT,
        }
    }
}

/// The files (and values) that set `limits` for `controller` in a `version` hierarchy, in
/// the order they must be written. The `bool` says the file may be absent (then skipped).
pub fn limit_files(
    version: Version,
    controller: &str,
    l: &Limits,
) -> Vec<(&'static str, String, bool)> {
    match (version, controller) {
        (Version::V2, "cpu") => vec![(
            "cpu.max",
            format!("{} {}", l.cpu_quota_us, l.cpu_period_us),
            false,
        )],
        (Version::V1, "cpu") => vec![
            ("cpu.cfs_period_us", l.cpu_period_us.to_string(), false),
            ("cpu.cfs_quota_us", l.cpu_quota_us.to_string(), false),
        ],
        (Version::V2, "memory") => vec![("memory.max", l.memory_bytes.to_string(), false)],
        (Version::V1, "memory") => {
            vec![("memory.limit_in_bytes", l.memory_bytes.to_string(), false)]
        }
        (_, "pids") => vec![("pids.max", l.pids.to_string(), false)],
        (Version::V2, "io") => vec![("io.weight", format!("default {}", l.io_weight), true)],
        (Version::V1, "io") => vec![("blkio.weight", l.io_weight.to_string(), true)],
        _ => vec![],
    }
}

/// The VM cgroups of this daemon.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    layout: Layout,
}

/// A VM's cgroups, created and limited, with their `cgroup.procs` open for the child.
#[derive(Debug)]
pub struct VmCgroup {
    pub dirs: Vec<PathBuf>,
    pub procs: Vec<OwnedFd>,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VmError + 'a {
    move |source| VmError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

impl Cgroups {
    /// No cgroups at all (`[vm] cgroups = false`, or tests).
    pub fn disabled() -> Cgroups {
        Cgroups::default()
    }

    pub fn from_layout(layout: Layout) -> Cgroups {
        Cgroups { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Reads where the controllers are, prepares the parents (on v2: moves this process
    /// into a leaf and enables the controllers below), and logs each missing controller
    /// once. Never fails: whatever cannot be used is left out.
    pub fn discover() -> Cgroups {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map(|t| parse_proc_cgroup(&t))
            .unwrap_or_default();
        let v2_own = v2_own_dir(&mounts, &own);
        let v2_base = v2_own.as_deref().map(v2_base_of);
        let v2_controllers: Vec<String> = v2_base
            .as_deref()
            .and_then(|b| std::fs::read_to_string(b.join("cgroup.controllers")).ok())
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut layout = plan(&mounts, &own, v2_base.as_deref(), &v2_controllers);
        if let (Some(base), Some(i)) = (
            v2_base.as_deref(),
            layout
                .hierarchies
                .iter()
                .position(|h| h.version == Version::V2),
        ) {
            if let Err(e) = delegate_v2(base, &layout.hierarchies[i].controllers) {
                warn!(error = %crate::error_chain(&e), "cgroup v2: cannot delegate controllers to VM cgroups; v2 controllers skipped");
                let h = layout.hierarchies.remove(i);
                layout.missing.extend(h.controllers);
            }
        }
        let mut kept = Vec::new();
        for h in layout.hierarchies {
            match std::fs::create_dir_all(&h.parent) {
                Ok(()) => kept.push(h),
                Err(e) => {
                    warn!(parent = %h.parent.display(), error = %e, "cannot create the VM cgroup parent; its controllers are skipped");
                    layout.missing.extend(h.controllers);
                }
            }
        }
        layout.hierarchies = kept;
        layout.missing.retain(|c| c != "cpuacct");
        for c in &layout.missing {
            warn!(controller = %c, "cgroup controller unavailable; VMs run without its limits");
        }
        for h in &layout.hierarchies {
            info!(version = ?h.version, controllers = ?h.controllers, parent = %h.parent.display(), "VM cgroups");
        }
        Cgroups { layout }
    }

    /// The directories of VM `id`'s cgroups.
    pub fn dirs(&self, id: &str) -> Vec<PathBuf> {
        self.layout
            .hierarchies
            .iter()
            .map(|h| h.parent.join(id))
            .collect()
    }

    /// Makes VM `id`'s cgroups (an existing one is reused), writes `limits`, and opens
    /// each `cgroup.procs` for the child to join.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<VmCgroup, VmError> {
        let mut out = VmCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        for h in &self.layout.hierarchies {
            let dir = h.parent.join(id);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating cgroup", &dir)(e)),
            }
            if h.version == Version::V2 {
                // Processes are only in leaves; nothing to enable below a VM's cgroup.
            }
            for c in &h.controllers {
                for (file, value, optional) in limit_files(h.version, c, limits) {
                    let path = dir.join(file);
                    match write(&path, &value) {
                        Ok(()) => {}
                        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) if optional => {
                            warn!(file = %path.display(), error = %e, "optional cgroup limit not set")
                        }
                        Err(e) => return Err(io_err("writing cgroup limit", &path)(e)),
                    }
                }
            }
            let procs = dir.join("cgroup.procs");
            let f = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(io_err("opening", &procs))?;
            out.procs.push(f.into());
            out.dirs.push(dir);
        }
        Ok(out)
    }

    /// Moves a running `pid` (an adopted QEMU) into VM `id`'s cgroups, made with `limits`.
    pub fn place(&self, id: &str, pid: i32, limits: &Limits) -> Result<(), VmError> {
        let cg = self.create(id, limits)?;
        for dir in &cg.dirs {
            let procs = dir.join("cgroup.procs");
            write(&procs, &pid.to_string()).map_err(io_err("moving a process into", &procs))?;
        }
        Ok(())
    }

    /// Removes VM `id`'s cgroups, retrying while they are busy (an exiting QEMU leaves its
    /// cgroup only once reaped) until `deadline`. Absent ones are fine.
    pub async fn remove(&self, id: &str, deadline: Duration) -> Result<(), VmError> {
        let end = Instant::now() + deadline;
        for dir in self.dirs(id) {
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < end => {
                        // Nothing to wait on: the kernel reports no event for it here.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(io_err("removing cgroup", &dir)(e)),
                }
            }
        }
        Ok(())
    }

    /// CPU time VM `id`'s cgroup has used (v2 `cpu.stat`, v1 `cpuacct.usage`).
    pub fn cpu_usage(&self, id: &str) -> Option<Duration> {
        for h in &self.layout.hierarchies {
            let dir = h.parent.join(id);
            match h.version {
                Version::V2 => {
                    let t = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                    return usage_usec(&t).map(Duration::from_micros);
                }
                Version::V1 if h.controllers.iter().any(|c| c == "cpuacct") => {
                    let t = std::fs::read_to_string(dir.join("cpuacct.usage")).ok()?;
                    return t.trim().parse().ok().map(Duration::from_nanos);
                }
                Version::V1 => {}
            }
        }
        None
    }

    /// Memory VM `id`'s cgroup uses, page cache included (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`); `None` without a memory controller.
    pub fn memory_usage(&self, id: &str) -> Option<u64> {
        let h = self
            .layout
            .hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "memory"))?;
        let file = match h.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        };
        let t = std::fs::read_to_string(h.parent.join(id).join(file)).ok()?;
        t.trim().parse().ok()
    }

    /// Names of VM cgroups (in any hierarchy) that `claimed` does not contain.
    pub fn unclaimed(&self, claimed: &HashSet<String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in &self.layout.hierarchies {
            let Ok(rd) = std::fs::read_dir(&h.parent) else {
                continue;
            };
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if !claimed.contains(&name) && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }
}

/// `usage_usec` from a v2 `cpu.stat`.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
}

/// The v2 cgroup roost manages: its own, or the parent when it already sits in the
/// `daemon` leaf it made.
fn v2_base_of(own: &Path) -> PathBuf {
    match (own.file_name(), own.parent()) {
        (Some(n), Some(p)) if n == "daemon" && p.join("vms").is_dir() => p.to_path_buf(),
        _ => own.to_path_buf(),
    }
}

/// v2's rule: a cgroup that enables controllers for its children holds no processes. Moves
/// this process and any QEMU still in `base` (an earlier daemon's) into `base/daemon`, then
/// enables `controllers` in `base` and `base/vms`. Refuses (changing nothing) when `base`
/// holds other processes: then roost does not own it (no `Delegate=yes`).
fn delegate_v2(base: &Path, controllers: &[String]) -> Result<(), VmError> {
    let procs = base.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(io_err("reading", &procs))?;
    let me = std::process::id().to_string();
    let pids: Vec<&str> = text.split_whitespace().collect();
    let foreign: Vec<&&str> = pids.iter().filter(|p| **p != me && !is_qemu(p)).collect();
    if !foreign.is_empty() {
        return Err(io_err("delegating", base)(std::io::Error::other(format!(
            "the cgroup holds other processes ({} of them; run roost with Delegate=yes)",
            foreign.len()
        ))));
    }
    let leaf = base.join("daemon");
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating cgroup", &leaf)(e)),
    }
    let leaf_procs = leaf.join("cgroup.procs");
    for p in pids {
        // A process may have exited meanwhile.
        if let Err(e) = write(&leaf_procs, p) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(io_err("moving a process into", &leaf_procs)(e));
            }
        }
    }
    let enable: String = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let vms = base.join("vms");
    match std::fs::create_dir(&vms) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating cgroup", &vms)(e)),
    }
    for dir in [base, &vms] {
        let f = dir.join("cgroup.subtree_control");
        write(&f, &enable).map_err(io_err("enabling controllers in", &f))?;
    }
    Ok(())
}

fn is_qemu(pid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|&b| b == 0)
            .next()
            .is_some_and(|p| p.windows(11).any(|w| w == b"qemu-system"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's test machine: v1 per controller (cpu and cpuacct apart), a cgroup2
    /// with only hugetlb, the memory cgroup nested.
    const HYBRID_MOUNTINFO: &str = "\
24 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
4:memory:/process_api/ef69
2:cpuacct:/
1:cpu:/
0::/
";

    /// Debian 12 with systemd: pure v2, the daemon in its unit's cgroup.
    const V2_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V2_CGROUP: &str = "0::/system.slice/roost.service\n";

    /// Debian 11 style: v1 with cpu and cpuacct co-mounted.
    const V1_COMOUNTED: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
    const V1_COMOUNTED_CGROUP: &str =
        "3:cpu,cpuacct:/system.slice/roost.service\n2:memory:/system.slice/roost.service\n";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn mountinfo_fields() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 9);
        assert_eq!(m[2].mount_point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(m[2].fstype, "cgroup");
        assert_eq!(m[2].super_options, s(&["rw", "cpu"]));
        assert_eq!(m[8].fstype, "cgroup2");
        let esc = parse_mountinfo("1 2 0:1 /a\\040b /mnt/x\\040y rw - cgroup2 none rw\n");
        assert_eq!(esc[0].root, "/a b");
        assert_eq!(esc[0].mount_point, Path::new("/mnt/x y"));
        assert!(parse_mountinfo("garbage\n").is_empty());
    }

    #[test]
    fn proc_cgroup_lines() {
        let c = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(c.len(), 7);
        assert_eq!(c[3].controllers, s(&["memory"]));
        assert_eq!(c[3].path, "/process_api/ef69");
        assert!(c[0].controllers == s(&["name=systemd"]));
        assert!(c[6].is_v2() && c[6].path == "/");
    }

    #[test]
    fn hybrid_host_uses_v1_per_controller() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let own = parse_proc_cgroup(HYBRID_CGROUP);
        let v2 = v2_own_dir(&mounts, &own);
        assert_eq!(v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        let l = plan(&mounts, &own, v2.as_deref(), &s(&["hugetlb"]));
        let got: Vec<(Version, Vec<String>, PathBuf)> = l
            .hierarchies
            .iter()
            .map(|h| (h.version, h.controllers.clone(), h.parent.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Version::V1,
                    s(&["cpu"]),
                    "/sys/fs/cgroup/cpu/roost-vms".into()
                ),
                (
                    Version::V1,
                    s(&["cpuacct"]),
                    "/sys/fs/cgroup/cpuacct/roost-vms".into()
                ),
                (
                    Version::V1,
                    s(&["memory"]),
                    "/sys/fs/cgroup/memory/process_api/ef69/roost-vms".into()
                ),
                (
                    Version::V1,
                    s(&["pids"]),
                    "/sys/fs/cgroup/pids/roost-vms".into()
                ),
                (
                    Version::V1,
                    s(&["io"]),
                    "/sys/fs/cgroup/blkio/roost-vms".into()
                ),
            ]
        );
        assert!(l.missing.is_empty());
        // Without blkio and pids mounted: those are missing, the rest stays.
        let fewer: Vec<Mount> = mounts
            .into_iter()
            .filter(|m| !m.super_options.iter().any(|o| o == "blkio" || o == "pids"))
            .collect();
        let l = plan(&fewer, &own, v2.as_deref(), &s(&["hugetlb"]));
        assert_eq!(l.missing, s(&["pids", "io"]));
    }

    #[test]
    fn pure_v2_host_uses_its_own_cgroup() {
        let mounts = parse_mountinfo(V2_MOUNTINFO);
        let own = parse_proc_cgroup(V2_CGROUP);
        let dir = v2_own_dir(&mounts, &own).expect("v2");
        assert_eq!(dir, Path::new("/sys/fs/cgroup/system.slice/roost.service"));
        let l = plan(
            &mounts,
            &own,
            Some(&dir),
            &s(&["cpu", "io", "memory", "pids"]),
        );
        assert_eq!(
            l.hierarchies,
            vec![Hierarchy {
                version: Version::V2,
                controllers: s(&["cpu", "memory", "pids", "io"]),
                parent: "/sys/fs/cgroup/system.slice/roost.service/vms".into(),
            }]
        );
        assert!(l.missing.is_empty());
        // A unit without io delegated.
        let l = plan(&mounts, &own, Some(&dir), &s(&["cpu", "memory", "pids"]));
        assert_eq!(l.missing, s(&["io"]));
    }

    #[test]
    fn comounted_v1_shares_one_directory() {
        let mounts = parse_mountinfo(V1_COMOUNTED);
        let own = parse_proc_cgroup(V1_COMOUNTED_CGROUP);
        let l = plan(&mounts, &own, None, &[]);
        assert_eq!(l.hierarchies.len(), 2);
        assert_eq!(l.hierarchies[0].controllers, s(&["cpu", "cpuacct"]));
        assert_eq!(
            l.hierarchies[0].parent,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/system.slice/roost.service/roost-vms")
        );
        assert_eq!(l.missing, s(&["pids", "io"]));
    }

    #[test]
    fn namespaced_mount_root_is_stripped() {
        let m = parse_mountinfo("1 2 0:1 /lxc/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let own = parse_proc_cgroup("0::/lxc/c1/app\n");
        assert_eq!(
            v2_own_dir(&m, &own).as_deref(),
            Some(Path::new("/sys/fs/cgroup/app"))
        );
    }

    #[test]
    fn limit_values() {
        let l = Limits::for_vm(2, 512, Accel::Tcg);
        assert_eq!(l.cpu_quota_us, 200_000);
        assert_eq!(l.cpu_period_us, 100_000);
        assert_eq!(l.memory_bytes, (512 + u64::from(TCG_TB_MIB) + 256) << 20);
        assert_eq!(
            Limits::for_vm(1, 512, Accel::Kvm).memory_bytes,
            (512 + 256) << 20
        );
        let files = |v, c| {
            limit_files(v, c, &l)
                .into_iter()
                .map(|(f, v, _)| format!("{f}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(files(Version::V2, "cpu"), ["cpu.max=200000 100000"]);
        assert_eq!(
            files(Version::V1, "cpu"),
            ["cpu.cfs_period_us=100000", "cpu.cfs_quota_us=200000"]
        );
        assert_eq!(
            files(Version::V2, "memory"),
            [format!("memory.max={}", l.memory_bytes)]
        );
        assert_eq!(
            files(Version::V1, "memory"),
            [format!("memory.limit_in_bytes={}", l.memory_bytes)]
        );
        assert_eq!(files(Version::V1, "pids"), ["pids.max=512"]);
        assert_eq!(files(Version::V2, "io"), ["io.weight=default 100"]);
        assert_eq!(files(Version::V1, "io"), ["blkio.weight=100"]);
        assert!(files(Version::V1, "cpuacct").is_empty());
    }

    #[test]
    fn v2_base_strips_only_roosts_own_leaf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leaf = dir.path().join("daemon");
        std::fs::create_dir(&leaf).expect("mkdir");
        assert_eq!(v2_base_of(&leaf), leaf, "no vms sibling: not ours");
        std::fs::create_dir(dir.path().join("vms")).expect("mkdir");
        assert_eq!(v2_base_of(&leaf), dir.path());
        assert_eq!(v2_base_of(dir.path()), dir.path());
    }

    #[test]
    fn cpu_stat_usage() {
        let t = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\n";
        assert_eq!(usage_usec(t), Some(1234));
        assert_eq!(usage_usec("nr_periods 3\n"), None);
    }

    #[test]
    fn memory_usage_from_the_memory_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (v1_cpu, v1_mem, v2) = (
            dir.path().join("cpu"),
            dir.path().join("memory"),
            dir.path().join("unified"),
        );
        for d in [&v1_cpu, &v1_mem, &v2] {
            std::fs::create_dir_all(d.join("vm1")).expect("mkdir");
        }
        std::fs::write(v1_mem.join("vm1/memory.usage_in_bytes"), "4096\n").expect("write");
        std::fs::write(v2.join("vm1/memory.current"), "8192\n").expect("write");
        let hierarchy = |version, controllers: &[&str], parent: &Path| Hierarchy {
            version,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            parent: parent.to_path_buf(),
        };
        let v1 = Cgroups::from_layout(Layout {
            hierarchies: vec![
                hierarchy(Version::V1, &["cpu"], &v1_cpu),
                hierarchy(Version::V1, &["memory"], &v1_mem),
            ],
            missing: vec![],
        });
        assert_eq!(v1.memory_usage("vm1"), Some(4096));
        assert_eq!(v1.memory_usage("vm2"), None);
        let unified = Cgroups::from_layout(Layout {
            hierarchies: vec![hierarchy(Version::V2, &["cpu", "memory"], &v2)],
            missing: vec![],
        });
        assert_eq!(unified.memory_usage("vm1"), Some(8192));
        let no_memory = Cgroups::from_layout(Layout {
            hierarchies: vec![hierarchy(Version::V2, &["cpu"], &v2)],
            missing: vec!["memory".into()],
        });
        assert_eq!(no_memory.memory_usage("vm1"), None);
        assert_eq!(Cgroups::disabled().memory_usage("vm1"), None);
    }

    #[test]
    fn disabled_has_nothing() {
        let c = Cgroups::disabled();
        assert!(c.dirs("x").is_empty());
        let cg = c
            .create("x", &Limits::for_vm(1, 64, Accel::Tcg))
            .expect("nothing to do");
        assert!(cg.procs.is_empty());
    }
}
