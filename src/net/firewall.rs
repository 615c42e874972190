//! The firewall as data (pure) and its atomic application with `nft -f -`.
//!
//! Three tables, all named `roost` and always replaced whole in one nft transaction:
//! - `netdev roost` has one `ingress` chain per attached tap: the first thing a frame from
//!   a guest meets, before the bridge sees it. It must come from the tap's own MAC, be ARP
//!   or IPv4 from the VM's own address, and must not go to a link-local group address
//!   (01:80:c2:00:00:0X): the bridge hands those to its local stack without passing its
//!   `prerouting` hook, so the `bridge` table below never sees them.
//! - `bridge roost` sees frames per bridge port: a frame from a roost tap must carry that
//!   tap's own MAC and (for IPv4 and ARP) its own IP, or it is dropped (anti-spoofing);
//!   anything else (IPv6, VLAN tags, other ethertypes) is dropped too. Tap-to-tap frames are
//!   dropped as a second line behind the bridge's port isolation.
//! - `inet roost` sees what reaches the host through the bridge: VMs may answer connections
//!   the host opened (the proxy, the SSH forwarder), ping the gateway if allowed, and reach
//!   the gateway's listed ports; nothing else on the host. Nothing is routed from the bridge
//!   back to the bridge, so VMs cannot reach one another at L3 either. Nothing that arrives
//!   on a tap itself (rather than through the bridge) is taken at all.
//!
//! Frames from a tap not yet in the plan are dropped (deny by default), so the plan must be
//! applied after a tap is attached and before its VM needs the network.
//!
//! Shelling out: nftables has no maintained pure-Rust netlink crate, and `nft -f` gives an
//! atomic whole-table replacement for free, so this one place runs the `nft` binary. The
//! ruleset is built from validated values (interface names, addresses, ports), never from
//! free text.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tracing::info;

use super::ident::{MacAddr, TAP_PREFIX};
use super::{valid_ifname, NetError};
use crate::addr::{Cidr, Ipv4Net};

/// One VM's bridge port and the only addresses it may send from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPort {
    /// The bridge port (tap) name; roost taps start with [`TAP_PREFIX`].
    pub tap: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// The tap exists now, so it gets an ingress chain (nft refuses a chain on a device
    /// that does not exist; a tap that is gone needs none).
    pub attached: bool,
}

/// Everything the ruleset depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallPlan {
    /// The bridge carrying the gateway address.
    pub bridge: String,
    /// The VM subnet; its gateway is the only host address VMs may talk to.
    pub subnet: Ipv4Net,
    /// TCP ports on the gateway VMs may connect to (none by default; 53 for a DNS forwarder).
    pub gateway_tcp_ports: Vec<u16>,
    /// UDP ports on the gateway VMs may send to.
    pub gateway_udp_ports: Vec<u16>,
    /// Let VMs ping the gateway (useful for health checks and debugging).
    pub allow_ping_gateway: bool,
    /// The ports of all VMs that should have network access.
    pub ports: Vec<VmPort>,
    /// Guests' way to the internet; `None`: nothing is routed out of the bridge.
    pub egress: Option<EgressPlan>,
    /// The mark the SSH forwarder puts on its transparent upstream sockets: their
    /// connections get it as a conntrack mark, and the guest's replies arriving on the
    /// bridge get it back as a packet mark, which policy routing delivers locally.
    pub client_mark: Option<u32>,
}

/// NAT to the internet and the limits on it, per VM (keyed by the VM's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressPlan {
    /// The interface guests' traffic leaves by (masqueraded to its address).
    pub uplink: String,
    /// Let guests open connections to port 25 outside.
    pub allow_smtp: bool,
    /// Destinations never reached.
    pub deny: Vec<Cidr>,
    /// Connections one VM may hold open at once.
    pub max_conns: u32,
    /// New connections one VM may open per second (burst: twice that).
    pub new_conns_per_sec: u32,
    /// Bytes per second out of and into one VM (0: no cap).
    pub egress_bytes_per_sec: u64,
    pub ingress_bytes_per_sec: u64,
    /// Forwarding was turned on for the uplink by roost: nothing but replies to the VMs
    /// may be routed from it, so the host does not become a router for anyone else.
    pub guard_uplink: bool,
}

