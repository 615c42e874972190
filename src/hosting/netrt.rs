//! The network side of running VMs, as the manager uses it: one netlink handle, the
//! bridge, taps attached as isolated ports, and the firewall kept in step with the taps.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use crate::net::{self, FirewallPlan, Handle, Ipv4Net, NetError, VmPort};

pub(super) struct NetRuntime {
    handle: Handle,
    bridge: String,
    ifindex: u32,
    subnet: Ipv4Net,
    /// Firewall applies replace whole tables; one at a time.
    fw: tokio::sync::Mutex<()>,
}

impl NetRuntime {
    /// Creates or adopts the bridge with the gateway address.
    pub async fn setup(bridge: &str, subnet: Ipv4Net) -> Result<NetRuntime, NetError> {
        let handle = net::netlink()?;
        let ifindex =
            net::ensure_bridge(&handle, bridge, subnet.gateway(), subnet.prefix()).await?;
        tracing::info!(%bridge, gateway = %subnet.gateway(), "bridge ready");
        Ok(NetRuntime {
            handle,
            bridge: bridge.to_owned(),
            ifindex,
            subnet,
            fw: tokio::sync::Mutex::new(()),
        })
    }

    /// Opens a tap and makes it the bridge port of the VM whose NIC has `mac` (isolated,
    /// no learning, static FDB entry, no IPv6). The tap lives as long as the returned fd
    /// (and its copies in QEMU) are open.
    pub async fn create_tap(&self, name: &str, mac: net::MacAddr) -> Result<OwnedFd, NetError> {
        let fd = net::open_tap(name)?;
        net::attach_vm_port(&self.handle, name, self.ifindex, mac).await?;
        tracing::info!(tap = %name, "tap attached");
        Ok(fd)
    }

    pub async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        net::delete_link(&self.handle, name).await
    }

    /// roost taps on the bridge's host that no hosting in `claimed` owns.
    pub async fn orphan_taps(&self, claimed: &BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let links = net::list_links(&self.handle).await?;
        Ok(net::orphan_taps(&links, claimed)
            .map(|l| l.name.clone())
            .collect())
    }

    /// Received and sent bytes of a link. Asked over netlink, not sysfs: sysfs shows the
    /// network namespace it was mounted in, which need not be the daemon's.
    pub async fn counters(&self, name: &str) -> Option<(u64, u64)> {
        let l = net::find_link(&self.handle, name).await.ok()??;
        Some((l.rx_bytes, l.tx_bytes))
    }

    /// Replaces the firewall with one that lets exactly these VMs' taps speak, each with
    /// its own MAC and IP.
    pub async fn apply_firewall(
        &self,
        ports: Vec<(String, net::MacAddr, Ipv4Addr)>,
    ) -> Result<(), NetError> {
        let _g = self.fw.lock().await;
        // Ingress chains only for taps that exist now (nft refuses the others).
        let present: BTreeSet<String> = net::list_links(&self.handle)
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect();
        let mut plan = FirewallPlan::new(&self.bridge, self.subnet);
        plan.ports = ports
            .into_iter()
            .map(|(tap, mac, ip)| VmPort {
                attached: present.contains(&tap),
                tap,
                mac,
                ip,
            })
            .collect();
        net::apply_firewall(&plan).await
    }

    /// roost's firewall tables that are missing from the kernel right now.
    pub async fn firewall_missing(&self) -> Result<Vec<&'static str>, NetError> {
        net::firewall::firewall_missing().await
    }
}
