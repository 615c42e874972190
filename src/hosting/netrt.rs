//! The network side of running VMs, as the manager uses it: one netlink handle, the
//! bridge, taps attached as isolated ports, the firewall kept in step with the taps, and
//! the guests' way out (NAT on the uplink, DNS on the gateway, transparent SSH replies).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use crate::config::Config;
use crate::net::{self, EgressPlan, FirewallPlan, Handle, Ipv4Net, NetError, VmPort};

pub(super) struct NetRuntime {
    handle: Handle,
    bridge: String,
    ifindex: u32,
    subnet: Ipv4Net,
    /// NAT and its limits, when guests have a way out.
    egress: Option<EgressPlan>,
    /// The SSH forwarder's transparent connections get their replies.
    client_mark: Option<u32>,
    /// roost's DNS forwarder serves on the gateway, so port 53 (UDP and TCP) is open to
    /// the VMs. Only once it really listens: a port opened for a forwarder that failed to
    /// bind would hand the guests whatever else holds port 53 on the host.
    dns: bool,
    /// Firewall applies replace whole tables; one at a time.
    fw: tokio::sync::Mutex<()>,
}

impl NetRuntime {
    /// Creates or adopts the bridge with the gateway address, and sets up the way out that
    /// the configuration asks for (each part that cannot be had is logged and left off).
    pub async fn setup(cfg: &Config, subnet: Ipv4Net) -> Result<NetRuntime, NetError> {
        let bridge = cfg.network.bridge.as_str();
        let handle = net::netlink()?;
        let ifindex =
            net::ensure_bridge(&handle, bridge, subnet.gateway(), subnet.prefix()).await?;
        tracing::info!(%bridge, gateway = %subnet.gateway(), "bridge ready");
        let egress = if cfg.network.egress {
            egress_plan(&handle, cfg).await?
        } else {
            tracing::info!("[network] egress = false: guests have no way out of the bridge");
            None
        };
        // Replies to the guest reach the transparent socket only through this route.
        let client_mark = if cfg.ssh.keep_client_address {
            match net::egress::ensure_client_routing(&handle, bridge).await {
                Ok(()) => Some(net::egress::CLIENT_MARK),
                Err(e) => {
                    tracing::warn!(error = %crate::hosting::chain(&e), "cannot route transparent ssh replies: guests see the gateway as every ssh client");
                    None
                }
            }
        } else {
            None
        };
        Ok(NetRuntime {
            handle,
            bridge: bridge.to_owned(),
            ifindex,
            subnet,
            egress,
            client_mark,
            dns: false,
            fw: tokio::sync::Mutex::new(()),
        })
    }

    /// Opens port 53 on the gateway to the VMs (from the next firewall apply): roost's DNS
    /// forwarder listens there.
    pub fn open_guest_dns(&mut self) {
        self.dns = true;
    }

    /// The SSH forwarder's mark for transparent upstream sockets, when replies are routed.
    pub fn client_mark(&self) -> Option<u32> {
        self.client_mark
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

    /// Received and sent bytes of every link, by name, from one netlink dump (the metrics
    /// read every tap at once).
    pub async fn all_counters(&self) -> std::collections::HashMap<String, (u64, u64)> {
        match net::list_links(&self.handle).await {
            Ok(links) => links
                .into_iter()
                .map(|l| (l.name, (l.rx_bytes, l.tx_bytes)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list links for their counters");
                Default::default()
            }
        }
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
        plan.egress = self.egress.clone();
        plan.client_mark = self.client_mark;
        if self.dns {
            plan.gateway_udp_ports = vec![53];
            plan.gateway_tcp_ports = vec![53];
        }
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

    /// Puts back the policy rule and route of transparent SSH replies when they are gone;
    /// `Ok(true)` when they were.
    pub async fn restore_client_routing(&self) -> Result<bool, NetError> {
        if self.client_mark.is_none()
            || net::egress::client_routing_present(&self.handle, &self.bridge).await?
        {
            return Ok(false);
        }
        net::egress::ensure_client_routing(&self.handle, &self.bridge).await?;
        Ok(true)
    }

    /// roost's firewall tables that are missing from the kernel right now.
    pub async fn firewall_missing(&self) -> Result<Vec<&'static str>, NetError> {
        net::firewall::firewall_missing().await
    }
}

/// NAT on the uplink (configured, or the default route's) with the per-VM limits; `None`
/// with a warning when there is no uplink.
async fn egress_plan(handle: &Handle, cfg: &Config) -> Result<Option<EgressPlan>, NetError> {
    let uplink = if cfg.network.uplink.is_empty() {
        match net::egress::default_uplink(handle).await? {
            Some(u) => u,
            None => {
                tracing::warn!("no default route and no [network] uplink: guests have no way out of the bridge");
                return Ok(None);
            }
        }
    } else {
        cfg.network.uplink.clone()
    };
    net::egress::enable_forwarding(&cfg.network.bridge)?;
    // Whether forwarding on the uplink is roost's doing must survive restarts (then it is
    // on already): a marker in the state directory remembers it.
    let marker = cfg.state_dir.join(format!("forwarding-enabled-{uplink}"));
    let was_on = net::egress::enable_forwarding(&uplink)?;
    if !was_on {
        if let Err(e) = std::fs::write(&marker, b"roost turned on forwarding here\n") {
            tracing::warn!(path = %marker.display(), error = %e, "cannot write marker");
        }
    }
    let ours = !was_on || marker.exists();
    let mbit = |m: u32| u64::from(m) * 1_000_000 / 8;
    tracing::info!(%uplink, smtp = cfg.network.allow_smtp, "guests reach the internet through NAT");
    Ok(Some(EgressPlan {
        uplink,
        allow_smtp: cfg.network.allow_smtp,
        deny: cfg.network.egress_deny.clone(),
        max_conns: cfg.vm.egress_max_conns,
        new_conns_per_sec: cfg.vm.egress_new_conns_per_sec,
        egress_bytes_per_sec: mbit(cfg.vm.egress_mbit),
        ingress_bytes_per_sec: mbit(cfg.vm.ingress_mbit),
        guard_uplink: ours,
    }))
}
