//! The proxy: routes HTTP and SSH from the internet to the VMs.
//!
//! It owns the route table (pure, swapped atomically: [`Routes`]) and the HTTP reverse proxy
//! that shares one listener with the API ([`serve_http`]). The SSH forwarder is its own
//! module (`crate::forward`). It knows nothing of users, the store or QEMU: the hosting
//! module tells it which slug goes where. It terminates TLS with the rustls configuration
//! it is given (certificates are `crate::tls`'s), answers ACME HTTP-01 challenges through
//! the lookup it is given, and redirects plain HTTP to HTTPS when told to.

mod deadline;
mod framing;
mod headers;
mod http;
mod pages;
mod routes;
mod upstream;

use std::time::Duration;

pub use headers::{set_forwarded, strip_hop_by_hop, wants_upgrade, Forwarding};
pub use http::{serve, serve_http, Listeners};
pub use routes::{
    resolve, split_port, valid_slug, Resolution, Route, RouteCache, RouteDiff, RouteStatus,
    RouteTable, Routes, RESERVED_SEGMENTS, RETRY_AFTER_SECS,
};

/// Settings of the HTTP side. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The public domain: `<slug>.DOMAIN` is host-routed, `DOMAIN/<slug>/` path-routed.
    pub domain: String,
    /// A request head must arrive completely within this time (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Connecting to a VM's web server gives up after this.
    pub connect_timeout: Duration,
    /// Idle pooled connections to VMs are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per VM.
    pub pool_max_idle_per_host: usize,
    /// How long shutdown waits for in-flight requests before it drops them.
    pub drain_timeout: Duration,
    /// Threads serving HTTP connections, each with its own runtime and VM pools.
    pub workers: usize,
    /// Open connections one client address may hold; the next ones are closed at once.
    pub max_conns_per_address: usize,
    /// Open client connections in total; beyond, new ones are closed at once, so a flood
    /// cannot take the file descriptors that VM management needs.
    pub max_conns: usize,
    /// A request body that sends nothing for this long is cut (408 when nothing was
    /// answered yet; nginx's `client_body_timeout`).
    pub body_timeout: Duration,
    /// A VM that sends no response head, or nothing of a response body, for this long
    /// is given up (504 before the head; nginx's `proxy_read_timeout`).
    pub upstream_timeout: Duration,
    /// A client that takes no byte of its response for this long is disconnected
    /// (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// An upgraded (WebSocket) tunnel with no byte in either direction for this long is
    /// closed. It stays counted against the connection caps while open.
    pub tunnel_idle_timeout: Duration,
    /// What plain HTTP does when HTTPS is on; `None`: HTTPS is off.
    pub https: Option<HttpsPolicy>,
    /// Where requests are counted and timed (by default, instruments no registry reads).
    pub metrics: crate::metrics::HttpMetrics,
    /// The dashboard's own host name (`console.DOMAIN`): every request to it goes to the
    /// API router, marked [`Transport::console`], before any site routing.
    pub console_host: Option<String>,
    /// A request to a sleeping site waits at most this long for its VM to wake, then gets
    /// the "starting" page.
    pub wake_timeout: Duration,
}

/// How an API request reached roost, as a request extension: `secure` when over TLS.
/// Absent on requests that did not come through the listener (in-process tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    pub secure: bool,
    /// The request named the dashboard's host (`console.DOMAIN`): only there do browser
    /// sessions count and the dashboard's pages exist.
    pub console: bool,
}

/// How the plain-HTTP side behaves while HTTPS is served.
#[derive(Debug, Clone)]
pub struct HttpsPolicy {
    /// The port HTTPS answers on (redirects name it unless it is 443).
    pub port: u16,
    /// Plain requests from non-loopback clients get a 308 to the same URL over HTTPS
    /// (ACME challenges excepted).
    pub redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security` (unless a site sets its own).
    pub hsts: bool,
    /// The key authorization for an HTTP-01 token, answered on plain HTTP before routing.
    pub http01: Http01,
}

/// The key authorization pending for an HTTP-01 token, if any.
pub type Http01Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// A lookup of pending ACME HTTP-01 answers by token.
#[derive(Clone)]
pub struct Http01(pub std::sync::Arc<Http01Lookup>);

impl std::fmt::Debug for Http01 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http01")
    }
}

impl ProxyConfig {
    pub fn new(domain: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            domain: domain.into(),
            ..ProxyConfig::default()
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            domain: "localhost".into(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(3),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 64,
            drain_timeout: Duration::from_secs(10),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_conns_per_address: 256,
            max_conns: 16384,
            body_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(600),
            https: None,
            metrics: crate::metrics::HttpMetrics::default(),
            console_host: None,
            wake_timeout: Duration::from_secs(15),
        }
    }
}
