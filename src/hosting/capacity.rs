//! Capacity admission: whether the host can take one more VM, as plain data. Pure.
//!
//! Every hosting holds its memory and disk reservation from creation to deletion, stopped or
//! not (a stopped VM may be started at any time, and its overlay may grow to its full
//! virtual size), so admission is decided once, at creation, against three budgets:
//! - a VM count (`[limits] max_vms`, 0 for none);
//! - memory: the host's RAM minus `memory_reserve_mib`, times `memory_overcommit`, against
//!   each VM's memory limit (its cgroup's: guest memory, QEMU's own overhead and, under TCG,
//!   the translation cache; see `vm::Limits::for_vm`);
//! - disk: the state directory's file system minus `[vm] disk_reserve_gib`, times
//!   `disk_overcommit`, against each VM's virtual disk size, and that size again for each
//!   snapshot of its disk (a snapshot keeps the blocks the guest overwrites after it, up to
//!   a whole disk). With the default ratio of 1 a guest that fills its disk can never eat
//!   the host's reserve. Snapshots are admitted against the disk budget alone.
//!
//! The caller measures the host (`HostSize`) and counts the hostings (`Usage`).

/// What the host has, as measured at admission time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostSize {
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// The operator's limits (from `[limits]` and `[vm] disk_reserve_gib`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_vms: u32,
    pub memory_reserve_mib: u64,
    pub memory_overcommit: f64,
    pub disk_reserve_gib: u64,
    pub disk_overcommit: f64,
}

/// What one VM is charged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmSize {
    /// The VM's whole memory limit (guest plus QEMU), in MiB.
    pub memory_mib: u64,
    /// Its virtual disk size.
    pub disk_gib: u64,
}

/// What the host may hold in total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// `None`: no count limit besides memory and disk.
    pub max_vms: Option<u32>,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// What the existing hostings hold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub vms: u32,
    /// Disk snapshots, over all hostings.
    pub snapshots: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

impl Usage {
    /// `vms` hostings of `size` each, with `snapshots` disk snapshots between them.
    pub fn of(vms: u32, snapshots: u32, size: VmSize) -> Usage {
        Usage {
            vms,
            snapshots,
            memory_mib: u64::from(vms) * size.memory_mib,
            disk_gib: (u64::from(vms) + u64::from(snapshots)) * size.disk_gib,
        }
    }
}

/// Why one more VM does not fit. The message names the limit and its figures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("this host is at its limit of {max} VMs; try again later or ask the operator")]
    Vms { max: u32 },
    #[error(
        "this host's memory for VMs is taken ({used} of {budget} MiB; a VM needs {needed} MiB); try again later or ask the operator"
    )]
    Memory { budget: u64, used: u64, needed: u64 },
    #[error(
        "this host's disk for VMs is taken ({used} of {budget} GiB; a VM needs {needed} GiB); try again later or ask the operator"
    )]
    Disk { budget: u64, used: u64, needed: u64 },
    #[error(
        "this host's disk for VMs is taken ({used} of {budget} GiB; a snapshot is charged {needed} GiB, the size of your disk); delete a snapshot or ask the operator"
    )]
    SnapshotDisk { budget: u64, used: u64, needed: u64 },
}

fn scaled(total: u64, reserve: u64, ratio: f64) -> u64 {
    let left = total.saturating_sub(reserve) as f64 * ratio.max(0.0);
    // Saturating float-to-int conversion.
    left as u64
}

/// The budgets of a host of `host` size under `limits`.
pub fn budget(host: HostSize, limits: &Limits) -> Budget {
    Budget {
        max_vms: (limits.max_vms > 0).then_some(limits.max_vms),
        memory_mib: scaled(
            host.memory_mib,
            limits.memory_reserve_mib,
            limits.memory_overcommit,
        ),
        disk_gib: scaled(
            host.disk_gib,
            limits.disk_reserve_gib,
            limits.disk_overcommit,
        ),
    }
}

/// Admits one more VM of `size` next to `usage`, or says which budget it would break.
pub fn admit(budget: &Budget, usage: &Usage, size: VmSize) -> Result<(), Refusal> {
    if let Some(max) = budget.max_vms {
        if usage.vms >= max {
            return Err(Refusal::Vms { max });
        }
    }
    let needed = size.memory_mib;
    if usage.memory_mib.saturating_add(needed) > budget.memory_mib {
        return Err(Refusal::Memory {
            budget: budget.memory_mib,
            used: usage.memory_mib,
            needed,
        });
    }
    if usage.disk_gib.saturating_add(size.disk_gib) > budget.disk_gib {
        return Err(Refusal::Disk {
            budget: budget.disk_gib,
            used: usage.disk_gib,
            needed: size.disk_gib,
        });
    }
    Ok(())
}

