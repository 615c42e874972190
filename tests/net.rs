//! Privileged tests of `roost::net` against the real kernel, each in a private network
//! namespace: the bridge, taps, isolated ports, and the nftables firewall with real traffic.
mod common;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{run, Reaped};
use roost::net::{self, bridge::observe_bridge, Ipv4Net, NetError};

const BRIDGE: &str = "roostt0";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A netlink handle whose connection task runs on `rt`.
fn netlink(rt: &tokio::runtime::Runtime) -> net::Handle {
    let _enter = rt.enter();
    net::netlink().expect("netlink")
}

/// The firewall that lets exactly these peers speak, with one gateway port open.
fn plan_for(s: Ipv4Net, peers: &[&Peer], gateway_port: u16) -> net::FirewallPlan {
    let mut plan = net::FirewallPlan::new(BRIDGE, s);
    plan.gateway_tcp_ports = vec![gateway_port];
    plan.ports = peers
        .iter()
        .map(|p| net::VmPort {
            tap: p.port.clone(),
            mac: p.mac,
            ip: p.ip,
            attached: true,
        })
        .collect();
    plan
}

fn subnet() -> Ipv4Net {
    "10.88.0.0/24".parse().expect("subnet")
}

/// Runs `ip ARGS` in the calling thread's namespace and returns stdout; panics on failure.
fn ip(args: &[&str]) -> String {
    run("ip", args)
}

fn bridge(args: &[&str]) -> String {
    run("bridge", args)
}

#[test]
fn bridge_is_idempotent_and_taps_are_isolated_ports() {
    if !common::privileged("net::bridge_is_idempotent_and_taps_are_isolated_ports") {
        return;
    }
    common::in_netns(|| {
        let rt = runtime();
        let h = netlink(&rt);
        let s = subnet();

        // Create, then adopt: same ifindex, address present, up.
        let first = rt
            .block_on(net::ensure_bridge(&h, BRIDGE, s.gateway(), s.prefix()))
            .expect("create bridge");
        let again = rt
            .block_on(net::ensure_bridge(&h, BRIDGE, s.gateway(), s.prefix()))
            .expect("adopt bridge");
        assert_eq!(first, again);
        let b = rt
            .block_on(observe_bridge(&h, BRIDGE))
            .expect("observe")
            .expect("bridge exists");
        assert_eq!(b.kind.as_deref(), Some("bridge"));
        assert!(b.up);
        assert_eq!(b.addresses, vec![(s.gateway(), 24)]);
        assert!(ip(&["-4", "addr", "show", "dev", BRIDGE]).contains("inet 10.88.0.1/24"));

        // A bridge that lost its address and went down is repaired in place.
        ip(&["addr", "flush", "dev", BRIDGE]);
        ip(&["link", "set", BRIDGE, "down"]);
        ip(&["link", "set", BRIDGE, "address", "02:00:00:00:00:01"]);
        let repaired = rt
            .block_on(net::ensure_bridge(&h, BRIDGE, s.gateway(), s.prefix()))
            .expect("repair bridge");
        assert_eq!(repaired, first);
        let b = rt.block_on(observe_bridge(&h, BRIDGE)).expect("observe");
        let b = b.expect("bridge exists");
        assert!(b.up);
        assert_eq!(b.addresses, vec![(s.gateway(), 24)]);
        assert_eq!(b.mac, Some(net::bridge::bridge_mac(BRIDGE)));

        // A link of another kind under the bridge's name is refused, not adopted.
        ip(&[
            "link", "add", "notabr0", "type", "veth", "peer", "name", "notabr1",
        ]);
        let err = rt
            .block_on(net::ensure_bridge(&h, "notabr0", s.gateway(), s.prefix()))
            .expect_err("dummy is not a bridge");
        assert!(matches!(err, NetError::NotABridge(_)), "{err}");

        // Two taps, attached as isolated ports.
        let names = [net::tap_name(b"tap-a"), net::tap_name(b"tap-b")];
        let mut fds = Vec::new();
        for n in &names {
            fds.push(net::open_tap(n).expect("open tap"));
            let mac = net::mac_for(n.as_bytes());
            rt.block_on(net::attach_vm_port(&h, n, first, mac))
                .expect("attach");
            // Attaching twice is harmless.
            rt.block_on(net::attach_vm_port(&h, n, first, mac))
                .expect("attach again");
            let shown = ip(&["-d", "link", "show", "dev", n]);
            assert!(shown.contains("isolated on"), "{shown}");
            assert!(shown.contains("learning off"), "{shown}");
            assert!(shown.contains(" flood off"), "{shown}");
            let fdb = bridge(&["fdb", "show", "dev", n]);
            assert!(
                fdb.contains(&format!("{mac} master {BRIDGE} static")),
                "the VM's MAC is a static entry on its port: {fdb}"
            );
            let v6 = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6"))
                .expect("disable_ipv6");
            assert_eq!(v6.trim(), "1", "no IPv6 on a VM port");
            assert!(shown.contains(&format!("master {BRIDGE}")), "{shown}");
            assert!(shown.contains("tun type tap"), "{shown}");
        }
        let links = rt.block_on(net::list_links(&h)).expect("list links");
        for n in &names {
            let l = links.iter().find(|l| &l.name == n).expect("tap listed");
            assert_eq!(l.master, Some(first), "{l:?}");
            assert!(l.isolated && l.up, "{l:?}");
            assert_eq!(l.kind.as_deref(), Some("tun"), "{l:?}");
        }
        let bridge = links
            .iter()
            .find(|l| l.name == BRIDGE)
            .expect("bridge listed");
        assert!(!net::is_roost_tap(&bridge.name));
        // Ports joining do not change the gateway's MAC (VMs' ARP caches stay valid).
        assert_eq!(bridge.mac, Some(net::bridge::bridge_mac(BRIDGE)));

        // A tap held by someone (QEMU, later) cannot be opened a second time.
        let busy = net::open_tap(&names[0]).expect_err("tap is held");
        assert!(matches!(busy, NetError::Tun { .. }), "{busy}");

        // Deleting is idempotent, also while the fd is still open.
        assert!(rt
            .block_on(net::delete_link(&h, &names[0]))
            .expect("delete"));
        assert!(!rt
            .block_on(net::delete_link(&h, &names[0]))
            .expect("delete again"));

        // Taps are not persistent: closing the last fd removes the other one.
        drop(fds);
        common::poll("taps to vanish", Duration::from_secs(5), || {
            let links = rt.block_on(net::list_links(&h)).expect("list links");
            (!links.iter().any(|l| net::is_roost_tap(&l.name))).then_some(())
        });

        assert!(rt
            .block_on(net::delete_link(&h, BRIDGE))
            .expect("delete bridge"));
        assert!(rt
            .block_on(net::find_link(&h, BRIDGE))
            .expect("find")
            .is_none());
    });
}

