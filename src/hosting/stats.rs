//! What the metrics read at each scrape (`crate::metrics::Source`): every hosting the
//! store has now, with the figures the admin API shows (the actor's QEMU, `/proc`, the VM's
//! cgroup, the tap's counters from one netlink dump, the overlay's allocation), hostings
//! by state, capacity as admission computes it, and the state directory's free space.
//! Reads only.

use std::collections::HashMap;

use futures::future::BoxFuture;
use tracing::warn;

use super::effects::Vm;
use super::manager::Hostings;
use super::paths::VmPaths;
use crate::metrics::{Capacity, Snapshot, StateDir, VmSample};
use crate::store::HostingState;
use crate::vm;

/// What a running VM uses, read the same way for the metrics, the admin API and the CLI.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Usage {
    /// CPU time: its cgroup's (every QEMU thread and child), else the QEMU process's.
    pub cpu_secs: Option<f64>,
    /// Memory: its cgroup's (page cache included, what its limit counts), else the QEMU
    /// process's resident set.
    pub memory_bytes: Option<u64>,
    /// The QEMU process's resident set.
    pub rss_bytes: Option<u64>,
}

/// The figures of hosting `id` whose QEMU is `pid` (nothing without one); `cgroups` where
/// VM cgroups live, if anywhere.
pub(super) fn usage(cgroups: Option<&vm::Cgroups>, id: &str, pid: Option<i32>) -> Usage {
    let Some(pid) = pid else {
        return Usage::default();
    };
    let proc = vm::procfs::proc_stats(pid);
    Usage {
        cpu_secs: cgroups
            .and_then(|c| c.cpu_usage(id))
            .map(|d| d.as_secs_f64())
            .or(proc.map(|p| p.cpu_time_secs)),
        memory_bytes: cgroups
            .and_then(|c| c.memory_usage(id))
            .or(proc.map(|p| p.rss_bytes)),
        rss_bytes: proc.map(|p| p.rss_bytes),
    }
}

/// Hostings by state, every state listed even at zero.
fn count_states(states: impl IntoIterator<Item = HostingState>) -> Vec<(&'static str, u64)> {
    let mut n = [0u64; HostingState::ALL.len()];
    for s in states {
        n[s as usize] += 1;
    }
    HostingState::ALL
        .iter()
        .zip(n)
        .map(|(s, n)| (s.as_str(), n))
        .collect()
}

impl Hostings {
    /// Every hosting's figures now, hostings by state, capacity and the state directory's
    /// file system. A part that cannot be read is left out (and logged), never the whole
    /// scrape.
    pub async fn metrics_snapshot(&self) -> Snapshot {
        let state_dir = self.state_dir_space();
        let hostings = match self.inner.store.hostings() {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "metrics: cannot read the hostings");
                return Snapshot {
                    state_dir,
                    ..Snapshot::default()
                };
            }
        };
        let owners = super::offline::owners(&self.inner.store).unwrap_or_default();
        let rt = self.runtime().ok();
        let taps = match rt {
            Some(rt) => rt.net.all_counters().await,
            None => HashMap::new(),
        };
        let cfg = &self.inner.cfg;
        let vms = hostings
            .iter()
            .map(|h| {
                let id = h.id.to_string();
                let pid = self.inner.ctx.registry.vm(h.id).map(|v| v.pid());
                let used = usage(rt.map(|rt| &rt.cgroups), &id, pid);
                let tap = taps.get(&h.tap);
                VmSample {
                    user: owners.get(&h.user).cloned().unwrap_or_default(),
                    cpu_seconds: used.cpu_secs,
                    memory_bytes: used.memory_bytes,
                    disk_bytes: vm::disk::allocated_bytes(
                        &VmPaths::new(&cfg.state_dir, h.id).overlay,
                    ),
                    tap_rx_bytes: tap.map(|t| t.0),
                    tap_tx_bytes: tap.map(|t| t.1),
                    id,
                }
            })
            .collect();
        let capacity = match self.capacity() {
            Ok(c) => Some(Capacity {
                vms: u64::from(c.usage.vms),
                max_vms: c.budget.max_vms.map(u64::from),
                snapshots: u64::from(c.usage.snapshots),
                memory_bytes: c.usage.memory_mib << 20,
                memory_budget_bytes: c.budget.memory_mib << 20,
                disk_bytes: c.usage.disk_gib << 30,
                disk_budget_bytes: c.budget.disk_gib << 30,
            }),
            Err(e) => {
                warn!(error = %crate::error_chain(&e), "metrics: cannot read the capacity");
                None
            }
        };
        Snapshot {
            vms,
            states: count_states(hostings.iter().map(|h| h.state)),
            asleep: hostings.iter().filter(|h| h.asleep).count() as u64,
            capacity,
            state_dir,
            certificates: Vec::new(),
        }
    }

    /// Free and total bytes of the file system holding `state_dir` (VM disks).
    fn state_dir_space(&self) -> Option<StateDir> {
        let dir = &self.inner.cfg.state_dir;
        match (vm::disk::available_bytes(dir), vm::disk::total_bytes(dir)) {
            (Ok(free_bytes), Ok(size_bytes)) => Some(StateDir {
                free_bytes,
                size_bytes,
            }),
            (Err(e), _) | (_, Err(e)) => {
                warn!(
                    error = %crate::error_chain(&e),
                    "metrics: cannot read the state directory's file system"
                );
                None
            }
        }
    }
}

impl crate::metrics::Source for Hostings {
    fn snapshot(&self) -> BoxFuture<'_, Snapshot> {
        Box::pin(self.metrics_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_counted_even_at_zero() {
        let none = count_states([]);
        assert_eq!(none.len(), HostingState::ALL.len());
        assert!(none.iter().all(|(_, n)| *n == 0), "{none:?}");
        let names: Vec<&str> = none.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            names,
            [
                "provisioning",
                "booting",
                "running",
                "paused",
                "stopped",
                "failed",
                "deleting"
            ]
        );
        let some = count_states([
            HostingState::Running,
            HostingState::Running,
            HostingState::Failed,
        ]);
        for (s, n) in some {
            let want = match s {
                "running" => 2,
                "failed" => 1,
                _ => 0,
            };
            assert_eq!(n, want, "{s}");
        }
        for s in HostingState::ALL {
            assert_eq!(HostingState::ALL[s as usize], s);
        }
    }
}
