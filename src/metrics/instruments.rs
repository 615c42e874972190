//! The instruments other modules update as things happen: HTTP requests (the proxy), SSH
//! forwards and connections (the forwarder), boot and creation times and crashes (the
//! hostings' actors). Every label set is fixed and made at start, so recording is an
//! atomic add (a histogram also takes its own short lock) and never allocates.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the HTTP latency buckets, in seconds.
pub const HTTP_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds of the boot-time buckets (QEMU start to readiness), in seconds: a KVM
/// guest answers in seconds, a TCG one in minutes.
pub const BOOT_BUCKETS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 600.0,
];
/// Upper bounds of the creation-time buckets (request to running), in seconds.
pub const CREATE_BUCKETS: [f64; 15] = [
    5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0,
];

/// Who answered an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpKind {
    /// The API router (`/api/…`, `/healthz`, `/metrics`, the dashboard).
    Api,
    /// A user's site: proxied to its VM, or its "starting"/"down" page or slash redirect.
    Site,
    /// roost itself, for no site: unknown names, the redirect to HTTPS, ACME challenges,
    /// requests refused for their framing.
    Other,
}

impl HttpKind {
    const ALL: [HttpKind; 3] = [HttpKind::Api, HttpKind::Site, HttpKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpKind::Api => "api",
            HttpKind::Site => "site",
            HttpKind::Other => "other",
        }
    }
}

/// The `code` label: status classes, so the label set is fixed and small.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of `status`'s class in [`CLASSES`] (anything past 5xx counts as 5xx).
pub(super) fn class(status: u16) -> usize {
    match status {
        0..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Requests and their latency, by kind and status class. Cheap to clone.
#[derive(Clone)]
pub struct HttpMetrics {
    inner: Arc<HttpInner>,
}

#[derive(Debug)]
struct HttpInner {
    /// By [`HttpKind`], then by class ([`CLASSES`]).
    requests: [[Counter; 5]; 3],
    seconds: [[Histogram; 5]; 3],
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpMetrics")
    }
}

/// Instruments not registered anywhere (tests, a proxy started without a registry).
impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics::register(&mut Registry::default())
    }
}

/// Encodes the arrays as two families in a fixed order (kind, then class).
#[derive(Debug)]
struct HttpCollector(Arc<HttpInner>);

impl Collector for HttpCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels =
            |k: usize, c: usize| [("kind", HttpKind::ALL[k].as_str()), ("code", CLASSES[c])];
        let mut family = enc.encode_descriptor(
            "roost_http_requests",
            "HTTP requests answered, by who answered (kind) and status class (code).",
            None,
            MetricType::Counter,
        )?;
        for (k, by_class) in self.0.requests.iter().enumerate() {
            for (c, m) in by_class.iter().enumerate() {
                m.encode(family.encode_family(&labels(k, c))?)?;
            }
        }
        let mut family = enc.encode_descriptor(
            "roost_http_request_duration",
            "Time from a request's head to its response's head, by kind and status class.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (k, by_class) in self.0.seconds.iter().enumerate() {
            for (c, m) in by_class.iter().enumerate() {
                m.encode(family.encode_family(&labels(k, c))?)?;
            }
        }
        Ok(())
    }
}

impl HttpMetrics {
    pub(super) fn register(registry: &mut Registry) -> HttpMetrics {
        let inner = Arc::new(HttpInner {
            requests: Default::default(),
            seconds: std::array::from_fn(|_| std::array::from_fn(|_| Histogram::new(HTTP_BUCKETS))),
        });
        registry.register_collector(Box::new(HttpCollector(inner.clone())));
        HttpMetrics { inner }
    }

    /// One request answered with `status` after `elapsed`.
    pub fn observe(&self, kind: HttpKind, status: u16, elapsed: Duration) {
        let (k, c) = (kind as usize, class(status));
        self.inner.requests[k][c].inc();
        self.inner.seconds[k][c].observe(elapsed.as_secs_f64());
    }
}

/// Why the forwarder closed a new SSH connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshRefusal {
    /// The client address opened too many connections this minute.
    RateLimited,
    /// The port holds its cap of live connections.
    PortFull,
    /// The client address holds its share of the port.
    AddressFull,
}

const SSH_RESULTS: [&str; 4] = ["accepted", "rate_limited", "port_full", "address_full"];

/// SSH forwards and their connections. Cheap to clone.
#[derive(Clone)]
pub struct SshMetrics {
    inner: Arc<SshInner>,
}