/// A thread in its own network namespace (nested in the test's), standing in for a VM.
/// Closures sent to it run there; the namespace vanishes when the thread ends on drop.
struct ChildNs {
    jobs: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<JoinHandle<()>>,
}

impl ChildNs {
    /// Returns the namespace and an fd naming it (for moving a link into it).
    fn new() -> (ChildNs, File) {
        let (jobs, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (ns_tx, ns_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            ns_tx
                .send(File::open("/proc/thread-self/ns/net").expect("open ns"))
                .expect("send ns fd");
            for job in rx {
                job();
            }
        });
        let ns = ns_rx.recv().expect("child namespace");
        (
            ChildNs {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            ns,
        )
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .expect("running")
            .send(job)
            .expect("child thread alive");
        rx.recv().expect("job in child namespace panicked")
    }
}

impl Drop for ChildNs {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A "VM": a child namespace whose interface `eth0` is a veth peer of an isolated port.
struct Peer {
    ns: ChildNs,
    port: String,
    mac: net::MacAddr,
    ip: Ipv4Addr,
}

impl Peer {
    fn new(
        rt: &tokio::runtime::Runtime,
        h: &net::Handle,
        id: &str,
        ip: Ipv4Addr,
        bridge: u32,
    ) -> Peer {
        let port = net::tap_name(id.as_bytes());
        let mac = net::mac_for(id.as_bytes());
        let (ns, ns_fd) = ChildNs::new();
        let peer = format!("p{}", &port[2..]);
        self::ip(&["link", "add", &port, "type", "veth", "peer", "name", &peer]);
        let peer_link = rt
            .block_on(net::find_link(h, &peer))
            .expect("find peer")
            .expect("peer exists");
        rt.block_on(
            h.link()
                .set(peer_link.ifindex)
                .setns_by_fd(ns_fd.as_raw_fd())
                .execute(),
        )
        .expect("move peer into child namespace");
        let (mac_s, cidr) = (mac.to_string(), format!("{ip}/24"));
        ns.run(move || {
            self::ip(&["link", "set", "lo", "up"]);
            self::ip(&["link", "set", &peer, "name", "eth0"]);
            self::ip(&["link", "set", "eth0", "address", &mac_s]);
            self::ip(&["addr", "add", &cidr, "dev", "eth0"]);
            self::ip(&["link", "set", "eth0", "up"]);
        });
        rt.block_on(net::attach_vm_port(h, &port, bridge, mac))
            .expect("attach veth as a VM port");
        Peer { ns, port, mac, ip }
    }