/// Admits one more snapshot of a disk of `size` next to `usage`.
pub fn admit_snapshot(budget: &Budget, usage: &Usage, size: VmSize) -> Result<(), Refusal> {
    if usage.disk_gib.saturating_add(size.disk_gib) > budget.disk_gib {
        return Err(Refusal::SnapshotDisk {
            budget: budget.disk_gib,
            used: usage.disk_gib,
            needed: size.disk_gib,
        });
    }
    Ok(())
}

/// The host's RAM from `/proc/meminfo` text (`MemTotal`, in kB), in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let kb: u64 = l
            .strip_prefix("MemTotal:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: VmSize = VmSize {
        memory_mib: 768,
        disk_gib: 4,
    };

    fn limits() -> Limits {
        Limits {
            max_vms: 0,
            memory_reserve_mib: 2048,
            memory_overcommit: 1.0,
            disk_reserve_gib: 2,
            disk_overcommit: 1.0,
        }
    }

    #[test]
    fn budgets_keep_the_reserves_and_scale_by_the_ratio() {
        let host = HostSize {
            memory_mib: 24 * 1024,
            disk_gib: 100,
        };
        let b = budget(host, &limits());
        assert_eq!(b.max_vms, None);
        assert_eq!(b.memory_mib, 22 * 1024);
        assert_eq!(b.disk_gib, 98);
        let b = budget(
            host,
            &Limits {
                max_vms: 3,
                memory_overcommit: 1.5,
                ..limits()
            },
        );
        assert_eq!(b.max_vms, Some(3));
        assert_eq!(b.memory_mib, 33 * 1024);
        // A reserve larger than the host leaves nothing, never an underflow.
        let tiny = HostSize {
            memory_mib: 1024,
            disk_gib: 1,
        };
        assert_eq!(budget(tiny, &limits()).memory_mib, 0);
        assert_eq!(budget(tiny, &limits()).disk_gib, 0);
    }

    #[test]
    fn admission_table() {
        let b = Budget {
            max_vms: Some(3),
            memory_mib: 4 * 768,
            disk_gib: 10,
        };
        // Room for one more of everything.
        assert_eq!(admit(&b, &Usage::of(1, 0, SMALL), SMALL), Ok(()));
        // The count first.
        assert_eq!(
            admit(&b, &Usage::of(3, 0, SMALL), SMALL),
            Err(Refusal::Vms { max: 3 })
        );
        // Disk: two VMs of 4 GiB hold 8 of 10.
        assert_eq!(
            admit(&b, &Usage::of(2, 0, SMALL), SMALL),
            Err(Refusal::Disk {
                budget: 10,
                used: 8,
                needed: 4
            })
        );
        // Memory: one more VM than fits.
        let b = Budget {
            max_vms: None,
            memory_mib: 768 + 767,
            disk_gib: 1000,
        };
        assert_eq!(admit(&b, &Usage::default(), SMALL), Ok(()));
        let e = admit(&b, &Usage::of(1, 0, SMALL), SMALL).expect_err("full");
        assert!(matches!(e, Refusal::Memory { needed: 768, .. }), "{e:?}");
        assert!(e.to_string().contains("MiB"), "{e}");
        assert!(Refusal::Vms { max: 10 }.to_string().contains("10 VMs"));
    }

    #[test]
    fn snapshots_are_charged_a_disk_each() {
        let b = Budget {
            max_vms: Some(1),
            memory_mib: 768,
            disk_gib: 12,
        };
        // One VM of 4 GiB and one snapshot hold 8 of 12: one more snapshot fits (the VM
        // count and memory do not matter to a snapshot), a second does not.
        let u = Usage::of(1, 1, SMALL);
        assert_eq!(u.disk_gib, 8);
        assert_eq!(admit_snapshot(&b, &u, SMALL), Ok(()));
        let e = admit_snapshot(&b, &Usage::of(1, 2, SMALL), SMALL).expect_err("full");
        assert_eq!(
            e,
            Refusal::SnapshotDisk {
                budget: 12,
                used: 12,
                needed: 4
            }
        );
        assert!(e.to_string().contains("delete a snapshot"), "{e}");
        // And they count against new VMs.
        let b = Budget {
            max_vms: None,
            memory_mib: 10_000,
            disk_gib: 12,
        };
        assert!(matches!(admit(&b, &Usage::of(1, 1, SMALL), SMALL), Ok(())));
        assert!(matches!(
            admit(&b, &Usage::of(1, 2, SMALL), SMALL),
            Err(Refusal::Disk { used: 12, .. })
        ));
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24567892 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mib(text), Some(23992));
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_mib("MemTotal: lots\n"), None);
    }
}
