//! The route table and request resolution: pure data and pure functions.
//!
//! A [`RouteTable`] is immutable; [`Routes`] swaps whole tables atomically, so a change to
//! one site never touches the connections of another (connections hold no table reference
//! beyond the request being resolved). [`resolve`] decides what one request is: the API's,
//! a redirect, a site to proxy to, or an error page. It routes on the RAW first path
//! segment, never on a decoded or normalised path, so `/alice/..%2fbob/` stays alice's.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hyper::Method;

use crate::presence::Presence;

/// First path segments that never go to a VM on the bare domain.
pub const RESERVED_SEGMENTS: &[&str] = &[
    "api",
    "healthz",
    "readyz",
    "metrics",
    "static",
    "favicon.ico",
    "robots.txt",
];

/// Where a hosting stands, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteStatus {
    /// The VM answers: requests are proxied.
    Live,
    /// Being created: 503 with `Retry-After`.
    Provisioning,
    /// Created, not yet answering on :80: 503 with `Retry-After`.
    Booting,
    /// Stopped by its owner or an administrator: 503.
    Stopped,
    /// Creation or the VM failed: 503.
    Failed,
}

impl RouteStatus {
    /// Short word for pages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteStatus::Live => "live",
            RouteStatus::Provisioning => "provisioning",
            RouteStatus::Booting => "booting",
            RouteStatus::Stopped => "stopped",
            RouteStatus::Failed => "failed",
        }
    }
}

/// One site: what the hosting module tells the proxy about a hosting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `[a-z0-9-]+`; the first path segment and the subdomain.
    pub slug: String,
    /// The hosting's id, for logs only.
    pub hosting_id: String,
    /// The VM's web server (`ip:80`); `None` while it has no address.
    pub upstream: Option<SocketAddrV4>,
    /// `(host listen port, VM ip:22)` for the SSH forwarder.
    pub ssh: Option<(u16, SocketAddrV4)>,
    pub status: RouteStatus,
    /// Changes whenever the VM behind the route (re)boots. Pooled connections belong to one
    /// generation: a rebooted guest has forgotten them, so they are dropped, not reused.
    pub generation: u64,
    /// Who is visiting the site, and the doorbell of a sleeping one (shared with the
    /// hosting's actor and its SSH forward; compared by identity).
    pub presence: Arc<Presence>,
}

/// An immutable set of routes, looked up by slug.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_slug: HashMap<String, Arc<Route>>,
    /// Verified custom domains (normalised names) to the slug they serve.
    by_domain: Arc<HashMap<String, String>>,
}

impl RouteTable {
    /// Builds a table; a later route with the same slug replaces an earlier one.
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let by_slug = routes
            .into_iter()
            .map(|r| (r.slug.clone(), Arc::new(r)))
            .collect();
        RouteTable {
            by_slug,
            by_domain: Arc::default(),
        }
    }

    pub fn get(&self, slug: &str) -> Option<&Arc<Route>> {
        self.by_slug.get(slug)
    }

    /// The slug a custom domain serves.
    pub fn slug_of_domain(&self, name: &str) -> Option<&str> {
        self.by_domain.get(name).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_slug.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_slug.is_empty()
    }

    /// Every route, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_slug.values()
    }
}

