//! The VM bridge: desired state as a [`BridgePlan`] (pure), applied over netlink.
//!
//! The bridge carries the gateway address; VMs' taps are isolated ports of it. Ensuring is
//! idempotent: an existing bridge is adopted, a missing address is added, a down bridge is
//! brought up. Addresses roost did not put there are left alone.
//!
//! The bridge gets a fixed MAC derived from its name. Without one, Linux gives a bridge the
//! lowest MAC among its ports, so it would change as taps come and go and leave every VM
//! with a stale ARP entry for its gateway.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use rtnetlink::Handle;
use tracing::info;

use super::ident::{mac_for, MacAddr};
use super::link::{find_link, LinkInfo};
use super::{is_errno, valid_ifname, NetError};

/// The bridge as it is now, as far as the plan cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedBridge {
    pub ifindex: u32,
    /// `IFLA_INFO_KIND` of the link with the bridge's name.
    pub kind: Option<String>,
    pub up: bool,
    pub mac: Option<MacAddr>,
    /// IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// One change to make the bridge match the desired state, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BridgeStep {
    /// Create the bridge with this MAC.
    Create {
        mac: MacAddr,
    },
    /// Pin the MAC of an adopted bridge.
    SetMac {
        mac: MacAddr,
    },
    AddAddress {
        address: Ipv4Addr,
        prefix: u8,
    },
    SetUp,
}

/// The steps that take the observed bridge to the desired one; empty when nothing to do.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BridgePlan {
    pub steps: Vec<BridgeStep>,
}

impl BridgePlan {
    /// Plans bridge `name` with `gateway/prefix` given what exists now.
    pub fn new(
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        observed: Option<&ObservedBridge>,
    ) -> Result<Self, NetError> {
        let add = BridgeStep::AddAddress {
            address: gateway,
            prefix,
        };
        let mac = bridge_mac(name);
        let steps = match observed {
            None => vec![BridgeStep::Create { mac }, add, BridgeStep::SetUp],
            Some(b) if b.kind.as_deref() != Some("bridge") => {
                return Err(NetError::NotABridge(name.to_owned()))
            }
            Some(b) => {
                let mut steps = Vec::new();
                if b.mac != Some(mac) {
                    steps.push(BridgeStep::SetMac { mac });
                }
                if !b.addresses.contains(&(gateway, prefix)) {
                    steps.push(add);
                }
                if !b.up {
                    steps.push(BridgeStep::SetUp);
                }
                steps
            }
        };
        Ok(BridgePlan { steps })
    }
}

/// The bridge's fixed MAC: locally administered, derived from its name.
pub fn bridge_mac(name: &str) -> MacAddr {
    mac_for(format!("bridge:{name}").as_bytes())
}

/// Reads the bridge's current state; `None` when no link has that name.
pub async fn observe_bridge(
    handle: &Handle,
    name: &str,
) -> Result<Option<ObservedBridge>, NetError> {
    let Some(LinkInfo {
        ifindex,
        kind,
        up,
        mac,
        ..
    }) = find_link(handle, name).await?
    else {
        return Ok(None);
    };
    let mut addresses = Vec::new();
    let mut msgs = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute();
    while let Some(msg) = msgs.try_next().await? {
        for attr in &msg.attributes {
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS equals it on broadcast links.
            if let AddressAttribute::Local(IpAddr::V4(a)) = attr {
                addresses.push((*a, msg.header.prefix_len));
            }
        }
    }
    Ok(Some(ObservedBridge {
        ifindex,
        kind,
        up,
        mac,
        addresses,
    }))
}