impl FirewallPlan {
    /// A plan with nothing open on the gateway except ping, and no VMs.
    pub fn new(bridge: &str, subnet: Ipv4Net) -> Self {
        FirewallPlan {
            bridge: bridge.to_owned(),
            subnet,
            gateway_tcp_ports: Vec::new(),
            gateway_udp_ports: Vec::new(),
            allow_ping_gateway: true,
            ports: Vec::new(),
            egress: None,
            client_mark: None,
        }
    }

    /// The nft script that replaces both `roost` tables atomically.
    pub fn ruleset(&self) -> Result<String, NetError> {
        check_name(&self.bridge)?;
        for p in &self.ports {
            check_name(&p.tap)?;
        }
        let gw = self.subnet.gateway();
        let mut s = String::new();
        // `table X` + `delete table X` first makes the delete valid when the table does not
        // exist yet; the whole file is one transaction, so traffic never sees a gap.
        s.push_str("# Generated by roost: replaced as a whole, do not edit.\n");
        s.push_str(teardown_ruleset());
        s.push('\n');

        s.push_str("table netdev roost {\n");
        for p in self.ports.iter().filter(|p| p.attached) {
            let _ = writeln!(
                s,
                "\tchain ingress_{tap} {{\n\
                 \t\ttype filter hook ingress device \"{tap}\" priority -500; policy drop;\n\
                 \t\tether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00 drop\n\
                 \t\tether saddr != {mac} drop\n\
                 \t\tether type arp arp htype 1 arp ptype ip arp saddr ether {mac} arp saddr ip {ip} accept\n\
                 \t\tether type ip ip saddr {ip} accept\n\
                 \t}}",
                tap = p.tap,
                mac = p.mac,
                ip = p.ip
            );
        }
        s.push_str("}\n\n");

        s.push_str("table bridge roost {\n");
        push_set(
            &mut s,
            "vm_mac",
            "ifname . ether_addr",
            &[],
            self.ports
                .iter()
                .map(|p| format!("\"{}\" . {}", p.tap, p.mac)),
        );
        push_set(
            &mut s,
            "vm_ip4",
            "ifname . ether_addr . ipv4_addr",
            &[],
            self.ports
                .iter()
                .map(|p| format!("\"{}\" . {} . {}", p.tap, p.mac, p.ip)),
        );
        let taps = format!("\"{TAP_PREFIX}*\"");
        let _ = writeln!(
            s,
            "\tchain prerouting {{\n\
             \t\ttype filter hook prerouting priority filter; policy accept;\n\
             \t\tiifname {taps} jump from_vm\n\
             \t}}\n\
             \tchain from_vm {{\n\
             \t\tiifname . ether saddr != @vm_mac drop\n\
             \t\tether type arp iifname . arp saddr ether . arp saddr ip @vm_ip4 accept\n\
             \t\tether type ip iifname . ether saddr . ip saddr @vm_ip4 accept\n\
             \t\tdrop\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname {taps} oifname {taps} drop\n\
             \t}}"
        );
        s.push_str("}\n\n");

        let br = format!("\"{}\"", self.bridge);
        s.push_str("table inet roost {\n");
        let _ = writeln!(
            s,
            "\tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname {taps} drop\n\
             \t\tiifname {br} jump from_vms\n\
             \t}}\n\
             \tchain from_vms {{\n\
             \t\tct state established,related accept\n\
             \t\tct state invalid drop"
        );
        if self.allow_ping_gateway {
            let _ = writeln!(s, "\t\tip daddr {gw} icmp type echo-request accept");
        }
        for (proto, ports) in [
            ("tcp", &self.gateway_tcp_ports),
            ("udp", &self.gateway_udp_ports),
        ] {
            if !ports.is_empty() {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                let _ = writeln!(
                    s,
                    "\t\tip daddr {gw} {proto} dport {{ {} }} accept",
                    list.join(", ")
                );
            }
        }
        let _ = writeln!(s, "\t\tdrop\n\t}}");
        match &self.egress {
            None => {
                let _ = writeln!(
                    s,
                    "\tchain forward {{\n\
                     \t\ttype filter hook forward priority filter; policy accept;\n\
                     \t\tiifname {taps} drop\n\
                     \t\tiifname {br} drop\n\
                     \t\toifname {br} drop\n\
                     \t}}"
                );
            }
            Some(e) => push_egress(&mut s, e, &br, &taps, self.subnet)?,
        }
        if let Some(mark) = self.client_mark {
            let _ = writeln!(
                s,
                "\tchain client_mark_out {{\n\
                 \t\ttype filter hook output priority mangle; policy accept;\n\
                 \t\toifname {br} meta mark {mark:#x} ct mark set {mark:#x}\n\
                 \t}}\n\
                 \tchain client_mark_in {{\n\
                 \t\ttype filter hook prerouting priority mangle; policy accept;\n\
                 \t\tiifname {br} ct mark {mark:#x} meta mark set {mark:#x}\n\
                 \t}}"
            );
        }
        s.push_str("}\n");
        // Always present (empty without egress), so its absence is drift.
        s.push_str("\ntable ip roost_nat {\n");
        if let Some(e) = &self.egress {
            let _ = writeln!(
                s,
                "\tchain postrouting {{\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\tip saddr {net} oifname \"{up}\" masquerade\n\
                 \t}}",
                net = self.subnet,
                up = e.uplink
            );
        }
        s.push_str("}\n");
        Ok(s)
    }
}

