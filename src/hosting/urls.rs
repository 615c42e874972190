//! How a hosting is reached, spelled once: the site by path and by host name, and the SSH
//! command. Pure; the API's `access-urls` and `proxy-info` both answer with these.

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

/// The addresses of the hosting `slug` on `domain`, reached by `web` (the port left out
/// when it is the scheme's default) and SSH forwarded from `ssh_port`.
pub fn site_urls(domain: &str, web: Web, slug: &str, ssh_port: u16) -> SiteUrls {
    let (scheme, port, default) = match web {
        Web::Http(p) => ("http", p, 80),
        Web::Https(p) => ("https", p, 443),
    };
    let host = if port == default {
        domain.to_owned()
    } else {
        format!("{domain}:{port}")
    };
    SiteUrls {
        web: format!("{scheme}://{host}/{slug}/"),
        web_host: format!("{scheme}://{slug}.{host}/"),
        web_path: format!("/{slug}/"),
        ssh: format!("ssh -p {ssh_port} {slug}@{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
