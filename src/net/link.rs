//! Links over netlink: enslave a port to the bridge with isolation, delete, list.
//!
//! These work for any link name (a tap, or a veth in tests). Listing returns plain
//! [`LinkInfo`] values so the orphan reaper and the admin byte counters never see netlink
//! types.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    InfoBridgePort, InfoPortData, InfoPortKind, LinkAttribute, LinkFlag, LinkInfo as NlLinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourFlag, NeighbourState};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::Handle;
use tracing::info;

use super::ident::{is_roost_tap, MacAddr};
use super::{is_errno, valid_ifname, NetError};

/// What roost needs to know about one network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub ifindex: u32,
    /// The ifindex of the bridge (or bond) this link is a port of.
    pub master: Option<u32>,
    /// The bridge port flag `isolated` (only meaningful when `master` is a bridge).
    pub isolated: bool,
    /// The bridge port flag `learning`.
    pub learning: bool,
    /// `IFLA_INFO_KIND`: "bridge", "tun", "veth", ... (`None` for e.g. `lo`).
    pub kind: Option<String>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The link's own hardware address, when it is an Ethernet one.
    pub mac: Option<MacAddr>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl LinkInfo {
    /// Extracts the fields roost uses from a netlink link message.
    pub(crate) fn from_message(msg: &LinkMessage) -> Self {
        let mut info = LinkInfo {
            name: String::new(),
            ifindex: msg.header.index,
            master: None,
            isolated: false,
            learning: false,
            kind: None,
            up: msg.header.flags.contains(&LinkFlag::Up),
            mac: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Address(a) => {
                    info.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr)
                }
                LinkAttribute::Controller(m) if *m != 0 => info.master = Some(*m),
                LinkAttribute::Stats64(s) => {
                    info.rx_bytes = s.rx_bytes;
                    info.tx_bytes = s.tx_bytes;
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            NlLinkInfo::Kind(k) => info.kind = Some(k.to_string()),
                            NlLinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                info.isolated = port.contains(&InfoBridgePort::Isolated(true));
                                info.learning = port.contains(&InfoBridgePort::Learning(true));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// Looks a link up by name; `Ok(None)` when there is none.
pub async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkInfo>, NetError> {
    if !valid_ifname(name) {
        return Err(NetError::InvalidName(name.to_owned()));
    }
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(LinkInfo::from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every link in the namespace.
pub async fn list_links(handle: &Handle) -> Result<Vec<LinkInfo>, NetError> {
    let msgs: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    Ok(msgs.iter().map(LinkInfo::from_message).collect())
}

/// Makes `name` an up port of the bridge `bridge_ifindex` that carries exactly one VM,
/// whose NIC has the address `vm_mac`. Idempotent.
///
/// - Isolated (`IFLA_BRPORT_ISOLATED`): isolated ports exchange frames only with
///   non-isolated ports such as the bridge itself, so VMs reach the gateway but not one
///   another.
/// - No learning, no unknown-unicast flooding, and a static FDB entry `vm_mac → port`: the
///   bridge never learns an address from what a guest sends (link-local group frames
///   bypass every bridge filter yet were learnt, letting a guest steal a neighbour's MAC),
///   and frames for one VM never reach another VM's port.
/// - No IPv6 on the port itself (`disable_ipv6`, `accept_ra 0`) and strict reverse-path
///   filtering: the tap's own IP stack, which sees the link-local frames, takes nothing
///   from the guest (no router advertisements, no addresses).
pub async fn attach_vm_port(
    handle: &Handle,
    name: &str,
    bridge_ifindex: u32,
    vm_mac: MacAddr,
) -> Result<(), NetError> {
    let link = find_link(handle, name)
        .await?
        .ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
    // Before the link goes up, so it never gets an IPv6 link-local address.
    harden_sysctls(name)?;
    handle
        .link()
        .set(link.ifindex)
        .controller(bridge_ifindex)
        .up()
        .execute()
        .await?;
    // Port options need the link to be a port already: the kernel finds the bridge's
    // `slave_changelink` through the current master. rtnetlink 0.14 has no builder for
    // this, so the RTM_NEWLINK message (what `ip link set X type bridge_slave isolated on
    // learning off flood off` sends) is built from netlink-packet-route types.
    let mut h = handle.clone();
    let mut response = h.request(port_options_request(link.ifindex))?;
    while let Some(msg) = futures::StreamExt::next(&mut response).await {
        if let netlink_packet_core::NetlinkPayload::Error(e) = msg.payload {
            return Err(rtnetlink::Error::NetlinkError(e).into());
        }
    }
    // `bridge fdb replace VM_MAC dev PORT master static`: NUD_NOARP is "static" (never
    // aged out, not local to the bridge); NUD_PERMANENT would make it the host's own.
    handle
        .neighbours()
        .add_bridge(link.ifindex, &vm_mac.octets())
        .flags(vec![NeighbourFlag::Controller])
        .state(NeighbourState::Noarp)
        .replace()
        .execute()
        .await?;
    info!(link = name, bridge_ifindex, %vm_mac, "port attached: isolated, no learning, static fdb");
    Ok(())
}

/// The per-interface sysctls of a VM port (in the caller's network namespace).
fn harden_sysctls(name: &str) -> Result<(), NetError> {
    for (path, value) in port_sysctls(name) {
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // A host booted without IPv6 has no ipv6 tree: nothing to disable there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.contains("/ipv6/") => {}
            Err(source) => return Err(NetError::Sysctl { path, source }),
        }
    }
    Ok(())
}

/// What [`harden_sysctls`] writes.
fn port_sysctls(name: &str) -> [(String, &'static str); 3] {
    [
        (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv6/conf/{name}/accept_ra"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "1"),
    ]
}

/// The RTM_NEWLINK request setting the VM port options on the bridge port `ifindex`.
fn port_options_request(ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        NlLinkInfo::PortKind(InfoPortKind::Bridge),
        NlLinkInfo::PortData(InfoPortData::BridgePort(vec![
            InfoBridgePort::Isolated(true),
            InfoBridgePort::Learning(false),
            InfoBridgePort::UnicastFlood(false),
        ])),
    ]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    // No NLM_F_CREATE: this changes an existing link and must never create one.
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    req
}

/// Deletes the link `name`. Returns whether it existed; a missing link is not an error.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, NetError> {
    let Some(link) = find_link(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.ifindex).execute().await {
        Ok(()) => {
            info!(link = name, "link deleted");
            Ok(true)
        }
        // Gone between the lookup and the delete (e.g. QEMU exited and took its tap along).
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The roost taps in `links` that no hosting claims: what the orphan reaper should delete.
///
/// Only names [`is_roost_tap`] recognises are candidates, so links roost did not create
/// are never touched, whatever `claimed` holds.
pub fn orphan_taps<'a>(
    links: &'a [LinkInfo],
    claimed: &BTreeSet<String>,
) -> impl Iterator<Item = &'a LinkInfo> + 'a {
    let claimed = claimed.clone();
    links
        .iter()
        .filter(move |l| is_roost_tap(&l.name) && !claimed.contains(&l.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::InfoKind;

    #[test]
    fn link_info_from_message() {
        // Stats64 is non-exhaustive upstream; byte counters are checked by tests/net.rs.
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags.push(LinkFlag::Up);
        msg.attributes
            .push(LinkAttribute::IfName("rtabcdefghijklm".into()));
        msg.attributes.push(LinkAttribute::Controller(3));
        msg.attributes
            .push(LinkAttribute::Address(vec![0x52, 0x54, 0, 0, 0, 9]));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Tun),
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![
                InfoBridgePort::Learning(true),
                InfoBridgePort::Isolated(true),
            ])),
        ]));
        let info = LinkInfo::from_message(&msg);
        assert_eq!(
            info,
            LinkInfo {
                name: "rtabcdefghijklm".into(),
                ifindex: 7,
                master: Some(3),
                isolated: true,
                learning: true,
                kind: Some("tun".into()),
                up: true,
                mac: Some(MacAddr([0x52, 0x54, 0, 0, 0, 9])),
                rx_bytes: 0,
                tx_bytes: 0,
            }
        );
        let bare = LinkInfo::from_message(&LinkMessage::default());
        assert_eq!((bare.master, bare.isolated, bare.up), (None, false, false));
    }

    #[test]
    fn port_options_request_sets_only_the_vm_port_flags() {
        let req = port_options_request(9);
        assert_eq!(req.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) =
            &req.payload
        else {
            panic!("not a NewLink: {req:?}");
        };
        assert_eq!(m.header.index, 9);
        assert_eq!(
            m.attributes,
            vec![LinkAttribute::LinkInfo(vec![
                NlLinkInfo::PortKind(InfoPortKind::Bridge),
                NlLinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::Isolated(true),
                    InfoBridgePort::Learning(false),
                    InfoBridgePort::UnicastFlood(false),
                ])),
            ])]
        );
    }

    #[test]
    fn port_sysctls_are_per_interface() {
        let s = port_sysctls("rtabc");
        assert_eq!(
            s[0],
            ("/proc/sys/net/ipv6/conf/rtabc/disable_ipv6".into(), "1")
        );
        assert_eq!(
            s[1],
            ("/proc/sys/net/ipv6/conf/rtabc/accept_ra".into(), "0")
        );
        assert_eq!(
            s[2],
            ("/proc/sys/net/ipv4/conf/rtabc/rp_filter".into(), "1")
        );
    }

    #[test]
    fn orphans_are_unclaimed_roost_taps_only() {
        let link = |name: &str| LinkInfo {
            name: name.into(),
            ifindex: 1,
            master: None,
            isolated: false,
            learning: false,
            kind: None,
            up: true,
            mac: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        let (mine, gone) = (crate::net::tap_name(b"a"), crate::net::tap_name(b"b"));
        let links = [
            link("lo"),
            link("roost0"),
            link("tap0"),
            link(&mine),
            link(&gone),
        ];
        let claimed: BTreeSet<String> = [mine.clone(), "tap0".to_owned()].into();
        let orphans: Vec<&str> = orphan_taps(&links, &claimed)
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(orphans, vec![gone.as_str()]);
    }
}