/// The forward chain with egress: guests' new connections may leave by the uplink only, to
/// no denied network, within their connection, rate and bandwidth limits; from outside,
/// only replies come in. Refusals are TCP resets where they can be: the kernel rate-limits
/// the ICMP errors a reject sends (about one a second per destination), and a SYN whose
/// refusal was suppressed is retried for seconds instead of failing at once.
fn push_egress(
    s: &mut String,
    e: &EgressPlan,
    br: &str,
    taps: &str,
    subnet: Ipv4Net,
) -> Result<(), NetError> {
    check_name(&e.uplink)?;
    let up = format!("\"{}\"", e.uplink);
    // Per-VM state, keyed by the VM's address; the rate buckets of VMs gone quiet expire.
    let per_vm = ["size 65535", "flags dynamic"];
    let expiring = ["size 65535", "flags dynamic,timeout", "timeout 1m"];
    push_set(s, "vm_conns", "ipv4_addr", &per_vm, std::iter::empty());
    for name in ["vm_new", "vm_out_bytes", "vm_in_bytes"] {
        push_set(s, name, "ipv4_addr", &expiring, std::iter::empty());
    }
    if !e.deny.is_empty() {
        let deny = e.deny.iter().map(Cidr::to_string);
        push_set(
            s,
            "egress_deny",
            "ipv4_addr",
            &["flags interval", "auto-merge"],
            deny,
        );
    }
    let guard = if e.guard_uplink {
        format!("\t\tiifname {up} drop\n")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "\tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname {taps} drop\n\
         \t\tiifname {br} jump vm_out\n\
         \t\toifname {br} jump vm_in\n\
         {guard}\
         \t}}"
    );
    let _ = writeln!(
        s,
        "\tchain vm_out {{\n\
         \t\toifname != {up} drop\n\
         \t\tmeta nfproto != ipv4 drop\n\
         \t\tip saddr != {subnet} drop"
    );
    push_byte_limit(s, "vm_out_bytes", "saddr", e.egress_bytes_per_sec);
    let _ = writeln!(
        s,
        "\t\tct state established,related accept\n\
         \t\tct state != new drop"
    );
    if !e.deny.is_empty() {
        let _ = writeln!(s, "\t\tip daddr @egress_deny jump refuse");
    }
    if !e.allow_smtp {
        let _ = writeln!(s, "\t\ttcp dport 25 reject with tcp reset");
    }
    let _ = writeln!(
        s,
        "\t\tadd @vm_conns {{ ip saddr ct count over {max} }} jump refuse\n\
         \t\tupdate @vm_new {{ ip saddr limit rate over {rate}/second burst {burst} packets }} jump refuse\n\
         \t\taccept\n\
         \t}}\n\
         \tchain refuse {{\n\
         \t\tmeta l4proto tcp reject with tcp reset\n\
         \t\treject with icmp type admin-prohibited\n\
         \t}}",
        max = e.max_conns,
        rate = e.new_conns_per_sec,
        burst = e.new_conns_per_sec.saturating_mul(2)
    );
    let _ = writeln!(
        s,
        "\tchain vm_in {{\n\
         \t\tiifname != {up} drop\n\
         \t\tct state != {{ established, related }} drop"
    );
    push_byte_limit(s, "vm_in_bytes", "daddr", e.ingress_bytes_per_sec);
    let _ = writeln!(s, "\t\taccept\n\t}}");
    Ok(())
}

