//! Header rewriting for the reverse proxy: hop-by-hop removal and the forwarding headers.
//!
//! Pure functions over a `HeaderMap`. The forwarding headers are always overwritten from
//! the real peer: a client's own `X-Forwarded-For` or `Forwarded` is never trusted.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// legacy `Proxy-*` ones. Names are parsed once, at compile time.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// True when the request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).any(|t| t == "upgrade")
}

/// The lowercased tokens of every `Connection` header line.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
///
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is put back, so a
/// protocol switch (WebSocket) can pass through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The common case, one pass and no hashing: nothing to strip.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<String> = connection_tokens(headers).collect();
    for name in named {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            if keep_upgrade && n == header::UPGRADE {
                continue;
            }
            headers.remove(n);
        }
    }
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What the proxy knows about the original request, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The TCP peer: the only client address we can vouch for.
    pub peer: IpAddr,
    /// The `Host` the client asked for.
    pub host: Option<&'a str>,
    /// `/<slug>` for path-routed requests.
    pub prefix: Option<&'a str>,
    /// The client came over TLS (`proto=https`).
    pub secure: bool,
}

/// `"..."` with `"` and `\` escaped (RFC 7239 quoted-string).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Sets `X-Forwarded-For` (the peer only), `X-Real-IP`, `X-Forwarded-Proto: http`,
/// `X-Forwarded-Host`, `Forwarded` and `X-Forwarded-Prefix`, replacing whatever the client
/// sent under those names. A client's `X-Forwarded-Prefix` is removed on host routes.
pub fn set_forwarded(headers: &mut HeaderMap, f: Forwarding<'_>) {
    let peer = f.peer.to_string();
    let mut forwarded = match f.peer {
        IpAddr::V4(_) => format!("for={peer}"),
        IpAddr::V6(_) => format!("for=\"[{peer}]\""),
    };
    if let Some(h) = f.host {
        forwarded.push_str(";host=");
        forwarded.push_str(&quoted(h));
    }
    let proto = if f.secure { "https" } else { "http" };
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);

    // `insert` replaces every value the client sent under that name.
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &str| {
        match HeaderValue::from_str(value) {
            Ok(v) => headers.insert(name, v),
            Err(_) => headers.remove(name),
        };
    };
    if let Ok(v) = HeaderValue::from_str(&peer) {
        headers.insert(X_FORWARDED_FOR, v.clone());
        headers.insert(X_REAL_IP, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match f.host {
        Some(h) => set(headers, X_FORWARDED_HOST, h),
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    set(headers, header::FORWARDED, &forwarded);
    match f.prefix {
        Some(p) => set(headers, X_FORWARDED_PREFIX, p),
        None => {
            headers.remove(X_FORWARDED_PREFIX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_removed_and_connection_named_ones_too() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close,x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "basic x"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/plain"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), vec!["content-type", "x-kept"]);
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            names(&h),
            vec!["connection", "sec-websocket-key", "upgrade"]
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&map(&[("connection", "upgrade")])));
        assert!(wants_upgrade(&map(&[
            ("connection", "keep-alive, UPGRADE"),
            ("upgrade", "x")
        ])));
    }

    #[test]
    fn forwarded_headers_overwrite_the_clients() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-prefix", "/evil"),
        ]);
        set_forwarded(
            &mut h,
            Forwarding {
                peer: "198.51.100.4".parse().expect("ip"),
                host: Some("example.com:8080"),
                prefix: Some("/alice"),
                secure: false,
            },
        );
        let all = |n: &str| -> Vec<&str> {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect()
        };
        assert_eq!(all("x-forwarded-for"), vec!["198.51.100.4"]);
        assert_eq!(all("x-real-ip"), vec!["198.51.100.4"]);
        assert_eq!(all("x-forwarded-proto"), vec!["http"]);
        assert_eq!(all("x-forwarded-host"), vec!["example.com:8080"]);
        assert_eq!(all("x-forwarded-prefix"), vec!["/alice"]);
        assert_eq!(
            all("forwarded"),
            vec!["for=198.51.100.4;host=\"example.com:8080\";proto=http"]
        );
    }

    #[test]
    fn forwarded_for_ipv6_and_no_prefix_on_host_routes() {
        let mut h = map(&[("x-forwarded-prefix", "/evil")]);
        set_forwarded(
            &mut h,
            Forwarding {
                peer: "2001:db8::1".parse().expect("ip"),
                host: None,
                prefix: None,
                secure: true,
            },
        );
        assert!(h.get("x-forwarded-prefix").is_none());
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=https");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }
}

/// Rewrites a `Location` from a VM served under a path prefix, as nginx's `proxy_redirect
/// default` does: a VM knows nothing of `/<slug>`, so its `/dir/` must become
/// `/<slug>/dir/`. Absolute URLs on the request's own host are rewritten the same way;
/// anything else (other hosts, relative paths, `//host`) is left alone (`None`).
pub fn rewrite_location(location: &str, prefix: &str, host: Option<&str>) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(format!("{prefix}{location}"));
    }
    let host = host?;
    let (scheme, rest) = ["http://", "https://"]
        .into_iter()
        .find_map(|s| Some((s, location.strip_prefix(s)?)))?;
    let (h, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    h.eq_ignore_ascii_case(host)
        .then(|| format!("{scheme}{h}{prefix}{path}"))
}

#[cfg(test)]
mod location_tests {
    use super::rewrite_location;

    #[test]
    fn locations() {
        assert_eq!(
            rewrite_location("/dir/", "/alice", None).as_deref(),
            Some("/alice/dir/")
        );
        assert_eq!(
            rewrite_location("http://example.com/dir/", "/alice", Some("example.com")).as_deref(),
            Some("http://example.com/alice/dir/")
        );
        assert_eq!(
            rewrite_location("http://example.com", "/alice", Some("example.com")).as_deref(),
            Some("http://example.com/alice/")
        );
        assert_eq!(
            rewrite_location("https://example.com/x", "/alice", Some("example.com")).as_deref(),
            Some("https://example.com/alice/x")
        );
        assert_eq!(
            rewrite_location("http://other.org/x", "/alice", Some("example.com")),
            None
        );
        assert_eq!(
            rewrite_location("//evil.org/x", "/alice", Some("example.com")),
            None
        );
        assert_eq!(
            rewrite_location("next.html", "/alice", Some("example.com")),
            None
        );
    }
}
