//! IPv4 address management, pure: the VM subnet and the addresses a VM may get in it.
//!
//! The first host address of the subnet is the gateway (the bridge's own address); the
//! network and broadcast addresses are never handed out. Reservations themselves live in
//! `store`: this module only computes, it remembers nothing.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::NetError;

/// An IPv4 subnet such as `10.88.0.0/24`: a network address with its host bits clear.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The longest prefix that still leaves a host address besides the gateway.
    pub const MAX_PREFIX: u8 = 30;

    /// Builds a subnet; the address must have its host bits clear.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        let input = format!("{network}/{prefix}");
        let invalid = |reason| NetError::InvalidSubnet {
            input: input.clone(),
            reason,
        };
        if prefix > Self::MAX_PREFIX {
            return Err(invalid("prefix must be at most /30 to leave room for VMs"));
        }
        if u32::from(network) & !mask(prefix) != 0 {
            return Err(invalid("host bits are set (use the network address)"));
        }
        Ok(Self { network, prefix })
    }

    /// The network address (all host bits clear).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length, e.g. 24.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The gateway: the first host address, owned by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// True when `addr` lies inside the subnet (network and broadcast included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// True when `addr` may be given to a VM: inside, and not network, gateway or broadcast.
    pub fn is_assignable(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr)
            && addr != self.network
            && addr != self.gateway()
            && addr != self.broadcast()
    }

    /// Every address a VM may get, lowest first.
    pub fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.gateway()) + 1..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }

    /// `addr`'s distance from the network address (2 for the first VM address), or `None`
    /// outside the subnet. Unique per address, so usable to number per-VM resources.
    pub fn host_offset(&self, addr: Ipv4Addr) -> Option<u32> {
        self.contains(addr)
            .then(|| u32::from(addr) - u32::from(self.network))
    }

    /// How many addresses VMs can get (hosts minus the gateway).
    pub fn capacity(&self) -> u32 {
        // prefix <= 30, so the shift cannot overflow and the result is at least 1.
        (1u32 << (32 - self.prefix)) - 3
    }
}