/// Drops a VM's packets beyond `bytes_per_sec` (none when 0), the VM being the packet's
/// `addr` (`saddr` out, `daddr` in), with one bucket per VM in `set`.
fn push_byte_limit(s: &mut String, set: &str, addr: &str, bytes_per_sec: u64) {
    if bytes_per_sec > 0 {
        let _ = writeln!(
            s,
            "\t\tupdate @{set} {{ ip {addr} limit rate over {bytes_per_sec} bytes/second burst {} bytes }} drop",
            burst(bytes_per_sec)
        );
    }
}

/// The bucket of a byte-rate limit: a tenth of a second at the rate, at least 64 KiB, so
/// TCP's bursts pass and the long-run rate holds.
fn burst(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 10).max(64 * 1024)
}

/// The script that removes roost's tables (and succeeds when they do not exist).
pub fn teardown_ruleset() -> &'static str {
    "table netdev roost\ndelete table netdev roost\n\
     table bridge roost\ndelete table bridge roost\n\
     table inet roost\ndelete table inet roost\n\
     table ip roost_nat\ndelete table ip roost_nat\n"
}

/// roost's tables as `nft list tables` names them.
const TABLES: [&str; 4] = [
    "table netdev roost",
    "table bridge roost",
    "table inet roost",
    "table ip roost_nat",
];

/// Which of roost's tables are missing from `nft list tables` output (after `nft flush
/// ruleset`, for instance, which Debian's nftables.service runs on start and reload).
pub fn missing_tables(listing: &str) -> Vec<&'static str> {
    TABLES
        .into_iter()
        .filter(|t| !listing.lines().any(|l| l.trim() == *t))
        .collect()
}

/// roost's tables missing from the kernel's ruleset right now.
pub async fn firewall_missing() -> Result<Vec<&'static str>, NetError> {
    let out = tokio::process::Command::new("nft")
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(NetError::FirewallIo)?;
    if !out.status.success() {
        return Err(NetError::FirewallRejected(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(missing_tables(&String::from_utf8_lossy(&out.stdout)))
}

/// Interface names go into the ruleset inside double quotes: allow only plain characters.
fn check_name(name: &str) -> Result<(), NetError> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid_ifname(name) && plain {
        Ok(())
    } else {
        Err(NetError::InvalidName(name.to_owned()))
    }
}

/// Writes a named set; nft rejects `elements = { }`, so an empty set has no elements line.
/// A set of type `ty` with its option lines (`flags …`, `size …`, `timeout …`) and elements.
fn push_set(
    s: &mut String,
    name: &str,
    ty: &str,
    opts: &[&str],
    elements: impl Iterator<Item = String>,
) {
    let elements: Vec<String> = elements.collect();
    let _ = writeln!(s, "\tset {name} {{\n\t\ttype {ty}");
    for o in opts {
        let _ = writeln!(s, "\t\t{o}");
    }
    if !elements.is_empty() {
        let _ = writeln!(
            s,
            "\t\telements = {{\n\t\t\t{}\n\t\t}}",
            elements.join(",\n\t\t\t")
        );
    }
    s.push_str("\t}\n");
}

/// Replaces roost's tables with the plan, atomically.
pub async fn apply_firewall(plan: &FirewallPlan) -> Result<(), NetError> {
    run_nft(&plan.ruleset()?).await?;
    info!(ports = plan.ports.len(), "firewall applied");
    Ok(())
}

/// Removes roost's tables, if any.
pub async fn remove_firewall() -> Result<(), NetError> {
    run_nft(teardown_ruleset()).await
}

/// Feeds `script` to `nft -f -`; a rejected script leaves the old ruleset in place.
async fn run_nft(script: &str) -> Result<(), NetError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NetError::FirewallIo)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(NetError::FirewallIo)?;
        // Dropping stdin closes it so nft sees the end of the script.
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(NetError::FirewallIo)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::FirewallRejected(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> FirewallPlan {
        let mut p = FirewallPlan::new("roost0", "10.88.0.0/24".parse().expect("subnet"));
        p.ports = vec![
            VmPort {
                tap: "rtaaaaaaaaaaaaa".into(),
                mac: "52:54:00:00:00:02".parse().expect("mac"),
                ip: Ipv4Addr::new(10, 88, 0, 2),
                attached: true,
            },
            VmPort {
                tap: "rtbbbbbbbbbbbbb".into(),
                mac: "52:54:00:00:00:03".parse().expect("mac"),
                ip: Ipv4Addr::new(10, 88, 0, 3),
                attached: false,
            },
        ];
        p
    }

    #[test]
    fn full_ruleset() {
        let got = plan().ruleset().expect("ruleset");
        let want = r#"# Generated by roost: replaced as a whole, do not edit.
table netdev roost
delete table netdev roost
table bridge roost
delete table bridge roost
table inet roost
delete table inet roost
table ip roost_nat
delete table ip roost_nat

table netdev roost {
	chain ingress_rtaaaaaaaaaaaaa {
		type filter hook ingress device "rtaaaaaaaaaaaaa" priority -500; policy drop;
		ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00 drop
		ether saddr != 52:54:00:00:00:02 drop
		ether type arp arp htype 1 arp ptype ip arp saddr ether 52:54:00:00:00:02 arp saddr ip 10.88.0.2 accept
		ether type ip ip saddr 10.88.0.2 accept
	}
}

table bridge roost {
	set vm_mac {
		type ifname . ether_addr
		elements = {
			"rtaaaaaaaaaaaaa" . 52:54:00:00:00:02,
			"rtbbbbbbbbbbbbb" . 52:54:00:00:00:03
		}
	}
	set vm_ip4 {
		type ifname . ether_addr . ipv4_addr
		elements = {
			"rtaaaaaaaaaaaaa" . 52:54:00:00:00:02 . 10.88.0.2,
			"rtbbbbbbbbbbbbb" . 52:54:00:00:00:03 . 10.88.0.3
		}
	}
	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
		iifname "rt*" jump from_vm
	}
	chain from_vm {
		iifname . ether saddr != @vm_mac drop
		ether type arp iifname . arp saddr ether . arp saddr ip @vm_ip4 accept
		ether type ip iifname . ether saddr . ip saddr @vm_ip4 accept
		drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "rt*" oifname "rt*" drop
	}
}

table inet roost {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "rt*" drop
		iifname "roost0" jump from_vms
	}
	chain from_vms {
		ct state established,related accept
		ct state invalid drop
		ip daddr 10.88.0.1 icmp type echo-request accept
		drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "rt*" drop
		iifname "roost0" drop
		oifname "roost0" drop
	}
}

