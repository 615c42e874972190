//! The guests' DNS resolver: a small caching forwarder on the bridge's gateway address
//! (the role libvirt gives dnsmasq).
//!
//! Guests are told to use the gateway (e.g. `10.88.0.1`) as their DNS server; this module
//! answers there, over UDP and TCP, by forwarding to the host's own resolvers through
//! `hickory-resolver` and its cache. It owns: the listening sockets (bound by `start`,
//! closed by `shutdown` or drop), the per-client rate limiter (`limit.rs`), the answer
//! policy (`handler.rs`) and reading the host's upstreams (`upstreams.rs`). It knows no
//! users, hostings, store or firewall: the caller gives it a `DnsPlan`.
//!
//! What it must not do, and why:
//! - It never answers a source outside `DnsPlan::allow` (REFUSED, nothing forwarded): an
//!   open resolver on the host would be an amplification reflector and would leak the
//!   host's upstreams to the world.
//! - It never forwards a refused query (outside the subnet, or over the client's rate):
//!   a guest must not be able to make the host flood its upstreams, and refusing must stay
//!   cheap (no lookup, no allocation that grows per query).
//! - It never logs per query above debug level: every query, refusal and upstream failure
//!   is triggered by guests, and an attacker must not be able to flood the journal. The
//!   hickory crates log every response at info level; `QUIET_LOGS` are the tracing
//!   directives that silence them and must be added to the daemon's filter.
//! - It never reads `/etc/hosts`, and never forwards to its own address (`host_upstreams`
//!   drops the gateway, `start` refuses a plan that lists its own listen address), so it
//!   cannot answer from the host's private names or loop into itself.

mod handler;
pub(crate) mod limit;
pub mod serving;
mod upstreams;

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::Resolver;

use crate::addr::Ipv4Net;

pub use upstreams::{host_upstreams, upstreams_from_resolv_conf, RESOLV_CONF};

use handler::{Counters, Forwarder};
use limit::ClientLimiter;

/// How long one upstream round may take before the guest gets SERVFAIL. Each upstream is
/// tried once (UDP retransmits inside this window); the guest's own resolver retries.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// `tracing` directives for the daemon's filter: the hickory crates log every response at
/// info and some guest-triggered conditions at warn, which would let guests flood the
/// journal. This module's own logs (`roost::dns`) are unaffected.
pub const QUIET_LOGS: [&str; 4] = [
    "hickory_server=error",
    "hickory_net=error",
    "hickory_resolver=error",
    "hickory_proto=error",
];

/// Errors of the DNS forwarder. Messages are short; causes are in `source`.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS plan: {0}")]
    InvalidPlan(&'static str),
    #[error("no upstream DNS server in {} (besides this host's own resolver address)", path.display())]
    NoUpstreams { path: PathBuf },
    #[error("cannot read {}", path.display())]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bind(#[from] serving::BindError),
    #[error("cannot build the upstream resolver")]
    Resolver(#[source] NetError),
}

/// What the forwarder serves, where and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPlan {
    /// Where to listen, UDP and TCP on the same port (e.g. `10.88.0.1:53`).
    pub listen: SocketAddr,
    /// Only sources in this subnet get answers; everyone else gets REFUSED.
    pub allow: Ipv4Net,
    /// The host's resolvers (see `host_upstreams`).
    pub upstreams: Vec<SocketAddr>,
    /// Sustained queries per second per source address ...
    pub per_client_qps: u32,
    /// ... above a burst of this many; past it: REFUSED, counted, never forwarded.
    pub per_client_burst: u32,
    /// Responses kept in the cache (each for its TTL).
    pub cache_size: usize,
}

/// Counters since `start`, for status output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries answered from the cache or the upstreams (NOERROR, NXDOMAIN or NODATA).
    pub resolved: u64,
    /// Queries whose lookup failed upstream: answered SERVFAIL.
    pub upstream_failures: u64,
    /// Queries from outside `allow`: REFUSED.
    pub refused_outside: u64,
    /// Queries over their client's rate: REFUSED.
    pub refused_over_rate: u64,
}

/// The running forwarder. `shutdown` stops it and waits; dropping it stops it too (the
/// sockets close once the serving tasks have seen the signal).
pub struct DnsServer {
    serving: serving::Serving,
    counters: Arc<Counters>,
}

impl DnsServer {
    /// Binds UDP and TCP on `plan.listen`, builds the resolver and starts serving on the
    /// current tokio runtime.
    pub async fn start(plan: DnsPlan) -> Result<DnsServer, DnsError> {
        let limiter = ClientLimiter::new(plan.per_client_qps, plan.per_client_burst).ok_or(
            DnsError::InvalidPlan("per_client_qps and per_client_burst must be at least 1"),
        )?;
        let resolver = build_resolver(&plan)?;
        let counters = Arc::new(Counters::default());
        let forwarder = Forwarder::new(plan.allow, limiter, resolver, counters.clone());
        let serving =
            serving::Serving::start(plan.listen, forwarder, TCP_RESPONSE_BUFFER, "DNS forwarder")
                .await?;
        tracing::info!(
            listen = %serving.local_addr(),
            allow = %plan.allow,
            upstreams = ?plan.upstreams,
            "DNS forwarder serving"
        );
        Ok(DnsServer { serving, counters })
    }

    /// The bound address (the chosen port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// The counters so far.
    pub fn stats(&self) -> DnsStats {
        let c = &self.counters;
        DnsStats {
            resolved: c.resolved.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
            refused_outside: c.refused_outside.load(Ordering::Relaxed),
            refused_over_rate: c.refused_over_rate.load(Ordering::Relaxed),
        }
    }

    /// Stops serving and waits until both sockets are closed. Queries in flight are dropped.
    pub async fn shutdown(self) {
        self.serving.shutdown().await
    }
}

fn build_resolver(plan: &DnsPlan) -> Result<Resolver<TokioRuntimeProvider>, DnsError> {
    if plan.upstreams.is_empty() {
        return Err(DnsError::InvalidPlan("no upstream DNS server"));
    }
    let itself = |up: &SocketAddr| {
        up.port() == plan.listen.port() && up.ip().to_canonical() == plan.listen.ip().to_canonical()
    };
    if plan.upstreams.iter().any(itself) {
        return Err(DnsError::InvalidPlan(
            "an upstream is the forwarder's own address",
        ));
    }
    let servers = plan
        .upstreams
        .iter()
        .map(|up| {
            let mut udp = ConnectionConfig::udp();
            udp.port = up.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = up.port();
            NameServerConfig::new(up.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.timeout = UPSTREAM_TIMEOUT;
    // Retries after a failed round: none; the guest's stub resolver retries by itself.
    opts.attempts = 0;
    opts.cache_size = u64::try_from(plan.cache_size).unwrap_or(u64::MAX);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    let config = ResolverConfig::from_parts(None, vec![], servers);
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(DnsError::Resolver)
}
