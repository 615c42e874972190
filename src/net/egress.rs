//! The host side of guests' traffic beyond the bridge, over netlink and `/proc/sys`:
//! finding the uplink, turning on IPv4 forwarding for the bridge and the uplink only, and
//! the policy route that hands the SSH forwarder's transparent connections their replies.
//!
//! The rules themselves (NAT, limits, marks) are in [`super::firewall`]. Nothing here
//! turns on forwarding for any other interface (`net.ipv4.ip_forward` would: it sets every
//! interface's `forwarding`), so the host routes nothing for anyone but its VMs.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use super::link::find_link;
use super::{valid_ifname, NetError};

/// The routing table that holds the one route of transparent replies (`local 0.0.0.0/0
/// dev lo`); free in Debian's `rt_tables`.
pub const CLIENT_TABLE: u32 = 0x526f;
/// The packet mark of the SSH forwarder's transparent sockets and of their replies.
pub const CLIENT_MARK: u32 = 0x526f_0001;
/// The priority of the policy rule, before `main` (32766).
const CLIENT_RULE_PRIORITY: u32 = 10_526;

/// The interface of the main table's default IPv4 route, if there is one.
pub async fn default_uplink(handle: &Handle) -> Result<Option<String>, NetError> {
    let routes = ipv4_routes(handle).await?;
    let Some(oif) = default_route_oif(&routes) else {
        return Ok(None);
    };
    let links = super::list_links(handle).await?;
    Ok(links.into_iter().find(|l| l.ifindex == oif).map(|l| l.name))
}

/// The output interface of the first unicast default route of the main table (pure).
fn default_route_oif(routes: &[RouteMessage]) -> Option<u32> {
    routes
        .iter()
        .filter(|r| {
            r.header.destination_prefix_length == 0
                && r.header.kind == RouteType::Unicast
                && table_of(r) == u32::from(libc::RT_TABLE_MAIN)
        })
        .find_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        })
}

fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// Turns IPv4 forwarding on for `ifname` alone; returns whether it was already on.
pub fn enable_forwarding(ifname: &str) -> Result<bool, NetError> {
    if !valid_ifname(ifname) {
        return Err(NetError::InvalidName(ifname.to_owned()));
    }
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    let was = std::fs::read_to_string(&path).map_err(|source| NetError::Sysctl {
        path: path.clone(),
        source,
    })?;
    if was.trim() == "1" {
        return Ok(true);
    }
    std::fs::write(&path, "1").map_err(|source| NetError::Sysctl { path, source })?;
    Ok(false)
}

/// Makes replies that arrive on `bridge` for the forwarder's transparent connections
/// (marked [`CLIENT_MARK`] by the firewall) local: a rule `fwmark CLIENT_MARK iif bridge
/// lookup CLIENT_TABLE` and, in that table, `local 0.0.0.0/0 dev lo`. The rule names the
/// bridge so the forwarder's own packets (also marked, but from the host) route normally.
/// Idempotent.
pub async fn ensure_client_routing(handle: &Handle, bridge: &str) -> Result<(), NetError> {
    let lo = find_link(handle, "lo")
        .await?
        .ok_or_else(|| NetError::LinkNotFound("lo".into()))?;
    let mut route = handle
        .route()
        .add()
        .v4()
        .replace()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .kind(RouteType::Local)
        .table_id(CLIENT_TABLE)
        .output_interface(lo.ifindex);
    route.message_mut().header.scope = netlink_packet_route::route::RouteScope::Host;
    route.execute().await?;

    let rules = ipv4_rules(handle).await?;
    if rules.iter().any(|r| is_client_rule(r, bridge)) {
        return Ok(());
    }
    handle
        .rule()
        .add()
        .v4()
        .action(RuleAction::ToTable)
        .priority(CLIENT_RULE_PRIORITY)
        .fw_mark(CLIENT_MARK)
        .input_interface(bridge.to_owned())
        .table_id(CLIENT_TABLE)
        .execute()
        .await?;
    Ok(())
}

/// Whether the rule and the route of [`ensure_client_routing`] are both in place (an
/// operator's `ip rule flush` or a network manager can remove them; then every SSH reply
/// to a kept client address would be lost).
pub async fn client_routing_present(handle: &Handle, bridge: &str) -> Result<bool, NetError> {
    let routes = ipv4_routes(handle).await?;
    if !has_client_route(&routes) {
        return Ok(false);
    }
    let rules = ipv4_rules(handle).await?;
    Ok(rules.iter().any(|r| is_client_rule(r, bridge)))
}

/// Every IPv4 route of every table.
async fn ipv4_routes(handle: &Handle) -> Result<Vec<RouteMessage>, NetError> {
    Ok(handle
        .route()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await?)
}

/// Every IPv4 policy rule.
async fn ipv4_rules(handle: &Handle) -> Result<Vec<RuleMessage>, NetError> {
    Ok(handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await?)
}

/// `local 0.0.0.0/0` in [`CLIENT_TABLE`] (pure).
fn has_client_route(routes: &[RouteMessage]) -> bool {
    routes.iter().any(|r| {
        r.header.destination_prefix_length == 0
            && r.header.kind == RouteType::Local
            && table_of(r) == CLIENT_TABLE
    })
}

fn is_client_rule(r: &RuleMessage, bridge: &str) -> bool {
    let has = |want: &RuleAttribute| r.attributes.iter().any(|a| a == want);
    r.header.family == AddressFamily::Inet
        && has(&RuleAttribute::FwMark(CLIENT_MARK))
        && has(&RuleAttribute::Iifname(bridge.to_owned()))
        && has(&RuleAttribute::Table(CLIENT_TABLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: u8, table: u32, oif: u32, kind: RouteType) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.destination_prefix_length = prefix;
        m.header.kind = kind;
        m.header.table = libc::RT_TABLE_UNSPEC;
        m.attributes.push(RouteAttribute::Table(table));
        m.attributes.push(RouteAttribute::Oif(oif));
        m
    }

    #[test]
    fn the_uplink_is_the_main_tables_default_route() {
        let main = u32::from(libc::RT_TABLE_MAIN);
        let routes = [
            route(24, main, 3, RouteType::Unicast),
            route(0, CLIENT_TABLE, 1, RouteType::Local),
            route(0, 100, 9, RouteType::Unicast),
            route(0, main, 7, RouteType::Unicast),
        ];
        assert_eq!(default_route_oif(&routes), Some(7));
        assert_eq!(default_route_oif(&routes[..3]), None);
        // A blackhole default is no uplink.
        assert_eq!(
            default_route_oif(&[route(0, main, 0, RouteType::BlackHole)]),
            None
        );
    }

    #[test]
    fn the_client_route_is_the_local_default_of_its_own_table() {
        let main = u32::from(libc::RT_TABLE_MAIN);
        assert!(has_client_route(&[
            route(0, main, 7, RouteType::Unicast),
            route(0, CLIENT_TABLE, 1, RouteType::Local),
        ]));
        // The same route in another table, or another route in the table, is not it.
        assert!(!has_client_route(&[route(0, main, 1, RouteType::Local)]));
        assert!(!has_client_route(&[route(
            8,
            CLIENT_TABLE,
            1,
            RouteType::Local
        )]));
        assert!(!has_client_route(&[route(
            0,
            CLIENT_TABLE,
            1,
            RouteType::Unicast
        )]));
    }
}
