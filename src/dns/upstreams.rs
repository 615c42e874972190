//! The host's resolvers, from `resolv.conf`: where the forwarder sends guests' queries.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;

use super::DnsError;

/// The host's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` addresses of a `resolv.conf` text, port 53, in order, without
/// duplicates. Comments (`#`, `;`, whole-line or after the address) and other keywords are
/// ignored, and so are lines whose address does not parse. An IPv6 scope is kept when it
/// is numeric (`fe80::1%2`); a named one (`%eth0`) would need a lookup, so that line is
/// skipped.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(parse_nameserver) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (ip, scope) = word.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let scope: u32 = scope.parse().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}

/// The host's resolvers from `/etc/resolv.conf`, without `exclude` (the gateway address
/// the forwarder itself listens on: forwarding there would loop). None left is an error.
pub fn host_upstreams(exclude: IpAddr) -> Result<Vec<SocketAddr>, DnsError> {
    upstreams_from_file(Path::new(RESOLV_CONF), exclude)
}

pub(super) fn upstreams_from_file(
    path: &Path,
    exclude: IpAddr,
) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ReadResolvConf {
        path: path.to_owned(),
        source,
    })?;
    let exclude = exclude.to_canonical();
    let ups: Vec<SocketAddr> = upstreams_from_resolv_conf(&text)
        .into_iter()
        .filter(|up| up.ip().to_canonical() != exclude)
        .collect();
    if ups.is_empty() {
        return Err(DnsError::NoUpstreams {
            path: path.to_owned(),
        });
    }
    Ok(ups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|s| s.parse().expect("test address"))
            .collect()
    }

    #[test]
    fn resolv_conf_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("nameserver 1.1.1.1\n", &["1.1.1.1:53"]),
            (
                "# generated\nsearch example.com\nnameserver 9.9.9.9\noptions edns0\nnameserver 2620:fe::fe\n",
                &["9.9.9.9:53", "[2620:fe::fe]:53"],
            ),
            ("  nameserver\t127.0.0.53  # systemd-resolved\n", &["127.0.0.53:53"]),
            ("#nameserver 8.8.8.8\n; nameserver 8.8.4.4\n", &[]),
            ("nameserver 1.1.1.1\nnameserver 1.1.1.1\n", &["1.1.1.1:53"]),
            ("nameserver not-an-ip\nnameserver 300.1.1.1\nnameserver\n", &[]),
            ("nameserverx 1.1.1.1\nNAMESERVER 1.1.1.1\n", &[]),
            ("nameserver fe80::1%2\nnameserver fe80::2%eth0\n", &["[fe80::1%2]:53"]),
            ("nameserver 10.0.0.1\r\nnameserver ::1\r\n", &["10.0.0.1:53", "[::1]:53"]),
        ];
        for (text, want) in cases {
            assert_eq!(
                upstreams_from_resolv_conf(text),
                addrs(want),
                "for {text:?}"
            );
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write temp file");
        f
    }

    #[test]
    fn host_upstreams_drop_the_gateway() {
        let f = file("nameserver 10.88.0.1\nnameserver 192.0.2.53\n");
        let got = upstreams_from_file(f.path(), "10.88.0.1".parse().expect("ip"));
        assert_eq!(got.expect("one left"), addrs(&["192.0.2.53:53"]));
    }

    #[test]
    fn nothing_left_is_an_error_naming_the_file() {
        let f = file("nameserver 10.88.0.1\n");
        let err = upstreams_from_file(f.path(), "10.88.0.1".parse().expect("ip"))
            .expect_err("only the gateway");
        assert!(matches!(err, DnsError::NoUpstreams { .. }));
        assert!(err.to_string().contains(&f.path().display().to_string()));

        let missing = f.path().with_extension("missing");
        let err =
            upstreams_from_file(&missing, "10.88.0.1".parse().expect("ip")).expect_err("no file");
        assert!(matches!(err, DnsError::ReadResolvConf { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));
    }
}
