//! roost: a web hosting service in one privileged daemon.
//!
//! This file is the codemap: one line per module. Arrows point one way:
//! `api → hosting → (vm, net, cloudinit, proxy, forward) → store` (all of them in
//! ARCHITECTURE.md).

/// Plain address types (subnet, network, port range, interface name, VM uid), pure.
pub mod addr;
/// axum routes, JSON errors, OpenAPI; the only place with HTTP serde types.
pub mod api;
/// argon2id passwords, JWT issue/verify, username rules, login rate limits.
pub mod auth;
/// `roost check`: the preflight report of what this host can run.
pub mod check;
/// The operator's commands: run through the daemon's control socket or on the store.
pub mod cli;
/// NoCloud documents as data and the `cidata` seed image writer.
pub mod cloudinit;
/// TOML configuration with embedded defaults; every key validated by name.
pub mod config;
/// The operator's requests, the root-only control socket, and the code that runs them.
pub mod control;
/// `roost serve`: wiring of config, store, listeners, signals and sd_notify.
pub mod daemon;
/// The guests' caching DNS forwarder on the bridge gateway (hickory), per-client rate.
pub mod dns;
/// Users' own domains: claims, DNS verification, re-checks, routes and certificates.
pub mod domains;
/// The SSH TCP forwarder: one listener per hosting port, caps per port and address.
pub mod forward;
/// The create/delete saga, the VM supervisor and the reconciler.
pub mod hosting;
/// When bytes last moved, and the idle watchdog (forwarder and HTTP tunnels).
pub(crate) mod idle;
/// Prometheus metrics: the registry, the instruments, `/metrics` and its own listener.
pub mod metrics;
/// Bridge and taps over netlink and tun ioctls; MAC addresses; the firewall.
pub mod net;
/// Whether anyone uses a site, and the doorbell that wakes a sleeping one (proxy, forwarder
/// and actor share it).
pub mod presence;
/// Route table (pure) and the HTTP reverse proxy.
pub mod proxy;
/// The only code that opens redb: tables, typed records, transactions, schema.
pub mod store;
/// Named background tasks with one shutdown signal.
pub mod tasks;
/// HTTPS: certificates by SNI, DNS-name rules, ACME issuance and its challenges.
pub mod tls;
/// QEMU argv (pure), process spawn/adopt, QMP client, overlay disks.
pub mod vm;

/// mimalloc instead of glibc malloc for every binary and test: the proxy allocates and
/// frees small buffers per request on several threads.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `a: b: c` from an error and its sources: how errors are logged and shown as reasons.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
