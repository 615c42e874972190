//! What can be said of hostings while the daemon is stopped: the store's records, and the
//! QEMU processes that still run (stopping the daemon never stops a VM). Used by the
//! operator's CLI; reads only, never changes a VM or a record.

use std::collections::HashMap;
use std::time::SystemTime;

use super::paths::VmPaths;
use super::{HostingError, VmDetail, VmStatus};
use crate::config::Config;
use crate::store::{Hosting, HostingId, Store, UserId};
use crate::vm;

/// Every hosting as the store records it, with the PID and uptime of its QEMU if that
/// still runs (checked as adoption does: pidfile, then the cmdline names the VM).
pub fn vm_list(cfg: &Config, store: &Store) -> Result<Vec<VmStatus>, HostingError> {
    let owners = owners(store)?;
    Ok(store
        .hostings()?
        .into_iter()
        .map(|h| status(cfg, h, &owners))
        .collect())
}

/// One hosting with the figures that need no QMP: CPU, memory, serial log.
pub fn vm_detail(cfg: &Config, store: &Store, id: HostingId) -> Result<VmDetail, HostingError> {
    let h = store.hosting(id)?.ok_or(HostingError::NotFound)?;
    let status = status(cfg, h, &owners(store)?);
    let paths = VmPaths::new(&cfg.state_dir, id);
    Ok(VmDetail {
        block_stats: None,
        tap_rx_bytes: None,
        tap_tx_bytes: None,
        serial_tail: vm::process::tail_lines(&paths.serial_log, super::queries::SERIAL_TAIL_LINES),
        status,
    })
}

/// Usernames by account id, for showing each VM's owner.
pub(super) fn owners(store: &Store) -> Result<HashMap<UserId, String>, HostingError> {
    Ok(store
        .users()?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect())
}

fn status(cfg: &Config, h: Hosting, owners: &HashMap<UserId, String>) -> VmStatus {
    let paths = VmPaths::new(&cfg.state_dir, h.id);
    let pid = match vm::process::adopt(&paths.pidfile, h.id.0) {
        Ok(p) => p.map(|p| p.pid()),
        Err(e) => {
            tracing::warn!(vm = %h.id, error = %crate::error_chain(&e), "cannot read the pidfile");
            None
        }
    };
    let uptime_secs = pid
        .and_then(vm::procfs::start_time)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs());
    // The process's figures: finding the daemon's cgroups (`Cgroups::discover`) would move
    // this process into them.
    let used = super::stats::usage(None, &h.id.to_string(), pid);
    VmStatus {
        owner: owners.get(&h.user).cloned().unwrap_or_default(),
        qmp_status: pid.map(|_| "not asked (the daemon is not running)".to_owned()),
        hosting: h,
        pid,
        uptime_secs,
        cpu_time_secs: used.cpu_secs,
        memory_bytes: used.memory_bytes,
        rss_bytes: used.rss_bytes,
    }
}
