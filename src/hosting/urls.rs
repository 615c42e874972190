//! How a hosting is reached, spelled once: the site by path and by host name, and the SSH
//! command. Pure; the API's `access-urls` and `proxy-info` both answer with these. Also
//! the one spelling of an origin with its port left out when it is the scheme's default
//! (the dashboard's address, the `https_required` message).

/// The public addresses of one hosting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteUrls {
    /// `http[s]://DOMAIN[:port]/<slug>/`
    pub web: String,
    /// `http[s]://<slug>.DOMAIN[:port]/`
    pub web_host: String,
    /// `/<slug>/`
    pub web_path: String,
    /// `ssh -p <port> <slug>@DOMAIN`
    pub ssh: String,
}

/// How sites are reached over the web: the scheme and its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Web {
    /// Plain HTTP on this port.
    Http(u16),
    /// HTTPS on this port (plain HTTP then only redirects).
    Https(u16),
}

impl Web {
    /// How `cfg` serves the web: HTTPS on its port when HTTPS is on, else plain HTTP.
    pub fn of(cfg: &crate::config::Config) -> Web {
        if cfg.https.enabled {
            Web::Https(cfg.https.listen.port())
        } else {
            Web::Http(cfg.http.listen.port())
        }
    }

    /// `scheme://host[:port]`, the port left out when it is the scheme's default.
    pub fn origin(self, host: &str) -> String {
        let (scheme, port, default) = match self {
            Web::Http(p) => ("http", p, 80),
            Web::Https(p) => ("https", p, 443),
        };
        if port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        }
    }
}

/// The addresses of the hosting `slug` on `domain`, reached by `web` (the port left out
/// when it is the scheme's default) and SSH forwarded from `ssh_port`.
pub fn site_urls(domain: &str, web: Web, slug: &str, ssh_port: u16) -> SiteUrls {
    SiteUrls {
        web: format!("{}/{slug}/", web.origin(domain)),
        web_host: web.origin(&format!("{slug}.{domain}")) + "/",
        web_path: format!("/{slug}/"),
        ssh: format!("ssh -p {ssh_port} {slug}@{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_leave_out_only_the_schemes_own_default_port() {
        assert_eq!(Web::Http(80).origin("a.test"), "http://a.test");
        assert_eq!(Web::Http(443).origin("a.test"), "http://a.test:443");
        assert_eq!(Web::Https(443).origin("a.test"), "https://a.test");
        assert_eq!(Web::Https(8443).origin("a.test"), "https://a.test:8443");
    }

    #[test]
    fn urls_with_and_without_the_default_port() {
        let u = site_urls("example.com", Web::Http(80), "alice", 22001);
        assert_eq!(u.web, "http://example.com/alice/");
        assert_eq!(u.web_host, "http://alice.example.com/");
        assert_eq!(u.web_path, "/alice/");
        assert_eq!(u.ssh, "ssh -p 22001 alice@example.com");
        let u = site_urls("roost.test", Web::Http(8080), "bob", 22000);
        assert_eq!(u.web, "http://roost.test:8080/bob/");
        assert_eq!(u.web_host, "http://bob.roost.test:8080/");
        assert_eq!(u.ssh, "ssh -p 22000 bob@roost.test");
        let u = site_urls("example.com", Web::Https(443), "alice", 22001);
        assert_eq!(u.web, "https://example.com/alice/");
        assert_eq!(u.web_host, "https://alice.example.com/");
        let u = site_urls("example.com", Web::Https(8443), "alice", 22001);
        assert_eq!(u.web, "https://example.com:8443/alice/");
    }
}