table ip roost_nat {
}
"#;
        assert_eq!(got, want, "got:\n{got}");
    }

    fn egress_plan() -> FirewallPlan {
        let mut p = plan();
        p.egress = Some(EgressPlan {
            uplink: "eth0".into(),
            allow_smtp: false,
            deny: vec![
                "10.0.0.0/8".parse().expect("cidr"),
                "169.254.169.254/32".parse().expect("cidr"),
            ],
            max_conns: 64,
            new_conns_per_sec: 10,
            egress_bytes_per_sec: 1_250_000,
            ingress_bytes_per_sec: 0,
            guard_uplink: true,
        });
        p.client_mark = Some(0x524f);
        p
    }

    #[test]
    fn egress_routes_new_connections_out_by_the_uplink_only_within_limits() {
        let got = egress_plan().ruleset().expect("ruleset");
        if let Ok(path) = std::env::var("ROOST_DUMP_RULESET") {
            std::fs::write(path, &got).expect("dump");
        }
        let out = got.split("\tchain vm_out {\n").nth(1).expect("vm_out");
        let out = &out[..out.find("\t}").expect("end")];
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "oifname != \"eth0\" drop",
                "meta nfproto != ipv4 drop",
                "ip saddr != 10.88.0.0/24 drop",
                "update @vm_out_bytes { ip saddr limit rate over 1250000 bytes/second burst 125000 bytes } drop",
                "ct state established,related accept",
                "ct state != new drop",
                "ip daddr @egress_deny jump refuse",
                "tcp dport 25 reject with tcp reset",
                "add @vm_conns { ip saddr ct count over 64 } jump refuse",
                "update @vm_new { ip saddr limit rate over 10/second burst 20 packets } jump refuse",
                "accept",
            ]
        );
        // No ingress cap: replies pass unmetered; the uplink forwards nothing else.
        assert!(got.contains("\tchain vm_in {\n\t\tiifname != \"eth0\" drop\n\t\tct state != { established, related } drop\n\t\taccept\n\t}"), "{got}");
        assert!(
            got.contains("\t\toifname \"roost0\" jump vm_in\n\t\tiifname \"eth0\" drop\n"),
            "{got}"
        );
        assert!(
            got.contains("\tset egress_deny {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {\n\t\t\t10.0.0.0/8,\n\t\t\t169.254.169.254/32\n\t\t}\n\t}"),
            "{got}"
        );
        assert!(
            got.contains("ip saddr 10.88.0.0/24 oifname \"eth0\" masquerade"),
            "{got}"
        );
        assert!(
            got.contains("oifname \"roost0\" meta mark 0x524f ct mark set 0x524f"),
            "{got}"
        );
        assert!(
            got.contains("iifname \"roost0\" ct mark 0x524f meta mark set 0x524f"),
            "{got}"
        );
        // SMTP allowed: no port-25 rule; a bad uplink name is refused.
        let mut p = egress_plan();
        if let Some(e) = p.egress.as_mut() {
            e.allow_smtp = true;
        }
        assert!(!p.ruleset().expect("ruleset").contains("dport 25"));
        if let Some(e) = p.egress.as_mut() {
            e.uplink = "eth0\" accept #".into();
        }
        assert!(p.ruleset().is_err());
    }

    #[test]
    fn gateway_ports_and_no_ping() {
        let mut p = plan();
        p.gateway_tcp_ports = vec![53, 8053];
        p.gateway_udp_ports = vec![53];
        p.allow_ping_gateway = false;
        let got = p.ruleset().expect("ruleset");
        assert!(
            got.contains("\t\tip daddr 10.88.0.1 tcp dport { 53, 8053 } accept\n"),
            "{got}"
        );
        assert!(
            got.contains("\t\tip daddr 10.88.0.1 udp dport { 53 } accept\n"),
            "{got}"
        );
        assert!(!got.contains("echo-request"), "{got}");
        // The final drop comes after every accept.
        let drop = got.find("\t\tdrop\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname \"rt*\" drop\n").expect("drop");
        assert!(got.find("udp dport").expect("udp") < drop);
    }

    #[test]
    fn empty_sets_have_no_elements_line() {
        let p = FirewallPlan::new("roost0", "10.88.0.0/24".parse().expect("subnet"));
        let got = p.ruleset().expect("ruleset");
        assert!(
            got.contains("\tset vm_mac {\n\t\ttype ifname . ether_addr\n\t}\n"),
            "{got}"
        );
        assert!(!got.contains("elements"), "{got}");
    }

    #[test]
    fn names_that_could_inject_are_rejected() {
        for bad in ["a\"b", "roost 0", "x;y", "", "sixteen-chars-xx", "a{b"] {
            let mut p = plan();
            p.bridge = bad.into();
            assert!(
                matches!(p.ruleset(), Err(NetError::InvalidName(_))),
                "{bad}"
            );
            let mut p = plan();
            p.ports[0].tap = bad.into();
            assert!(
                matches!(p.ruleset(), Err(NetError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn teardown_is_idempotent_form() {
        assert_eq!(
            teardown_ruleset(),
            "table netdev roost\ndelete table netdev roost\ntable bridge roost\ndelete table bridge roost\ntable inet roost\ndelete table inet roost\ntable ip roost_nat\ndelete table ip roost_nat\n"
        );
    }

    #[test]
    fn missing_tables_are_named() {
        let all = "table ip nat\ntable netdev roost\ntable bridge roost\ntable inet roost\ntable ip roost_nat\n";
        assert!(missing_tables(all).is_empty());
        assert_eq!(
            missing_tables("table inet roost\ntable inet roosty\ntable ip roost_nat\n"),
            vec!["table netdev roost", "table bridge roost"]
        );
        assert_eq!(missing_tables("").len(), 4);
    }

    #[test]
    fn only_attached_taps_get_an_ingress_chain() {
        let got = plan().ruleset().expect("ruleset");
        assert!(got.contains("device \"rtaaaaaaaaaaaaa\""), "{got}");
        assert!(!got.contains("device \"rtbbbbbbbbbbbbb\""), "{got}");
        // Its bridge-level rules stay: the tap may come back before the next apply.
        assert!(
            got.contains("\"rtbbbbbbbbbbbbb\" . 52:54:00:00:00:03 . 10.88.0.3"),
            "{got}"
        );
    }
}
