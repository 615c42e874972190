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

/// Makes `name` an isolated, up port of the bridge `bridge_ifindex`.
///
/// Isolated ports (`IFLA_BRPORT_ISOLATED`, `bridge link set dev X isolated on`) cannot
/// exchange frames with each other, only with non-isolated ports such as the bridge itself:
/// VMs reach the gateway but not one another. Idempotent.
pub async fn attach_isolated(
    handle: &Handle,
    name: &str,
    bridge_ifindex: u32,
) -> Result<(), NetError> {
    let link = find_link(handle, name)
        .await?
        .ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
    handle
        .link()
        .set(link.ifindex)
        .controller(bridge_ifindex)
        .up()
        .execute()
        .await?;
    // Port options need the link to be a port already: the kernel finds the bridge's
    // `slave_changelink` through the current master. rtnetlink 0.14 has no builder for
    // this, so the RTM_NEWLINK message (what `ip link set X type bridge_slave isolated on`
    // sends) is built from netlink-packet-route types.
    let mut handle = handle.clone();
    let mut response = handle.request(isolate_request(link.ifindex))?;
    while let Some(msg) = futures::StreamExt::next(&mut response).await {
        if let netlink_packet_core::NetlinkPayload::Error(e) = msg.payload {
            return Err(rtnetlink::Error::NetlinkError(e).into());
        }
    }
    info!(link = name, bridge_ifindex, "port attached, isolated");
    Ok(())
}

/// The RTM_NEWLINK request setting `isolated on` for the bridge port `ifindex`.
fn isolate_request(ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        NlLinkInfo::PortKind(InfoPortKind::Bridge),
        NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
            true,
        )])),
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
    fn isolate_request_sets_only_the_port_flag() {
        let req = isolate_request(9);
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
                NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                    true
                )])),
            ])]
        );
    }

    #[test]
    fn orphans_are_unclaimed_roost_taps_only() {
        let link = |name: &str| LinkInfo {
            name: name.into(),
            ifindex: 1,
            master: None,
            isolated: false,
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
