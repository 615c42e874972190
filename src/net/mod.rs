//! Networking for VMs: the bridge, one isolated tap per VM, IPAM, MAC addresses and the firewall.
//!
//! This is the only module that touches netlink, `/dev/net/tun` or nftables. It knows nothing
//! about users, hostings or HTTP: callers pass names, addresses and ids as plain values.
//!
//! Layout, pure core first:
//! - The address types (subnets, networks, interface names) live in [`crate::addr`] and
//!   are re-exported here.
//! - [`ident`]: stable MAC addresses and tap names derived from an id (pure).
//! - [`firewall`]: the nftables ruleset as data and text (pure), applied with `nft -f -`.
//! - [`bridge`]: the bridge's desired state as a [`bridge::BridgePlan`], applied over netlink.
//! - [`tap`]: opening a tap through `/dev/net/tun` (an fd for QEMU).
//! - [`egress`]: the uplink, per-interface forwarding and the policy route of the SSH
//!   forwarder's transparent replies (the NAT and limits are rules in [`firewall`]).
//! - [`link`]: making a tap a VM's bridge port (isolated, no learning, static FDB entry,
//!   no IPv6), deleting and listing links over netlink.

pub mod bridge;
pub mod egress;
pub mod firewall;
pub mod ident;
pub mod link;
pub mod tap;

pub use crate::addr::{valid_ifname, Cidr, Ipv4Net};
pub use bridge::{ensure_bridge, BridgePlan};
pub use firewall::{apply_firewall, remove_firewall, EgressPlan, FirewallPlan, VmPort};
pub use ident::{is_roost_tap, mac_for, mac_for_ip, tap_name, InvalidMac, MacAddr};
pub use link::{attach_vm_port, delete_link, find_link, list_links, orphan_taps, LinkInfo};
pub use tap::open_tap;

/// A netlink handle, re-exported so callers need not depend on `rtnetlink` themselves.
pub use rtnetlink::Handle;

/// Errors of the `net` module. Messages are short; the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An interface name the kernel would reject (empty, too long, bad characters).
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    /// A link with the bridge's name exists but is not a bridge.
    #[error("link {0} exists and is not a bridge")]
    NotABridge(String),
    /// A link that must exist does not.
    #[error("link {0} not found")]
    LinkNotFound(String),
    /// Opening the netlink socket failed.
    #[error("netlink socket")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a netlink request.
    #[error("netlink request failed")]
    Netlink(#[from] rtnetlink::Error),
    /// A tun/tap open or ioctl failed.
    #[error("tap {name}: {op}")]
    Tun {
        name: String,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    /// Running `nft` failed to start or to finish.
    #[error("running nft")]
    FirewallIo(#[source] std::io::Error),
    /// A per-interface sysctl could not be written.
    #[error("cannot write {path}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `nft` rejected the ruleset; the payload is its stderr.
    #[error("nft rejected the ruleset: {0}")]
    FirewallRejected(String),
}

/// Opens a netlink connection in the calling thread's network namespace and spawns its
/// driver on the current tokio runtime. Call it from inside a runtime.
pub fn netlink() -> Result<Handle, NetError> {
    let (conn, handle, _messages) = rtnetlink::new_connection().map_err(NetError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// True when a netlink error carries the given errno (e.g. `libc::ENODEV`).
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}
