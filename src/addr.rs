//! Plain address and numbering types, pure and below everything that uses them: the VM
//! subnet ([`Ipv4Net`]), any IPv4 network ([`Cidr`]), an inclusive TCP port range
//! ([`PortRange`]), the kernel's interface-name rule ([`valid_ifname`]) and the uid a VM's
//! QEMU runs as ([`vm_uid`]).
//!
//! `config` parses its values into these types; `net`, `vm`, `dns` and `hosting` use them.
//! This module imports nothing of roost and performs no I/O.
//!
//! In a subnet the first host address is the gateway (the bridge's own address); the
//! network and broadcast addresses are never handed out. Reservations themselves live in
//! `store`: this module only computes, it remembers nothing.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A value that is not the address, network, port range or name it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// A subnet or network string that does not parse, or a subnet too small to hold a VM.
    #[error("invalid subnet {input:?}: {reason}")]
    InvalidSubnet { input: String, reason: &'static str },
    /// A port range that is not `LOW-HIGH` with `1 <= LOW <= HIGH <= 65535`.
    #[error("invalid port range {0:?}: expected \"LOW-HIGH\" with 1 <= LOW <= HIGH <= 65535")]
    InvalidPortRange(String),
}

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
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, AddrError> {
        let input = format!("{network}/{prefix}");
        let invalid = |reason| AddrError::InvalidSubnet {
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

    /// A subnet written in the source, `a.b.c.d/prefix`: checked at compile time when used
    /// in a `const` (a bad one fails the build instead of a runtime path).
    pub const fn constant(octets: [u8; 4], prefix: u8) -> Self {
        let bits = u32::from_be_bytes(octets);
        assert!(prefix <= Self::MAX_PREFIX && bits & !mask(prefix) == 0);
        Self {
            network: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
            prefix,
        }
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
const fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - p as u32),
    }
}

/// Any IPv4 network `a.b.c.d/len` (`/0` to `/32`, host bits clear): a firewall match,
/// unlike [`Ipv4Net`], which must leave room for VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// A network written in the source, checked at compile time when used in a `const`.
    pub const fn constant(octets: [u8; 4], prefix: u8) -> Self {
        assert!(prefix <= 32 && u32::from_be_bytes(octets) & !mask(prefix) == 0);
        Cidr {
            addr: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
            prefix,
        }
    }

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
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| AddrError::InvalidSubnet {
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
    type Err = AddrError;

    /// A [`Cidr`] that also leaves room for VMs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let c: Cidr = s.parse()?;
        Ipv4Net::new(c.addr, c.prefix).map_err(|e| match e {
            AddrError::InvalidSubnet { reason, .. } => AddrError::InvalidSubnet {
                input: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = AddrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

impl TryFrom<String> for Cidr {
    type Error = AddrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// An inclusive range of TCP ports, `"LOW-HIGH"` with `1 <= LOW <= HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// The ports, lowest first.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.low..=self.high
    }
}

impl FromStr for PortRange {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddrError::InvalidPortRange(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let port = |t: &str| {
            let t = t.trim();
            // u16::from_str accepts a leading '+'; a port is plain digits.
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u16>().ok())
                .flatten()
        };
        match (port(a), port(b)) {
            (Some(low), Some(high)) if low >= 1 && low <= high => Ok(PortRange { low, high }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl TryFrom<String> for PortRange {
    type Error = AddrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

/// Checks an interface name the way the kernel does (`dev_valid_name`): 1..=15 bytes,
/// not `.` or `..`, no `/`, `:` or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// The default first uid of the per-VM uids (`[vm] uid_base`): 0x70000000, above
/// systemd's container range (524288–1879048191) and the subordinate ids `useradd` hands
/// out (100000–600100000), below 2^31 (which some tools treat as negative).
pub const DEFAULT_UID_BASE: u32 = 0x7000_0000;

/// The uid (and gid) of the QEMU of the VM whose address is `offset` from its subnet's
/// network address: `base + offset`, so no two VMs share one. `None` when it would
/// overflow or reach `u32::MAX` (`-1`).
pub fn vm_uid(base: u32, offset: u32) -> Option<u32> {
    base.checked_add(offset).filter(|u| *u != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["roost0", "rtabcdefghijklm", "a", "br-x_1"] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "22000-22999".parse().expect("range");
        assert_eq!((r.low, r.high), (22000, 22999));
        assert!(r.contains(22000) && r.contains(22999) && !r.contains(23000));
        assert_eq!(r.to_string(), "22000-22999");
        assert_eq!(
            " 5 - 5 ".parse::<PortRange>().map(|r| r.ports().count()),
            Ok(1)
        );
        for bad in [
            "", "abc", "3000-20", "0-10", "1-70000", "+1-2", "1-", "-5", "1-2-3",
        ] {
            let e = bad.parse::<PortRange>().expect_err(bad);
            assert!(e.to_string().contains("LOW-HIGH"), "{bad}: {e}");
        }
    }

    #[test]
    fn uids_from_the_base_and_the_offset() {
        let cases = [
            (DEFAULT_UID_BASE, 2, Some(0x7000_0002)),
            (DEFAULT_UID_BASE, 254, Some(0x7000_00fe)),
            (100_000, (1 << 16) - 2, Some(165_534)),
            (u32::MAX - 10, 9, Some(u32::MAX - 1)),
            (u32::MAX - 10, 10, None),
            (u32::MAX - 10, 11, None),
        ];
        for (base, offset, want) in cases {
            assert_eq!(vm_uid(base, offset), want, "{base} + {offset}");
        }
    }

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
                matches!(err, AddrError::InvalidSubnet { .. }),
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