/// The netmask for a prefix length; `prefix` is at most 32.
fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// Any IPv4 network `a.b.c.d/len` (`/0` to `/32`, host bits clear): a firewall match,
/// unlike [`Ipv4Net`], which must leave room for VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| NetError::InvalidSubnet {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX, e.g. 10.88.0.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("not an IPv4 address"))?;
        // u8::from_str accepts a leading '+'; a prefix is plain digits.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("prefix is not a number from 0 to 32"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| invalid("prefix is too large"))?;
        if prefix > 32 {
            return Err(invalid("prefix is too large"));
        }
        if u32::from(addr) & !mask(prefix) != 0 {
            return Err(invalid("host bits are set (use the network address)"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    /// A [`Cidr`] that also leaves room for VMs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let c: Cidr = s.parse()?;
        Ipv4Net::new(c.addr, c.prefix).map_err(|e| match e {
            NetError::InvalidSubnet { reason, .. } => NetError::InvalidSubnet {
                input: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_of_any_length() {
        let c: Cidr = "169.254.169.254/32".parse().expect("host");
        assert!(c.contains(Ipv4Addr::new(169, 254, 169, 254)));
        assert!(!c.contains(Ipv4Addr::new(169, 254, 169, 253)));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 10)));
        let c: Cidr = "172.16.0.0/12".parse().expect("net");
        assert!(c.contains(Ipv4Addr::new(172, 31, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(172, 32, 0, 0)));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/999",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_offsets() {
        let n: Ipv4Net = "10.88.0.0/24".parse().expect("net");
        assert_eq!(n.host_offset(Ipv4Addr::new(10, 88, 0, 2)), Some(2));
        assert_eq!(n.host_offset(Ipv4Addr::new(10, 88, 0, 254)), Some(254));
        assert_eq!(n.host_offset(Ipv4Addr::new(10, 88, 1, 2)), None);
        let n: Ipv4Net = "10.64.0.0/10".parse().expect("net");
        assert_eq!(n.host_offset(Ipv4Addr::new(10, 65, 0, 3)), Some(65536 + 3));
        assert_eq!(n.host_offset(n.broadcast()), Some((1 << 22) - 1));
    }

    #[test]
    fn hosts_are_the_assignable_addresses_in_order() {
        let n: Ipv4Net = "10.0.0.0/30".parse().expect("net");
        assert_eq!(
            n.hosts().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
        let n: Ipv4Net = "10.0.0.0/24".parse().expect("net");
        let all: Vec<_> = n.hosts().collect();
        assert_eq!(all.len() as u32, n.capacity());
        assert_eq!(all[0], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(all[all.len() - 1], Ipv4Addr::new(10, 0, 0, 254));
        assert!(all.iter().all(|a| n.is_assignable(*a)));
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("valid subnet")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("valid address")
    }

    #[test]
    fn parse_valid() {
        let cases = [
            (
                "10.88.0.0/24",
                "10.88.0.0",
                24,
                "10.88.0.1",
                "10.88.0.255",
                253,
            ),
            (
                "10.88.0.0/16",
                "10.88.0.0",
                16,
                "10.88.0.1",
                "10.88.255.255",
                65533,
            ),
            (
                "192.168.7.4/30",
                "192.168.7.4",
                30,
                "192.168.7.5",
                "192.168.7.7",
                1,
            ),
            (
                " 172.16.0.0/12 ",
                "172.16.0.0",
                12,
                "172.16.0.1",
                "172.31.255.255",
                (1 << 20) - 3,
            ),
        ];
        for (input, network, prefix, gateway, broadcast, capacity) in cases {
            let n = net(input);
            assert_eq!(n.network(), ip(network), "{input}");
            assert_eq!(n.prefix(), prefix, "{input}");
            assert_eq!(n.gateway(), ip(gateway), "{input}");
            assert_eq!(n.broadcast(), ip(broadcast), "{input}");
            assert_eq!(n.capacity(), capacity, "{input}");
            assert_eq!(n.to_string(), input.trim());
        }
    }

    #[test]
    fn parse_invalid_with_clear_reasons() {
        let cases = [
            ("10.88.0.0", "expected ADDRESS/PREFIX"),
            ("10.88.0/24", "not an IPv4 address"),
            ("::1/64", "not an IPv4 address"),
            ("10.88.0.0/", "prefix is not a number"),
            ("10.88.0.0/+24", "prefix is not a number"),
            ("10.88.0.0/x", "prefix is not a number"),
            ("10.88.0.0/33", "prefix is too large"),
            ("10.88.0.0/999", "prefix is too large"),
            ("10.88.0.0/31", "at most /30"),
            ("10.88.0.0/32", "at most /30"),
            ("10.88.0.1/24", "host bits are set"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<Ipv4Net>().expect_err(input);
            let msg = err.to_string();
            assert!(
                matches!(err, NetError::InvalidSubnet { .. }),
                "{input}: {msg}"
            );
            assert!(msg.contains(reason), "{input}: {msg}");
            assert!(msg.contains(input), "{input}: {msg}");
        }
    }

    #[test]
    fn serde_as_string() {
        let n = net("10.88.0.0/24");
        let json = serde_json::to_string(&n).expect("serialize");
        assert_eq!(json, "\"10.88.0.0/24\"");
        assert_eq!(
            serde_json::from_str::<Ipv4Net>(&json).expect("deserialize"),
            n
        );
        assert!(serde_json::from_str::<Ipv4Net>("\"10.88.0.1/24\"").is_err());
    }

    #[test]
    fn contains_and_assignable() {
        let n = net("10.88.0.0/24");
        let cases = [
            ("10.88.0.0", true, false),
            ("10.88.0.1", true, false),
            ("10.88.0.2", true, true),
            ("10.88.0.254", true, true),
            ("10.88.0.255", true, false),
            ("10.88.1.0", false, false),
            ("10.87.255.255", false, false),
        ];
        for (a, contains, assignable) in cases {
            assert_eq!(n.contains(ip(a)), contains, "{a}");
            assert_eq!(n.is_assignable(ip(a)), assignable, "{a}");
        }
    }
}