/// Creates or adopts the bridge `name` with the gateway address and brings it up.
/// Returns its ifindex. Safe to call at every start-up.
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32, NetError> {
    if !valid_ifname(name) {
        return Err(NetError::InvalidName(name.to_owned()));
    }
    let observed = observe_bridge(handle, name).await?;
    let plan = BridgePlan::new(name, gateway, prefix, observed.as_ref())?;
    let mut ifindex = observed.map(|b| b.ifindex);
    for step in &plan.steps {
        match step {
            BridgeStep::Create { mac } => {
                let add = handle.link().add().bridge(name.to_owned());
                match add.address(mac.octets().to_vec()).execute().await {
                    Ok(()) => info!(bridge = name, "bridge created"),
                    // Created concurrently by someone else: adopt it.
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let link = find_link(handle, name)
                    .await?
                    .ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
                ifindex = Some(link.ifindex);
            }
            BridgeStep::SetMac { mac } => {
                let index = ifindex.ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
                let set = handle.link().set(index);
                set.address(mac.octets().to_vec()).execute().await?;
                info!(bridge = name, %mac, "bridge MAC pinned");
            }
            BridgeStep::AddAddress { address, prefix } => {
                let index = ifindex.ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
                match handle
                    .address()
                    .add(index, IpAddr::V4(*address), *prefix)
                    .execute()
                    .await
                {
                    Ok(()) => info!(bridge = name, %address, prefix, "gateway address added"),
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            BridgeStep::SetUp => {
                let index = ifindex.ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
                handle.link().set(index).up().execute().await?;
                info!(bridge = name, "bridge up");
            }
        }
    }
    let ifindex = ifindex.ok_or_else(|| NetError::LinkNotFound(name.to_owned()))?;
    no_linklocal_learn(handle, ifindex).await?;
    Ok(ifindex)
}

/// `ip link set BRIDGE type bridge no_linklocal_learn 1`: frames to the link-local group
/// addresses (01:80:c2:00:00:0X) never reach the bridge's netfilter hooks, so the bridge
/// must not learn source addresses from them. Set at every start (idempotent).
async fn no_linklocal_learn(handle: &Handle, ifindex: u32) -> Result<(), NetError> {
    let mut h = handle.clone();
    let mut response = h.request(no_linklocal_learn_request(ifindex))?;
    while let Some(msg) = futures::StreamExt::next(&mut response).await {
        if let netlink_packet_core::NetlinkPayload::Error(e) = msg.payload {
            return Err(rtnetlink::Error::NetlinkError(e).into());
        }
    }
    Ok(())
}

/// `BR_BOOLOPT_NO_LL_LEARN` is bit 0 of `struct br_boolopt_multi { u32 optval, optmask }`.
const BR_BOOLOPT_NO_LL_LEARN: u32 = 1 << 0;

fn no_linklocal_learn_request(
    ifindex: u32,
) -> netlink_packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage> {
    use netlink_packet_route::link::{InfoBridge, InfoData, InfoKind, LinkInfo as NlLinkInfo};
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&BR_BOOLOPT_NO_LL_LEARN.to_ne_bytes());
    bytes[4..].copy_from_slice(&BR_BOOLOPT_NO_LL_LEARN.to_ne_bytes());
    let mut msg = netlink_packet_route::link::LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes
        .push(netlink_packet_route::link::LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Bridge),
            NlLinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MultiBoolOpt(
                u64::from_ne_bytes(bytes),
            )])),
        ]));
    let mut req = netlink_packet_core::NetlinkMessage::from(
        netlink_packet_route::RouteNetlinkMessage::NewLink(msg),
    );
    // Changes the existing bridge; never creates one.
    req.header.flags = netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);

    fn bridge(up: bool, addresses: &[(Ipv4Addr, u8)]) -> ObservedBridge {
        ObservedBridge {
            ifindex: 4,
            kind: Some("bridge".into()),
            up,
            mac: Some(bridge_mac("roost0")),
            addresses: addresses.to_vec(),
        }
    }

    #[test]
    fn plans() {
        let add = BridgeStep::AddAddress {
            address: GW,
            prefix: 24,
        };
        let other = (Ipv4Addr::new(192, 0, 2, 1), 24);
        let mac = bridge_mac("roost0");
        let mut drifted = bridge(true, &[(GW, 24)]);
        drifted.mac = Some(MacAddr([0x02, 0, 0, 0, 0, 1]));
        let cases: Vec<(&str, Option<ObservedBridge>, Vec<BridgeStep>)> = vec![
            (
                "missing",
                None,
                vec![BridgeStep::Create { mac }, add.clone(), BridgeStep::SetUp],
            ),
            ("complete", Some(bridge(true, &[(GW, 24)])), vec![]),
            (
                "down",
                Some(bridge(false, &[(GW, 24)])),
                vec![BridgeStep::SetUp],
            ),
            ("no address", Some(bridge(true, &[])), vec![add.clone()]),
            (
                "foreign address kept",
                Some(bridge(true, &[other, (GW, 24)])),
                vec![],
            ),
            (
                "wrong prefix",
                Some(bridge(true, &[(GW, 16)])),
                vec![add.clone()],
            ),
            (
                "bare",
                Some(bridge(false, &[other])),
                vec![add.clone(), BridgeStep::SetUp],
            ),
        ];
        for (what, observed, steps) in cases {
            let plan = BridgePlan::new("roost0", GW, 24, observed.as_ref()).expect(what);
            assert_eq!(plan.steps, steps, "{what}");
        }
    }

    #[test]
    fn refuses_to_adopt_a_non_bridge() {
        let mut b = bridge(true, &[(GW, 24)]);
        b.kind = Some("veth".into());
        let err = BridgePlan::new("roost0", GW, 24, Some(&b)).expect_err("not a bridge");
        assert_eq!(err.to_string(), "link roost0 exists and is not a bridge");
        b.kind = None;
        assert!(BridgePlan::new("roost0", GW, 24, Some(&b)).is_err());
    }

    #[test]
    fn bridge_mac_is_stable_local_unicast() {
        let m = bridge_mac("roost0");
        assert_eq!(m, bridge_mac("roost0"));
        assert_ne!(m, bridge_mac("roost1"));
        assert!(m.is_local() && m.is_unicast());
    }
}
