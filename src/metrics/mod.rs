//! Prometheus metrics for the operator: one registry (`prometheus-client`), the
//! instruments the other modules update as things happen, and the exposition of
//! `GET /metrics` (Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it).
//!
//! Two kinds of series:
//! - **Instruments** ([`HttpMetrics`], [`SshMetrics`], [`LifecycleMetrics`]), handed to
//!   the proxy, the SSH forwarder and the hostings' actors: atomic counters, gauges and
//!   histograms with fixed label sets, created once, so recording allocates nothing.
//! - **The snapshot** ([`Snapshot`]): per-VM figures, hostings by state, capacity and the
//!   state directory's file system, gathered at each scrape from the live list of hostings
//!   by a [`Source`] (`hosting` implements it), and the certificates being served (a
//!   second source, which the daemon builds over its certificate store), merged and
//!   encoded by a custom collector. A deleted VM's series are gone from the next scrape,
//!   since nothing keeps old label sets.
//!
//! A leaf: imports nothing of roost. `api` serves `/metrics` to administrators with
//! [`response`]; [`serve`] is the optional unauthenticated listener (`[metrics] listen`).

mod instruments;
mod snapshot;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use instruments::{
    HttpKind, HttpMetrics, LifecycleMetrics, OpenConnection, SshMetrics, SshRefusal,
};
pub use snapshot::{Capacity, Certificate, Snapshot, StateDir, VmSample};

/// Where the per-scrape figures come from (in the daemon: the hostings, and the
/// certificate store). Each fills its own part of the [`Snapshot`].
pub trait Source: Send + Sync + 'static {
    /// Its part of the snapshot, read now.
    fn snapshot(&self) -> BoxFuture<'_, Snapshot>;
}

/// A source of the certificates being served: `list` gives each one's slot and notAfter
/// (Unix seconds) at every scrape.
pub fn certificates<F>(list: F) -> Arc<dyn Source>
where
    F: Fn() -> Vec<(String, i64)> + Send + Sync + 'static,
{
    Arc::new(Certificates(list))
}

struct Certificates<F>(F);

impl<F> Source for Certificates<F>
where
    F: Fn() -> Vec<(String, i64)> + Send + Sync + 'static,
{
    fn snapshot(&self) -> BoxFuture<'_, Snapshot> {
        let certificates = (self.0)()
            .into_iter()
            .map(|(slot, not_after)| Certificate { slot, not_after })
            .collect();
        Box::pin(std::future::ready(Snapshot {
            certificates,
            ..Snapshot::default()
        }))
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (the default; what `promtool check metrics` reads).
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` names it.
    OpenMetrics,
}

/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// OpenMetrics when `accept` names it (Prometheus's scrapes do), else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The registry and its instruments. Cheap to clone: every clone is the same set.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http: HttpMetrics,
    ssh: SshMetrics,
    lifecycle: LifecycleMetrics,
    /// What scrapes read, in the order added.
    sources: Mutex<Vec<Arc<dyn Source>>>,
    /// The snapshot the collector encodes: written by a scrape just before it encodes.
    latest: Arc<Mutex<Snapshot>>,
    /// One scrape at a time, so a scrape encodes the snapshot it gathered.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every instrument, build information and the process start time.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let ssh = SshMetrics::register(&mut registry);
        let lifecycle = LifecycleMetrics::register(&mut registry);
        registry.register(
            "roost_build",
            "The running roost's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register_with_unit(
            "roost_process_start_time",
            "When the daemon started, in seconds since the Unix epoch",
            Unit::Seconds,
            start,
        );
        let latest = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(snapshot::Collector::new(latest.clone())));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http,
                ssh,
                lifecycle,
                sources: Mutex::new(Vec::new()),
                latest,
                scrape: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The proxy's instruments.
    pub fn http(&self) -> HttpMetrics {
        self.inner.http.clone()
    }

    /// The SSH forwarder's instruments.
    pub fn ssh(&self) -> SshMetrics {
        self.inner.ssh.clone()
    }

    /// The hostings' boot and creation times, and their crashes.
    pub fn lifecycle(&self) -> LifecycleMetrics {
        self.inner.lifecycle.clone()
    }

    /// Adds a source that every later scrape reads, after those added before; their
    /// snapshots are merged ([`Snapshot::merge`]). Without any, the snapshot series are
    /// absent.
    pub fn add_source(&self, source: Arc<dyn Source>) {
        lock(&self.inner.sources).push(source);
    }

    /// Gathers the snapshot and encodes every series in `format`.
    pub async fn render(&self, format: Format) -> String {
        let _one = self.inner.scrape.lock().await;
        let sources = lock(&self.inner.sources).clone();
        let mut snap = Snapshot::default();
        for s in sources {
            snap.merge(s.snapshot().await);
        }
        *lock(&self.inner.latest) = snap;
        let mut out = String::new();
        let encoded = match format {
            Format::Prometheus => prometheus_text::encode(&mut out, &self.inner.registry),
            Format::OpenMetrics => text::encode(&mut out, &self.inner.registry),
        };
        if let Err(e) = encoded {
            // Only a failing writer errs, and a String does not fail.
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `/metrics` answer for a request with `headers`: the body in the format its
/// `Accept` asks for, with that `Content-Type`.
pub async fn response(metrics: &Metrics, headers: &HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = metrics.render(format).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response()
}

/// The separate, unauthenticated metrics listener (`[metrics] listen`): `GET /metrics` and
/// nothing else, until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    async fn get(
        axum::extract::State(m): axum::extract::State<Metrics>,
        headers: HeaderMap,
    ) -> Response {
        response(&m, &headers).await
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(get))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