/// What changed between two tables, by slug (each list sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl RouteDiff {
    pub fn between(old: &RouteTable, new: &RouteTable) -> RouteDiff {
        let mut d = RouteDiff::default();
        for (slug, r) in &new.by_slug {
            match old.by_slug.get(slug) {
                None => d.added.push(slug.clone()),
                Some(o) if o != r => d.changed.push(slug.clone()),
                Some(_) => {}
            }
        }
        for slug in old.by_slug.keys() {
            if !new.by_slug.contains_key(slug) {
                d.removed.push(slug.clone());
            }
        }
        d.added.sort();
        d.removed.sort();
        d.changed.sort();
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The shared, swappable route table. Cloning gives another handle to the same table.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    current: Arc<RwLock<Arc<RouteTable>>>,
    /// Bumped after every swap, so a [`RouteCache`] can tell that its copy is stale.
    version: Arc<AtomicU64>,
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Routes {
        Routes {
            current: Arc::new(RwLock::new(Arc::new(RouteTable::new(routes)))),
            version: Arc::default(),
        }
    }

    /// The table now; requests resolve against one snapshot.
    pub fn snapshot(&self) -> Arc<RouteTable> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A writer panicked mid-swap; the Arc inside is still a whole table.
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces every route at once and says what changed.
    pub fn replace(&self, routes: Vec<Route>) -> RouteDiff {
        self.swap(|old| {
            let mut t = RouteTable::new(routes);
            t.by_domain = old.by_domain.clone();
            Arc::new(t)
        })
    }

    /// Replaces the custom domains (normalised name → slug) at once.
    pub fn set_domains(&self, domains: HashMap<String, String>) {
        let domains = Arc::new(domains);
        self.swap(|old| {
            Arc::new(RouteTable {
                by_slug: old.by_slug.clone(),
                by_domain: domains,
            })
        });
    }

    /// Adds or replaces one route.
    pub fn upsert(&self, route: Route) -> RouteDiff {
        self.swap(|old| {
            let mut by_slug = old.by_slug.clone();
            by_slug.insert(route.slug.clone(), Arc::new(route));
            Arc::new(RouteTable {
                by_slug,
                by_domain: old.by_domain.clone(),
            })
        })
    }

    /// Removes one route; a no-op (empty diff) when it is absent.
    pub fn remove(&self, slug: &str) -> RouteDiff {
        self.swap(|old| {
            let mut by_slug = old.by_slug.clone();
            by_slug.remove(slug);
            Arc::new(RouteTable {
                by_slug,
                by_domain: old.by_domain.clone(),
            })
        })
    }

    fn swap(&self, f: impl FnOnce(&RouteTable) -> Arc<RouteTable>) -> RouteDiff {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let new = f(&guard);
        let diff = RouteDiff::between(&guard, &new);
        *guard = new;
        self.version.fetch_add(1, Ordering::Release);
        drop(guard);
        if !diff.is_empty() {
            tracing::info!(added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed, "routes changed");
        }
        diff
    }
}

/// One thread's private copy of the table, re-copied only when the shared one changes.
///
/// The proxy's workers resolve every request; with a shared table each request would
/// bump reference counts on cache lines that every worker writes. Here the hot path reads
/// one counter that only changes with the routes.
#[derive(Debug)]
pub struct RouteCache {
    routes: Routes,
    seen: u64,
    table: Arc<RouteTable>,
}

impl RouteCache {
    pub fn new(routes: Routes) -> RouteCache {
        let mut c = RouteCache {
            routes,
            seen: 0,
            table: Arc::default(),
        };
        c.refresh(c.routes.version.load(Ordering::Acquire));
        c
    }

    /// The current table (a private copy).
    pub fn table(&mut self) -> Arc<RouteTable> {
        let v = self.routes.version.load(Ordering::Acquire);
        if v != self.seen {
            self.refresh(v);
        }
        self.table.clone()
    }

    fn refresh(&mut self, version: u64) {
        // The snapshot is at least as new as `version` (bumped after the swap).
        let shared = self.routes.snapshot();
        let by_slug = shared
            .by_slug
            .iter()
            .map(|(k, r)| (k.clone(), Arc::new(Route::clone(r))))
            .collect();
        self.table = Arc::new(RouteTable {
            by_slug,
            by_domain: Arc::new(HashMap::clone(&shared.by_domain)),
        });
        self.seen = version;
    }
}

/// What one request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Served by the API router (which answers its own 404 for anything it does not know).
    Api,
    /// `/<slug>` → `/<slug>/` with the query kept; answered with 308.
    Redirect(String),
    /// Proxied to the route's upstream.
    Proxy {
        route: Arc<Route>,
        /// The path sent upstream: the `/<slug>` prefix stripped, query kept.
        upstream_path: String,
        /// `/<slug>` for path routes (`X-Forwarded-Prefix`); `None` for host routes.
        prefix: Option<String>,
    },
    /// A well-formed slug nobody has: the 404 page.
    NoSite,
    /// The site exists but cannot take requests now: 503.
    Unavailable {
        slug: String,
        status: RouteStatus,
        /// Seconds for `Retry-After`, when waiting helps.
        retry_after: Option<u32>,
    },
}

/// Seconds a client should wait before retrying a site that is coming up.
pub const RETRY_AFTER_SECS: u32 = 5;

/// True for `[a-z0-9-]{1,63}` not starting or ending with `-`: the only slugs routed.
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A `Host` header value split into its host and its port (`None` without one). The one
/// place that takes a port off a `Host`: routing, the dashboard's host, the redirect to
/// HTTPS and the session cookie's name all read hosts through it. Allocates nothing.
pub fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (h, Some(port)),
        _ => (host, None),
    }
}