    /// Tries a TCP connection from inside the peer's namespace.
    fn connects(&self, to: SocketAddr, timeout: Duration) -> bool {
        self.ns
            .run(move || TcpStream::connect_timeout(&to, timeout).is_ok())
    }

    fn ip(&self, args: &'static [&'static str]) {
        self.ns.run(move || {
            self::ip(args);
        });
    }
}

const NO: Duration = Duration::from_millis(1500);

#[test]
fn isolated_ports_and_firewall_with_real_traffic() {
    if !common::privileged("net::isolated_ports_and_firewall_with_real_traffic") {
        return;
    }
    common::in_netns(|| {
        let rt = runtime();
        let h = netlink(&rt);
        let s = subnet();
        let gw = s.gateway();
        let br = rt
            .block_on(net::ensure_bridge(&h, BRIDGE, gw, s.prefix()))
            .expect("bridge");

        // Listeners on the host side (the gateway) and in VM b.
        let allowed = TcpListener::bind((gw, 8053)).expect("listen on gateway");
        let closed = TcpListener::bind((gw, 8054)).expect("listen on gateway");
        let (to_allowed, to_closed) = (
            allowed.local_addr().expect("addr"),
            closed.local_addr().expect("addr"),
        );

        let a = Peer::new(&rt, &h, "vm-a", Ipv4Addr::new(10, 88, 0, 2), br);
        let b = Peer::new(&rt, &h, "vm-b", Ipv4Addr::new(10, 88, 0, 3), br);
        let b_listener =
            b.ns.run(|| TcpListener::bind("10.88.0.3:8080").expect("listen in b"));
        let to_b: SocketAddr = b_listener.local_addr().expect("addr");
        let shown = ip(&["-d", "link", "show", "dev", &a.port]);
        assert!(shown.contains("isolated on"), "{shown}");

        // Without the firewall: both reach the gateway; isolation alone keeps a from b.
        for p in [&a, &b] {
            common::poll("peer to reach the gateway", Duration::from_secs(10), || {
                p.connects(to_allowed, Duration::from_secs(1)).then_some(())
            });
            assert!(
                p.connects(to_closed, NO),
                "no firewall yet: every host port is open"
            );
        }
        assert!(
            !a.connects(to_b, NO),
            "isolated ports must not reach each other"
        );

        // Control: without isolation a does reach b, so the check above is meaningful.
        ip(&[
            "link",
            "set",
            "dev",
            &a.port,
            "type",
            "bridge_slave",
            "isolated",
            "off",
        ]);
        ip(&[
            "link",
            "set",
            "dev",
            &b.port,
            "type",
            "bridge_slave",
            "isolated",
            "off",
        ]);
        common::poll(
            "a to reach b without isolation",
            Duration::from_secs(10),
            || a.connects(to_b, Duration::from_secs(1)).then_some(()),
        );
        for p in [&a, &b] {
            rt.block_on(net::attach_vm_port(&h, &p.port, br, p.mac))
                .expect("re-isolate");
        }
        assert!(!a.connects(to_b, NO), "isolation restored");

        // Port isolation is L2 only: with forwarding on (as on many hosts) and routes via the
        // gateway, the host would route a's packets back out of the bridge to b.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");
        for conf in ["all", BRIDGE] {
            // Redirects would tell a to go direct, which isolation blocks; keep routing via the host.
            std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{conf}/send_redirects"),
                "0",
            )
            .expect("send_redirects");
        }
        a.ip(&["route", "add", "10.88.0.3/32", "via", "10.88.0.1"]);
        b.ip(&["route", "add", "10.88.0.2/32", "via", "10.88.0.1"]);
        common::poll(
            "a to reach b through the host's routing",
            Duration::from_secs(10),
            || a.connects(to_b, Duration::from_secs(1)).then_some(()),
        );

        // With the firewall: only the listed gateway port, only from the right MAC and IP.
        let plan = plan_for(s, &[&a, &b], to_allowed.port());
        rt.block_on(net::apply_firewall(&plan))
            .expect("apply firewall");
        rt.block_on(net::apply_firewall(&plan))
            .expect("re-apply firewall");
        assert!(a.connects(to_allowed, Duration::from_secs(3)));
        assert!(b.connects(to_allowed, Duration::from_secs(3)));
        assert!(
            !a.connects(to_closed, NO),
            "unlisted host port must be closed to VMs"
        );
        assert!(
            !a.connects(to_b, NO),
            "routing through the host must not bypass isolation"
        );

        // IP spoofing: a sends from an address that is not its own.
        a.ip(&["addr", "add", "10.88.0.50/32", "dev", "eth0"]);
        a.ip(&[
            "route",
            "add",
            "10.88.0.1/32",
            "dev",
            "eth0",
            "src",
            "10.88.0.50",
        ]);
        assert!(
            !a.connects(to_allowed, NO),
            "spoofed source IP must be dropped"
        );
        a.ip(&["route", "del", "10.88.0.1/32"]);
        assert!(
            a.connects(to_allowed, Duration::from_secs(3)),
            "own address works again"
        );

        // MAC spoofing: a sends with a MAC that is not its own.
        let mac = a.mac.to_string();
        a.ip(&["link", "set", "eth0", "address", "52:54:00:99:99:99"]);
        assert!(!a.connects(to_allowed, NO), "spoofed MAC must be dropped");
        a.ns.run(move || ip(&["link", "set", "eth0", "address", &mac]));
        common::poll(
            "a to reach the gateway with its own MAC",
            Duration::from_secs(10),
            || a.connects(to_allowed, Duration::from_secs(1)).then_some(()),
        );

        // Byte counters for the admin view move with traffic.
        let links = rt.block_on(net::list_links(&h)).expect("list links");
        let la = links.iter().find(|l| l.name == a.port).expect("a listed");
        assert!(la.rx_bytes > 0 && la.tx_bytes > 0, "{la:?}");
        assert_eq!((la.master, la.isolated), (Some(br), true), "{la:?}");

        rt.block_on(net::remove_firewall())
            .expect("remove firewall");
        rt.block_on(net::remove_firewall())
            .expect("remove firewall again");
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        assert!(!String::from_utf8_lossy(&tables.stdout).contains("roost"));

        // Deleting one end of a veth removes the pair; the namespaces end on drop.
        for p in [&a, &b] {
            assert!(rt
                .block_on(net::delete_link(&h, &p.port))
                .expect("delete veth"));
        }
        drop((a, b, b_listener));
        common::poll("veths to vanish", Duration::from_secs(5), || {
            let links = rt.block_on(net::list_links(&h)).expect("list links");
            (!links.iter().any(|l| net::is_roost_tap(&l.name))).then_some(())
        });
        assert!(rt
            .block_on(net::delete_link(&h, BRIDGE))
            .expect("delete bridge"));
    });
}

