//! Stable per-hosting identities on the wire, pure: MAC addresses and tap names.
//!
//! Both are derived from the hosting's id bytes with SHA-256 (or, for the MAC, from its
//! reserved IP), so the same hosting gets the same MAC and tap name after a daemon restart. `store` still reserves them by unique key:
//! a (very unlikely) hash collision shows as a reservation conflict, never as two VMs
//! sharing a name.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The prefix of every tap (and test veth) roost creates; the orphan reaper keys on it.
pub const TAP_PREFIX: &str = "rt";
/// Interface names are at most 15 bytes (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;
/// RFC 4648 base32 alphabet, lower-cased: names stay readable in `ip link`.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A 48-bit Ethernet address. Displays as `52:54:0a:bc:de:f0`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six bytes, e.g. for a netlink `IFLA_ADDRESS`.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Locally administered (bit 1 of the first byte set).
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// Unicast (bit 0 of the first byte clear).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 0x01 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The error for a string that is not six colon-separated hex bytes.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddr {
    type Err = InvalidMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(|| InvalidMac(s.to_owned()))?;
            if p.len() != 2 {
                return Err(InvalidMac(s.to_owned()));
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| InvalidMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(InvalidMac(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = InvalidMac;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// The MAC address for a hosting: `52:54` (QEMU's locally administered unicast prefix,
/// recognisable in `ip neigh`) followed by 32 bits of SHA-256 of `id_bytes`.
///
/// 32 bits collide with even odds near 77,000 hostings; where the store keys MACs uniquely,
/// [`mac_for_ip`] cannot collide at all.
pub fn mac_for(id_bytes: &[u8]) -> MacAddr {
    let h = Sha256::new_with_prefix(b"roost-mac\0")
        .chain_update(id_bytes)
        .finalize();
    MacAddr([0x52, 0x54, h[0], h[1], h[2], h[3]])
}

/// The MAC address for a VM's reserved IPv4 address: `52:54` followed by its four octets.
/// Unique whenever the addresses are, and stable as long as the reservation is.
pub fn mac_for_ip(ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = ip.octets();
    MacAddr([0x52, 0x54, a, b, c, d])
}

/// The tap name for a hosting: `rt` + 13 base32 characters of SHA-256 of `id_bytes`
/// (65 bits), exactly 15 bytes, so it always fits `IFNAMSIZ`.
pub fn tap_name(id_bytes: &[u8]) -> String {
    let h = Sha256::new_with_prefix(b"roost-tap\0")
        .chain_update(id_bytes)
        .finalize();
    // Take 5 bits at a time from the front of the hash.
    let mut first = [0u8; 16];
    first.copy_from_slice(&h[..16]);
    let bits = u128::from_be_bytes(first);
    let mut name = String::with_capacity(IFNAME_MAX);
    name.push_str(TAP_PREFIX);
    for i in 0..(IFNAME_MAX - TAP_PREFIX.len()) {
        let idx = (bits >> (128 - 5 * (i + 1))) & 0x1f;
        name.push(char::from(BASE32[idx as usize]));
    }
    name
}

/// True for names [`tap_name`] produces. The orphan reaper deletes links matching this
/// that no hosting claims, so it must not match anything roost did not create (the bridge,
/// `eth0`, `lo`, other software's taps).
pub fn is_roost_tap(name: &str) -> bool {
    name.len() == IFNAME_MAX
        && name.starts_with(TAP_PREFIX)
        && name[TAP_PREFIX.len()..]
            .bytes()
            .all(|b| BASE32.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_stable_local_unicast_and_distinct() {
        let a = mac_for(b"01HZX0000000000000000000AA");
        assert_eq!(a, mac_for(b"01HZX0000000000000000000AA"));
        assert_ne!(a, mac_for(b"01HZX0000000000000000000AB"));
        assert!(a.is_local() && a.is_unicast(), "{a}");
        assert_eq!(&a.0[..2], &[0x52, 0x54]);
        let mut seen = std::collections::HashSet::new();
        for i in 0u32..5000 {
            let m = mac_for(&i.to_be_bytes());
            assert!(m.is_local() && m.is_unicast());
            assert!(seen.insert(m), "collision at {i}");
        }
    }

    #[test]
    fn mac_for_ip_embeds_the_address() {
        let m = mac_for_ip(Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(m.to_string(), "52:54:0a:58:00:02");
        assert!(m.is_local() && m.is_unicast());
        assert_ne!(m, mac_for_ip(Ipv4Addr::new(10, 88, 0, 3)));
    }

    #[test]
    fn mac_display_and_parse() {
        let m = MacAddr([0x52, 0x54, 0x00, 0xab, 0x0c, 0xff]);
        assert_eq!(m.to_string(), "52:54:00:ab:0c:ff");
        assert_eq!("52:54:00:ab:0c:ff".parse::<MacAddr>().expect("parse"), m);
        assert_eq!("52:54:00:AB:0C:FF".parse::<MacAddr>().expect("parse"), m);
        for bad in [
            "",
            "52:54:00:ab:0c",
            "52:54:00:ab:0c:ff:00",
            "5:54:00:ab:0c:ff",
            "zz:54:00:ab:0c:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&m).expect("serialize");
        assert_eq!(json, "\"52:54:00:ab:0c:ff\"");
    }

    #[test]
    fn tap_names_fit_and_are_recognised() {
        let mut seen = std::collections::HashSet::new();
        for i in 0u32..5000 {
            let n = tap_name(&i.to_be_bytes());
            assert_eq!(n.len(), IFNAME_MAX, "{n}");
            assert!(crate::net::valid_ifname(&n), "{n}");
            assert!(is_roost_tap(&n), "{n}");
            assert!(seen.insert(n), "collision at {i}");
        }
        assert_eq!(tap_name(b"x"), tap_name(b"x"));
    }

    #[test]
    fn reaper_predicate_rejects_foreign_links() {
        for name in [
            "lo",
            "eth0",
            "roost0",
            "rt",
            "rtabc",
            "tap0",
            "rtABCDEFGHIJKLM",
            "rtabcdefghijkl1",
            "xtabcdefghijklm",
            "rtabcdefghijklmn",
        ] {
            assert!(!is_roost_tap(name), "{name}");
        }
        assert!(is_roost_tap("rtabcdefghijk27"));
    }
}