/// The host part of a `Host` header value, lowercased, without a port.
/// `None` for an IP literal (path routing applies) or an empty value.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None; // IPv6 literal
    }
    let name = split_port(host).0.trim_end_matches('.');
    if name.is_empty() || name.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// True when a `Host` header value names `name` (any case, any port, trailing dot or not).
/// Allocates nothing: it runs for every request.
pub fn host_is(host: Option<&str>, name: &str) -> bool {
    let Some(host) = host.map(str::trim) else {
        return false;
    };
    split_port(host)
        .0
        .trim_end_matches('.')
        .eq_ignore_ascii_case(name.trim_end_matches('.'))
}

/// The slug a `Host` header names as `<slug>.DOMAIN`, if any.
/// `Some(Err(()))` means "a subdomain of ours that is not a valid slug".
fn host_slug(host: Option<&str>, domain: &str) -> Option<Result<String, ()>> {
    let name = host_name(host?)?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let label = name.strip_suffix(domain.as_str())?.strip_suffix('.')?;
    if valid_slug(label) {
        Some(Ok(label.to_string()))
    } else {
        Some(Err(()))
    }
}

fn site(route: &Arc<Route>, upstream_path: String, prefix: Option<String>) -> Resolution {
    let unavailable = |retry_after| Resolution::Unavailable {
        slug: route.slug.clone(),
        status: route.status,
        retry_after,
    };
    match (route.status, route.upstream) {
        // A booting guest is tried too: its site answers as soon as its web server does,
        // not a readiness probe later. The proxy shows the "starting" page if it does not.
        (RouteStatus::Live | RouteStatus::Booting, Some(_)) => Resolution::Proxy {
            route: route.clone(),
            upstream_path,
            prefix,
        },
        (RouteStatus::Live | RouteStatus::Provisioning | RouteStatus::Booting, _) => {
            unavailable(Some(RETRY_AFTER_SECS))
        }
        (RouteStatus::Stopped | RouteStatus::Failed, _) => unavailable(None),
    }
}