/// Sends raw Ethernet frames out of `ifname` (from the calling thread's namespace).
fn send_frames(ifname: &str, frames: &[Vec<u8>]) {
    let ifindex = nix::net::if_::if_nametoindex(ifname).expect("ifindex");
    // SAFETY: plain syscalls on a socket this function owns; the address is a zeroed,
    // then filled sockaddr_ll of the size passed.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for f in frames {
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
            let n = libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                n,
                f.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        libc::close(fd);
    }
}

fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// Frames from `src` to every link-local group address 01:80:c2:00:00:00-0f, as LLDP and
/// as IPv4 (the same trick, whatever the ethertype).
fn link_local_frames(src: [u8; 6], ip_src: Ipv4Addr) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for last in 0u8..16 {
        let dst = [0x01, 0x80, 0xc2, 0x00, 0x00, last];
        frames.push(ether(dst, src, 0x88cc, &[0u8; 46]));
        let mut ip = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&ip_src.octets());
        ip.extend_from_slice(&[10, 88, 0, 1]);
        frames.push(ether(dst, src, 0x0800, &ip));
    }
    frames
}

/// An ARP reply "`ip` is at `mac`" sent from `mac`, to everyone.
fn arp_claim(mac: [u8; 6], ip: Ipv4Addr, to: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&ip.octets());
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&to.octets());
    ether([0xff; 6], mac, 0x0806, &arp)
}

