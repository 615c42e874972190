//! How a hosting is reached, spelled once: the site by path and by host name, and the SSH
//! command. Pure; the API's `access-urls` and `proxy-info` both answer with these.

/// The public addresses of one hosting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteUrls {
    /// `http://DOMAIN[:port]/<slug>/`
    pub web: String,
    /// `http://<slug>.DOMAIN[:port]/`
    pub web_host: String,
    /// `/<slug>/`
    pub web_path: String,
    /// `ssh -p <port> <slug>@DOMAIN`
    pub ssh: String,
}

/// The addresses of the hosting `slug` on `domain`, with the HTTP listener on `http_port`
/// (left out when 80) and SSH forwarded from `ssh_port`.
pub fn site_urls(domain: &str, http_port: u16, slug: &str, ssh_port: u16) -> SiteUrls {
    let host = if http_port == 80 {
        domain.to_owned()
    } else {
        format!("{domain}:{http_port}")
    };
    SiteUrls {
        web: format!("http://{host}/{slug}/"),
        web_host: format!("http://{slug}.{host}/"),
        web_path: format!("/{slug}/"),
        ssh: format!("ssh -p {ssh_port} {slug}@{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_the_default_port() {
        let u = site_urls("example.com", 80, "alice", 22001);
        assert_eq!(u.web, "http://example.com/alice/");
        assert_eq!(u.web_host, "http://alice.example.com/");
        assert_eq!(u.web_path, "/alice/");
        assert_eq!(u.ssh, "ssh -p 22001 alice@example.com");
        let u = site_urls("roost.test", 8080, "bob", 22000);
        assert_eq!(u.web, "http://roost.test:8080/bob/");
        assert_eq!(u.web_host, "http://bob.roost.test:8080/");
        assert_eq!(u.ssh, "ssh -p 22000 bob@roost.test");
    }
}