/// Resolves one request.
///
/// `raw_path_and_query` is the request target exactly as received (origin form, e.g.
/// `/alice/x?y`); `host` is the `Host` header (or the authority of an absolute-form target).
pub fn resolve(
    table: &RouteTable,
    method: &Method,
    raw_path_and_query: &str,
    host: Option<&str>,
    domain: &str,
) -> Resolution {
    // `OPTIONS *` and anything that is not origin-form belongs to nobody's site.
    if !raw_path_and_query.starts_with('/') {
        return Resolution::Api;
    }
    if method == Method::CONNECT {
        return Resolution::Api;
    }
    // A verified custom domain is served whole by its owner's site (host-routed).
    if let Some(slug) = host
        .and_then(host_name)
        .and_then(|n| table.slug_of_domain(&n))
    {
        return match table.get(slug) {
            Some(route) => site(route, raw_path_and_query.to_string(), None),
            None => Resolution::NoSite,
        };
    }
    match host_slug(host, domain) {
        Some(Ok(slug)) => {
            return match table.get(&slug) {
                Some(route) => site(route, raw_path_and_query.to_string(), None),
                None => Resolution::NoSite,
            }
        }
        Some(Err(())) => return Resolution::NoSite,
        None => {}
    }

    let (path, query) = match raw_path_and_query.find('?') {
        Some(i) => raw_path_and_query.split_at(i),
        None => (raw_path_and_query, ""),
    };
    let rest = &path[1..];
    let (segment, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if segment.is_empty() || RESERVED_SEGMENTS.contains(&segment) || !valid_slug(segment) {
        return Resolution::Api;
    }
    let Some(route) = table.get(segment) else {
        return Resolution::NoSite;
    };
    match tail {
        None => Resolution::Redirect(format!("/{segment}/{query}")),
        Some(tail) => site(route, format!("{tail}{query}"), Some(format!("/{segment}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_ignores_case_port_and_trailing_dot() {
        for h in [
            "console.example.com",
            "Console.Example.COM:8080",
            "console.example.com.",
        ] {
            assert!(host_is(Some(h), "console.example.com"), "{h}");
        }
        for h in [
            "example.com",
            "xconsole.example.com",
            "console.example.com.evil",
            "[::1]:80",
        ] {
            assert!(!host_is(Some(h), "console.example.com"), "{h}");
        }
        assert!(!host_is(None, "console.example.com"));
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().expect("addr")
    }

    fn route(slug: &str, status: RouteStatus) -> Route {
        // One presence per slug, as the hosting module keeps one per hosting.
        thread_local! {
            static PRESENCES: std::cell::RefCell<HashMap<String, Arc<Presence>>> =
                Default::default();
        }
        let presence = PRESENCES.with(|p| {
            p.borrow_mut()
                .entry(slug.into())
                .or_insert_with(Presence::new)
                .clone()
        });
        Route {
            generation: 0,
            slug: slug.into(),
            hosting_id: format!("id-{slug}"),
            upstream: Some(addr("10.0.0.2:80")),
            ssh: Some((30000, addr("10.0.0.2:22"))),
            status,
            presence,
        }
    }

    fn table() -> RouteTable {
        let mut nomad = route("nomad", RouteStatus::Live);
        nomad.upstream = None;
        RouteTable::new(vec![
            route("alice", RouteStatus::Live),
            route("bob-2", RouteStatus::Live),
            route("boot", RouteStatus::Booting),
            route("prov", RouteStatus::Provisioning),
            route("off", RouteStatus::Stopped),
            route("dead", RouteStatus::Failed),
            nomad,
        ])
    }

    /// What a resolution amounts to, in a form easy to write in a table.
    fn short(r: &Resolution) -> String {
        match r {
            Resolution::Api => "api".into(),
            Resolution::Redirect(to) => format!("308 {to}"),
            Resolution::Proxy {
                route,
                upstream_path,
                prefix,
            } => format!(
                "proxy {} {} {}",
                route.slug,
                upstream_path,
                prefix.as_deref().unwrap_or("-")
            ),
            Resolution::NoSite => "nosite".into(),
            Resolution::Unavailable {
                slug,
                status,
                retry_after,
            } => format!("503 {slug} {} {:?}", status.as_str(), retry_after),
        }
    }

    #[test]
    fn path_routing_table() {
        let t = table();
        let cases: &[(&str, Option<&str>, &str)] = &[
            // The API and health endpoints.
            ("/api/v1/users", None, "api"),
            ("/api", None, "api"),
            ("/healthz", None, "api"),
            ("/readyz", Some("example.com"), "api"),
            ("/metrics", None, "api"),
            ("/static/x.css", None, "api"),
            ("/", None, "api"),
            ("//alice/", None, "api"),
            ("/?x=1", None, "api"),
            // Sites by path: prefix stripped, query kept.
            ("/alice/", None, "proxy alice / /alice"),
            ("/alice/a/b.html", None, "proxy alice /a/b.html /alice"),
            ("/alice/?q=1&r=2", None, "proxy alice /?q=1&r=2 /alice"),
            ("/alice/x?y=/bob/", None, "proxy alice /x?y=/bob/ /alice"),
            ("/bob-2/", Some("example.com"), "proxy bob-2 / /bob-2"),
            ("/alice//", None, "proxy alice // /alice"),
            // Raw segments: never decoded, never normalised.
            ("/alice/..%2fbob/", None, "proxy alice /..%2fbob/ /alice"),
            ("/alice/../bob/", None, "proxy alice /../bob/ /alice"),
            ("/alice%2f..", None, "api"),
            ("/alice%2F../bob/", None, "api"),
            ("/%61lice/", None, "api"),
            ("/Alice/", None, "api"),
            ("/ALICE", None, "api"),
            ("/alice;x/", None, "api"),
            // Redirects to the trailing slash keep the query.
            ("/alice", None, "308 /alice/"),
            ("/alice?x=1&y", None, "308 /alice/?x=1&y"),
            ("/alice?", None, "308 /alice/?"),
            // Unknown but well-formed slugs get the site 404 page.
            ("/carol/", None, "nosite"),
            ("/carol", None, "nosite"),
            // States.
            ("/boot/", None, "proxy boot / /boot"),
            ("/prov/x", None, "503 prov provisioning Some(5)"),
            ("/off/", None, "503 off stopped None"),
            ("/dead/", None, "503 dead failed None"),
            ("/nomad/", None, "503 nomad live Some(5)"),
            // Not origin-form.
            ("*", None, "api"),
            ("", None, "api"),
        ];
        for (path, host, want) in cases {
            let got = resolve(&t, &Method::GET, path, *host, "example.com");
            assert_eq!(short(&got), *want, "path {path:?} host {host:?}");
        }
    }

    #[test]
    fn custom_domains_route_whole_hosts_to_their_site() {
        let routes = Routes::new(table().by_slug.values().map(|r| Route::clone(r)).collect());
        routes.set_domains(HashMap::from([
            ("shop.example.org".to_string(), "alice".to_string()),
            ("gone.example.org".to_string(), "nobody".to_string()),
        ]));
        // Routes changing later keep the domains.
        routes.upsert(route("carol", RouteStatus::Live));
        let mut cache = RouteCache::new(routes.clone());
        let t = cache.table();
        let get = |host: &str, path: &str| {
            short(&resolve(&t, &Method::GET, path, Some(host), "example.com"))
        };
        assert_eq!(
            get("shop.example.org", "/api/v1/host"),
            get("alice.example.com", "/api/v1/host")
        );
        assert!(
            get("SHOP.example.org.:443", "/x").starts_with("proxy alice"),
            "{}",
            get("SHOP.example.org.:443", "/x")
        );
        assert_eq!(get("gone.example.org", "/"), "nosite");
        // Not a claimed name: the API, as before.
        assert_eq!(get("other.example.org", "/api/v1/host"), "api");
        routes.set_domains(HashMap::new());
        let t = cache.table();
        assert_eq!(
            short(&resolve(
                &t,
                &Method::GET,
                "/api/v1/host",
                Some("shop.example.org"),
                "example.com"
            )),
            "api"
        );
    }

    #[test]
    fn host_routing_table() {
        let t = table();
        let cases: &[(&str, &str, &str)] = &[
            ("alice.example.com", "/", "proxy alice / -"),
            (
                "alice.example.com",
                "/api/v1/x?y",
                "proxy alice /api/v1/x?y -",
            ),
            ("alice.example.com", "/healthz", "proxy alice /healthz -"),
            ("alice.example.com", "/bob-2/x", "proxy alice /bob-2/x -"),
            ("ALICE.Example.COM", "/a", "proxy alice /a -"),
            ("alice.example.com:8080", "/a", "proxy alice /a -"),
            ("alice.example.com.", "/a", "proxy alice /a -"),
            ("alice.example.com.:80", "/a", "proxy alice /a -"),
            ("carol.example.com", "/", "nosite"),
            ("a.b.example.com", "/", "nosite"),
            ("-x.example.com", "/", "nosite"),
            ("boot.example.com", "/", "proxy boot / -"),
            // The bare domain, IPs and foreign hosts fall back to path routing.
            ("example.com", "/alice/", "proxy alice / /alice"),
            ("EXAMPLE.com:80", "/alice/", "proxy alice / /alice"),
            ("203.0.113.7", "/alice/", "proxy alice / /alice"),
            ("203.0.113.7:8080", "/api/v1", "api"),
            ("[::1]:8080", "/alice/", "proxy alice / /alice"),
            ("other.org", "/alice/", "proxy alice / /alice"),
            ("aliceexample.com", "/", "api"),
            ("alice.example.com.evil", "/", "api"),
        ];
        for (host, path, want) in cases {
            let got = resolve(&t, &Method::GET, path, Some(host), "example.com");
            assert_eq!(short(&got), *want, "host {host:?} path {path:?}");
        }
    }

    #[test]
    fn method_does_not_change_routing_except_connect() {
        let t = table();
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert_eq!(
                short(&resolve(&t, &m, "/alice", None, "example.com")),
                "308 /alice/"
            );
        }
        assert_eq!(
            resolve(&t, &Method::CONNECT, "/alice/", None, "example.com"),
            Resolution::Api
        );
    }

    #[test]
    fn slug_rules() {
        for ok in ["a", "alice", "bob-2", "x1", &"a".repeat(63)] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "é",
            "a%2f",
            &"a".repeat(64),
        ] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn routes_swap_and_diff() {
        let routes = Routes::new(vec![route("alice", RouteStatus::Live)]);
        let before = routes.snapshot();
        let d = routes.upsert(route("bob-2", RouteStatus::Booting));
        assert_eq!(d.added, vec!["bob-2"]);
        assert!(d.removed.is_empty() && d.changed.is_empty());
        // The old snapshot is untouched: in-flight requests keep a whole table.
        assert_eq!(before.len(), 1);
        assert_eq!(routes.snapshot().len(), 2);

        let d = routes.upsert(route("bob-2", RouteStatus::Live));
        assert_eq!(d.changed, vec!["bob-2"]);
        let d = routes.upsert(route("bob-2", RouteStatus::Live));
        assert!(d.is_empty());

        let d = routes.replace(vec![
            route("bob-2", RouteStatus::Live),
            route("carol", RouteStatus::Live),
        ]);
        assert_eq!(
            d,
            RouteDiff {
                added: vec!["carol".into()],
                removed: vec!["alice".into()],
                changed: vec![],
            }
        );
        let d = routes.remove("carol");
        assert_eq!(d.removed, vec!["carol"]);
        assert!(routes.remove("carol").is_empty());
    }
}