/// The bridge ports on which the FDB has `mac`.
fn fdb_ports(mac: net::MacAddr) -> Vec<String> {
    let mac = mac.to_string();
    bridge(&["fdb", "show", "br", BRIDGE])
        .lines()
        .filter(|l| l.starts_with(&mac))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dev").nth(1))
        .map(str::to_owned)
        .collect()
}

/// The MAC the host's neighbour table has for `ip`, if any.
fn neighbour(ip: Ipv4Addr) -> Option<String> {
    let out = Command::new("ip")
        .args(["neigh", "show", &ip.to_string(), "dev", BRIDGE])
        .output()
        .expect("ip neigh");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_owned)
}

/// A guest owns its tap: it may send any frame. Link-local group frames (which the
/// bridge hands to its local stack past every bridge filter) with a neighbour's MAC must
/// not move the neighbour's FDB entry to the attacker's port, and ARP claims of a
/// neighbour's address must not reach the host. The control half takes the defences away
/// and shows that both attacks work on this kernel.
#[test]
fn a_guest_cannot_take_a_neighbours_place() {
    if !common::privileged("net::a_guest_cannot_take_a_neighbours_place") {
        return;
    }
    common::in_netns(|| {
        let rt = runtime();
        let h = netlink(&rt);
        let s = subnet();
        let br = rt
            .block_on(net::ensure_bridge(&h, BRIDGE, s.gateway(), s.prefix()))
            .expect("bridge");
        let gw_listener = TcpListener::bind((s.gateway(), 8053)).expect("listen on gateway");
        let to_gw = gw_listener.local_addr().expect("addr");
        let a = Peer::new(&rt, &h, "vm-a", Ipv4Addr::new(10, 88, 0, 2), br);
        let b = Peer::new(&rt, &h, "vm-b", Ipv4Addr::new(10, 88, 0, 3), br);
        let b_listener =
            b.ns.run(|| TcpListener::bind("10.88.0.3:8080").expect("listen in b"));
        let to_b = b_listener.local_addr().expect("addr");
        let plan = plan_for(s, &[&a, &b], to_gw.port());
        rt.block_on(net::apply_firewall(&plan)).expect("firewall");
        common::poll("the host to reach b", Duration::from_secs(10), || {
            TcpStream::connect_timeout(&to_b, Duration::from_secs(1)).ok()
        });
        assert_eq!(neighbour(b.ip).as_deref(), Some(b.mac.to_string().as_str()));

        // The attack, with the defences on: a second of frames from a with b's MAC.
        let (a_port, b_mac, b_ip, a_mac) = (a.port.clone(), b.mac.octets(), b.ip, a.mac.octets());
        let attack = move || {
            let frames = link_local_frames(b_mac, b_ip);
            let claim = arp_claim(a_mac, b_ip, Ipv4Addr::new(10, 88, 0, 1));
            for _ in 0..100 {
                send_frames("eth0", &frames);
                send_frames("eth0", std::slice::from_ref(&claim));
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        a.ns.run(attack);
        assert_eq!(
            fdb_ports(b.mac),
            vec![b.port.clone()],
            "b's MAC stays on b's port"
        );
        assert_eq!(
            neighbour(b.ip).as_deref(),
            Some(b.mac.to_string().as_str()),
            "the host still sends b's traffic to b"
        );
        let shown = ip(&["-d", "link", "show", "dev", BRIDGE]);
        assert!(shown.contains("no_linklocal_learn 1"), "{shown}");
        TcpStream::connect_timeout(&to_b, Duration::from_secs(2)).expect("host reaches b");

        // IPv6: the host listens on every address, the bridge has a link-local one; the
        // guest's own link-local address is up. Nothing of it gets through.
        let v6 = std::net::TcpListener::bind("[::]:8055").expect("listen on [::]");
        let bridge_ll: std::net::Ipv6Addr = common::poll(
            "the bridge's IPv6 link-local address",
            Duration::from_secs(10),
            || {
                ip(&["-6", "-o", "addr", "show", "dev", BRIDGE, "scope", "link"])
                    .split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)
                    .and_then(|a| a.split('/').next()?.parse().ok())
            },
        );
        let v6_connect = move || {
            let eth0 = nix::net::if_::if_nametoindex("eth0").expect("eth0");
            let to = std::net::SocketAddrV6::new(bridge_ll, 8055, 0, eth0);
            TcpStream::connect_timeout(&to.into(), Duration::from_secs(1)).is_ok()
        };
        assert!(!a.ns.run(v6_connect), "a guest reaches the host over IPv6");

        // Control: today's main had none of this (learning ports, no static entries, no
        // ingress filter, the bridge learning from link-local frames). Then the attack works.
        rt.block_on(net::remove_firewall())
            .expect("remove firewall");
        for p in [&a, &b] {
            bridge(&["fdb", "del", &p.mac.to_string(), "dev", &p.port, "master"]);
            ip(&[
                "link",
                "set",
                "dev",
                &p.port,
                "type",
                "bridge_slave",
                "learning",
                "on",
                "flood",
                "on",
            ]);
        }
        ip(&[
            "link",
            "set",
            "dev",
            BRIDGE,
            "type",
            "bridge",
            "no_linklocal_learn",
            "0",
        ]);
        common::poll(
            "b's MAC to be learnt on b's port",
            Duration::from_secs(10),
            || {
                b.connects(to_gw, Duration::from_secs(1));
                (fdb_ports(b.mac) == vec![b.port.clone()]).then_some(())
            },
        );
        common::poll(
            "control: IPv6 to the host without the firewall",
            Duration::from_secs(10),
            || a.ns.run(v6_connect).then_some(()),
        );
        a.ns.run(attack);
        assert!(
            fdb_ports(b.mac).contains(&a_port),
            "control: without the defences a steals b's FDB entry ({:?})",
            fdb_ports(b.mac)
        );
        assert_eq!(
            neighbour(b.ip).as_deref(),
            Some(a.mac.to_string().as_str()),
            "control: without the defences a's ARP claim poisons the host's neighbour table"
        );
        drop((a, b, b_listener, gw_listener, v6));
        assert!(rt
            .block_on(net::delete_link(&h, BRIDGE))
            .expect("delete bridge"));
    });
}

/// The integration the daemon needs: open the tap, hand the fd to QEMU as `fd=3`, close
/// ours. The tap then lives exactly as long as QEMU (a daemon restart keeps it).
#[test]
fn qemu_holds_the_tap_fd_and_the_tap_dies_with_it() {
    if !common::privileged("net::qemu_holds_the_tap_fd_and_the_tap_dies_with_it") {
        return;
    }
    common::in_netns(|| {
        use std::io::{BufRead, BufReader};
        use std::os::unix::net::UnixStream;
        use std::os::unix::process::CommandExt;

        let rt = runtime();
        let h = netlink(&rt);
        let s = subnet();
        let br = rt
            .block_on(net::ensure_bridge(&h, BRIDGE, s.gateway(), s.prefix()))
            .expect("bridge");
        let name = net::tap_name(b"qemu-vm");
        let mac = net::mac_for(b"qemu-vm");
        let fd = net::open_tap(&name).expect("open tap");
        rt.block_on(net::attach_vm_port(&h, &name, br, mac))
            .expect("attach");

        let dir = tempfile::tempdir().expect("tempdir");
        let qmp = dir.path().join("qmp.sock");
        let raw = fd.as_raw_fd();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-S",
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .args(["-netdev", "tap,id=n0,fd=3,vhost=off", "-device"])
        .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"))
        .stdout(std::process::Stdio::null());
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself keeps FD_CLOEXEC, so clear it explicitly in that case.
                let r = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut qemu = Reaped(cmd.spawn().expect("spawn qemu"));
        // The daemon closes its copy right after spawning.
        drop(fd);

        // QEMU sends the QMP greeting from its main loop, i.e. after the netdev is set up.
        let greeting = common::poll("QMP greeting", Duration::from_secs(20), || {
            if let Ok(Some(status)) = qemu.0.try_wait() {
                panic!("qemu exited early: {status}");
            }
            let stream = UnixStream::connect(&qmp).ok()?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).ok()?;
            Some(line)
        });
        assert!(greeting.contains("QMP"), "{greeting}");

        let tap = rt
            .block_on(net::find_link(&h, &name))
            .expect("find")
            .expect("tap lives while QEMU holds the fd");
        assert!(tap.isolated && tap.master == Some(br), "{tap:?}");
        let shown = ip(&["-d", "link", "show", "dev", &name]);
        assert!(shown.contains("vnet_hdr"), "{shown}");

        drop(qemu);
        common::poll("tap to die with QEMU", Duration::from_secs(5), || {
            rt.block_on(net::find_link(&h, &name))
                .expect("find")
                .is_none()
                .then_some(())
        });
        assert!(rt
            .block_on(net::delete_link(&h, BRIDGE))
            .expect("delete bridge"));
    });
}