#[derive(Debug)]
struct SshInner {
    forwards: Gauge,
    open: Gauge,
    /// By [`SSH_RESULTS`].
    connections: [Counter; 4],
}

impl std::fmt::Debug for SshMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SshMetrics")
    }
}

/// Instruments not registered anywhere (tests, forwarders without a registry).
impl Default for SshMetrics {
    fn default() -> Self {
        SshMetrics::register(&mut Registry::default())
    }
}

/// Encodes the connection counters in a fixed order.
#[derive(Debug)]
struct SshCollector(Arc<SshInner>);

impl Collector for SshCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = enc.encode_descriptor(
            "roost_ssh_connections",
            "New SSH connections: accepted, or closed at once and why.",
            None,
            MetricType::Counter,
        )?;
        for (result, m) in SSH_RESULTS.iter().zip(&self.0.connections) {
            m.encode(family.encode_family(&[("result", *result)])?)?;
        }
        Ok(())
    }
}

/// A live forwarded connection: counted in the open-connections gauge until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl SshMetrics {
    pub(super) fn register(registry: &mut Registry) -> SshMetrics {
        let inner = Arc::new(SshInner {
            forwards: Gauge::default(),
            open: Gauge::default(),
            connections: Default::default(),
        });
        registry.register(
            "roost_ssh_forwards",
            "SSH ports listening (one per hosting whose VM runs)",
            inner.forwards.clone(),
        );
        registry.register(
            "roost_ssh_open_connections",
            "SSH connections being forwarded now",
            inner.open.clone(),
        );
        registry.register_collector(Box::new(SshCollector(inner.clone())));
        SshMetrics { inner }
    }

    /// `n` ports are forwarded now.
    pub fn set_forwards(&self, n: usize) {
        self.inner
            .forwards
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A new connection is forwarded; it counts as open until the guard is dropped.
    pub fn accepted(&self) -> OpenConnection {
        self.inner.connections[0].inc();
        self.inner.open.inc();
        OpenConnection(self.inner.open.clone())
    }

    /// A new connection was closed at once.
    pub fn refused(&self, why: SshRefusal) {
        let i = match why {
            SshRefusal::RateLimited => 1,
            SshRefusal::PortFull => 2,
            SshRefusal::AddressFull => 3,
        };
        self.inner.connections[i].inc();
    }
}

/// How long hostings take to come up, and how often their QEMU crashes. Cheap to clone.
#[derive(Clone)]
pub struct LifecycleMetrics {
    inner: Arc<LifecycleInner>,
}

struct LifecycleInner {
    boot: Histogram,
    create: Histogram,
    crashes: Counter,
}

impl std::fmt::Debug for LifecycleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LifecycleMetrics")
    }
}

/// Instruments not registered anywhere (tests).
impl Default for LifecycleMetrics {
    fn default() -> Self {
        LifecycleMetrics::register(&mut Registry::default())
    }
}

impl LifecycleMetrics {
    pub(super) fn register(registry: &mut Registry) -> LifecycleMetrics {
        let boot = Histogram::new(BOOT_BUCKETS);
        let create = Histogram::new(CREATE_BUCKETS);
        registry.register_with_unit(
            "roost_hosting_boot_duration",
            "Time from a QEMU start to the guest answering on :80 and :22",
            Unit::Seconds,
            boot.clone(),
        );
        registry.register_with_unit(
            "roost_hosting_create_duration",
            "Time from a creation request to the new hosting running",
            Unit::Seconds,
            create.clone(),
        );
        let crashes = Counter::default();
        registry.register(
            "roost_hosting_crashes",
            "QEMU exits roost did not ask for and the guest did not announce (crashes, kills from outside), over all hostings",
            crashes.clone(),
        );
        LifecycleMetrics {
            inner: Arc::new(LifecycleInner {
                boot,
                create,
                crashes,
            }),
        }
    }

    /// A guest became ready `boot` after its QEMU started; `creation` when this was a new
    /// hosting's first boot: the time since it was requested.
    pub fn booted(&self, boot: Duration, creation: Option<Duration>) {
        self.inner.boot.observe(boot.as_secs_f64());
        if let Some(c) = creation {
            self.inner.create.observe(c.as_secs_f64());
        }
    }

    /// A hosting's QEMU exited without roost asking and without the guest powering off.
    pub fn crashed(&self) {
        self.inner.crashes.inc();
    }
}
