//! What the API and the operator read: hostings with their live QEMU figures, routes, and
//! the route table rebuilt from the store. Reads only; the one write is the route table a
//! rebuild replaces.

use std::collections::HashMap;

use tracing::warn;

use super::effects::{Effects, Vm};
use super::manager::Hostings;
use super::paths::VmPaths;
use super::{HostingError, ReloadDiff, RouteInfo, VmDetail, VmStatus};
use crate::proxy::{Route, RouteStatus};
use crate::store::{Hosting, HostingId, HostingState, UserId};
use crate::vm;

/// How many serial console lines a VM's detail shows.
pub(super) const SERIAL_TAIL_LINES: usize = 40;

impl Hostings {
    pub fn of_user(&self, user: UserId) -> Result<Option<Hosting>, HostingError> {
        Ok(self.inner.store.hostings_of(user)?.into_iter().next())
    }

    async fn status(&self, h: Hosting, owners: &HashMap<UserId, String>) -> VmStatus {
        let (pid, uptime_secs, qmp_status) = match self.inner.ctx.registry.vm(h.id) {
            Some(v) => (
                Some(v.pid()),
                v.started().elapsed().ok().map(|d| d.as_secs()),
                Some(
                    v.status()
                        .await
                        .unwrap_or_else(|e| format!("unavailable: {e}")),
                ),
            ),
            None => (None, None, None),
        };
        let cgroups = self.runtime().ok().map(|rt| &rt.cgroups);
        let used = super::stats::usage(cgroups, &h.id.to_string(), pid);
        VmStatus {
            owner: owners.get(&h.user).cloned().unwrap_or_default(),
            hosting: h,
            pid,
            uptime_secs,
            qmp_status,
            cpu_time_secs: used.cpu_secs,
            memory_bytes: used.memory_bytes,
            rss_bytes: used.rss_bytes,
        }
    }

    fn owners(&self) -> Result<HashMap<UserId, String>, HostingError> {
        super::offline::owners(&self.inner.store)
    }

    pub async fn vm_list(&self) -> Result<Vec<VmStatus>, HostingError> {
        let owners = self.owners()?;
        let mut out = Vec::new();
        for h in self.inner.store.hostings()? {
            out.push(self.status(h, &owners).await);
        }
        Ok(out)
    }

    pub async fn vm_detail(&self, id: HostingId) -> Result<VmDetail, HostingError> {
        let h = self
            .inner
            .store
            .hosting(id)?
            .ok_or(HostingError::NotFound)?;
        let owners = self.owners()?;
        let status = self.status(h.clone(), &owners).await;
        let block_stats = match self.inner.ctx.registry.vm(id) {
            Some(v) => v.block_stats().await,
            None => None,
        };
        let counters = match self.runtime() {
            Ok(rt) => rt.net.counters(&h.tap).await,
            Err(_) => None,
        };
        let p = VmPaths::new(&self.inner.cfg.state_dir, id);
        Ok(VmDetail {
            block_stats,
            tap_rx_bytes: counters.map(|c| c.0),
            tap_tx_bytes: counters.map(|c| c.1),
            serial_tail: vm::process::tail_lines(&p.serial_log, SERIAL_TAIL_LINES),
            status,
        })
    }

    /// How `h` is reached from outside.
    pub fn urls(&self, h: &Hosting) -> super::urls::SiteUrls {
        let cfg = &self.inner.cfg;
        let web = super::urls::Web::of(cfg);
        super::urls::site_urls(&cfg.domain, web, &h.slug, h.ssh_port)
    }

    pub fn routes_info(&self, only: Option<UserId>) -> Result<Vec<RouteInfo>, HostingError> {
        let table = self.routes().snapshot();
        let mut out = Vec::new();
        for h in self.inner.store.hostings()? {
            if only.is_some_and(|u| u != h.user) {
                continue;
            }
            let r = table.get(&h.slug);
            out.push(RouteInfo {
                slug: h.slug.clone(),
                hosting_id: h.id.to_string(),
                urls: self.urls(&h),
                upstream: r.and_then(|r| r.upstream).map(|u| u.to_string()),
                ssh_port: r.and_then(|r| r.ssh).map(|s| s.0),
                status: r.map(|r| r.status.as_str()).unwrap_or("absent").to_owned(),
                live: r.is_some_and(|r| r.status == RouteStatus::Live),
            });
        }
        Ok(out)
    }

    /// Rebuilds the whole route table (and SSH listeners) from the store, on an
    /// administrator's request (audited).
    pub async fn reload_routes(&self, actor: &str) -> Result<ReloadDiff, HostingError> {
        let d = self.rebuild_routes().await?;
        self.inner.store.audit(
            actor,
            "proxy.reload",
            "routes",
            &format!(
                "added={:?} removed={:?} changed={:?}",
                d.added, d.removed, d.changed
            ),
        )?;
        Ok(d)
    }

    /// Rebuilds the whole route table (and SSH listeners) from the store. Each route keeps
    /// the generation its actor gave it.
    pub async fn rebuild_routes(&self) -> Result<ReloadDiff, HostingError> {
        let hostings = self.inner.store.hostings()?;
        let table = self.routes().snapshot();
        let fx = &self.inner.ctx.fx;
        let routes: Vec<Route> = hostings
            .iter()
            .filter(|h| h.state != HostingState::Deleting)
            .map(|h| {
                let generation = table.get(&h.slug).map_or(0, |r| r.generation);
                let presence = fx.presence(h.id);
                // A sleeping VM's route is live: its visitors must ring before its actor
                // has looked at it (after a daemon restart).
                if h.asleep && h.state == HostingState::Paused {
                    presence.set_asleep();
                }
                super::real::route(h, route_status(h), generation, presence)
            })
            .collect();
        let total = routes.len();
        let diff = self.routes().replace(routes);
        for h in &hostings {
            if matches!(
                h.state,
                HostingState::Running | HostingState::Booting | HostingState::Paused
            ) {
                if let Err(e) = fx.open_ssh(h).await {
                    warn!(hosting = %h.id, error = %e, "cannot open ssh port");
                }
            }
        }
        let unchanged = total.saturating_sub(diff.added.len() + diff.changed.len());
        Ok(ReloadDiff {
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            unchanged,
        })
    }
}

/// What the proxy answers for a hosting in its state. A sleeping VM is live: the proxy
/// wakes it.
pub(super) fn route_status(h: &Hosting) -> RouteStatus {
    match h.state {
        HostingState::Running => RouteStatus::Live,
        HostingState::Paused if h.asleep => RouteStatus::Live,
        HostingState::Provisioning => RouteStatus::Provisioning,
        HostingState::Booting => RouteStatus::Booting,
        HostingState::Paused | HostingState::Stopped | HostingState::Deleting => {
            RouteStatus::Stopped
        }
        HostingState::Failed => RouteStatus::Failed,
    }
}
