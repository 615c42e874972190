//! `roost serve`: wires config, store, accounts and the HTTP listener; handles signals and
//! tells systemd when it is ready.
//!
//! Shutdown (SIGTERM, SIGINT) stops accepting, drains requests and returns. It never stops
//! a VM: QEMU processes run in their own sessions and are adopted by the next start.

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState, ReadinessState};
use crate::auth::{jwt, Auth};
use crate::config::Config;
use crate::control;
use crate::forward;
use crate::hosting;
use crate::proxy;
use crate::store::Store;

/// Creates the state directory if needed, and makes it exactly 0711 whatever made it
/// before: nobody but root may list or read it (it holds password hashes, the JWT secret
/// and every VM's disk), and each QEMU, running as its VM's own uid, may pass through to
/// its own 0700 directory under `vms/`.
pub fn prepare_state_dir(cfg: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &cfg.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create state_dir {}", dir.display()))?;
    tighten(dir, STATE_DIR_MODE)?;
    // A directory made 0700 (by an older roost or `roost check`) must let QEMUs through.
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.permissions().mode() & 0o7777 != STATE_DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(STATE_DIR_MODE))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    Ok(())
}

/// The state directory's mode (see [`prepare_state_dir`]).
pub const STATE_DIR_MODE: u32 = crate::hosting::paths::VMS_DIR_MODE;

/// Restricts the files made before the modes were enforced (redb creates its file 0644).
pub fn tighten_state_files(cfg: &Config) -> anyhow::Result<()> {
    for f in ["roost.redb", "jwt.secret"] {
        tighten(&cfg.state_dir.join(f), 0o600)?;
    }
    Ok(())
}

/// Sets `path`'s mode to `mode` when it allows more; says so when it did.
fn tighten(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let was = meta.permissions().mode() & 0o7777;
    if was & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        tracing::warn!(path = %path.display(), was = format!("{was:o}"), now = format!("{mode:o}"), "restricted the mode of a state file");
    }
    Ok(())
}

/// Held for the daemon's life: one daemon per state directory.
pub struct DaemonLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

/// Takes `state_dir/roost.pid` exclusively and writes this PID into it; refuses with the
/// holder's PID when another daemon has it.
pub fn lock_state_dir(cfg: &Config) -> anyhow::Result<DaemonLock> {
    use std::io::{Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = cfg.state_dir.join("roost.pid");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(f) => f,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "state_dir {} is in use by another roost daemon (PID {}); stop it first",
                cfg.state_dir.display(),
                holder.trim()
            );
        }
        Err((_, e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
    };
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DaemonLock { _file: file })
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Before anything holds descriptors: VM adoption, forwarders and clients all count.
    let fds = raise_fd_limit();
    prepare_state_dir(&cfg)?;
    let _lock = lock_state_dir(&cfg)?;
    let store = Store::open(&cfg.state_dir)?;
    let secret = jwt::load_or_create_secret(&cfg.state_dir)?;
    tighten_state_files(&cfg)?;
    let auth = Arc::new(Auth::new(store.clone(), &secret, &cfg));
    let cfg = Arc::new(cfg);
    let routes = proxy::Routes::new(Vec::new());
    // The operator's metrics: instruments for the proxy, the forwarders and the hostings.
    let metrics = crate::metrics::Metrics::new();
    let forwarders =
        forward::Forwarders::new(std::net::Ipv4Addr::UNSPECIFIED)?.with_metrics(metrics.ssh());
    // Bridge, firewall, image, accelerator; then routes from the store, adoption of running
    // VMs and the reconciler. Without root or an image, the API still serves accounts.
    let tasks = crate::tasks::Tasks::default();
    let hostings = hosting::start(
        cfg.clone(),
        store.clone(),
        routes.clone(),
        forwarders,
        metrics.lifecycle(),
        &tasks,
    )
    .await;
    metrics.add_source(Arc::new(hostings.clone()));
    let readiness = Arc::new(ReadinessState::new(match hostings.disabled_reason() {
        Some(r) => format!("disabled: {r}"),
        None => "ok".to_owned(),
    }));
    // The operator's CLI talks to the running daemon here (root only).
    let control_socket = control::server::bind(&control::socket_path(&cfg.state_dir))?;
    let ops = Arc::new(control::Ops::live(
        cfg.clone(),
        store.clone(),
        auth.clone(),
        hostings.clone(),
    ));
    let control_task = tokio::spawn(control::server::serve(control_socket, ops));
    let domains = crate::domains::Domains::new(cfg.clone(), store.clone(), routes.clone());
    if let Err(e) = domains.publish() {
        tracing::warn!(error = %e, "custom domain routes not published");
    }
    {
        let d = domains.clone();
        tasks.every(
            "domain-recheck",
            Duration::from_secs(cfg.domains.recheck_secs),
            move || {
                let d = d.clone();
                async move { d.recheck().await }
            },
        );
    }
    let https = if cfg.https.enabled {
        Some(
            crate::tls::manager::start(cfg.clone(), domains.verified_names(), &tasks)
                .await
                .context("https")?,
        )
    } else {
        None
    };
    // The certificates being served, for their expiry.
    if let Some(h) = &https {
        let certs = h.store.clone();
        metrics.add_source(crate::metrics::certificates(move || {
            certs
                .infos()
                .into_iter()
                .map(|c| (c.slot, c.not_after))
                .collect()
        }));
    }
    let state = AppState {
        cfg: cfg.clone(),
        store,
        auth: auth.clone(),
        readiness,
        hostings,
        domains: domains.clone(),
        https: https.clone(),
        metrics: metrics.clone(),
    };

    let listener = TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, domain = %cfg.domain, "listening");
    let mut pcfg = proxy_config(&cfg, fds);
    pcfg.metrics = metrics.http();
    // `[metrics] listen`: the same body without authentication, for a Prometheus on the host.
    let metrics_task = match cfg.metrics.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            tracing::info!(addr = %l.local_addr()?, "listening (metrics)");
            let m = metrics.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(l, m, std::future::pending()).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }))
        }
        None => None,
    };
    let tls = match https {
        Some(https) => {
            let l = TcpListener::bind(cfg.https.listen)
                .await
                .with_context(|| format!("cannot listen on {} (https.listen)", cfg.https.listen))?;
            tracing::info!(addr = %l.local_addr()?, "listening (https)");
            let challenges = https.challenges.clone();
            pcfg.https = Some(proxy::HttpsPolicy {
                port: l.local_addr()?.port(),
                redirect: cfg.https.redirect,
                hsts: cfg.https.hsts,
                http01: proxy::Http01(Arc::new(move |token| challenges.http01(token))),
            });
            Some((l, https.server_config))
        }
        None => None,
    };

    tasks.every("housekeeping", Duration::from_secs(60), move || {
        auth.prune();
        std::future::ready(())
    });

    // Tell systemd (Type=notify) that we accept connections; a no-op outside systemd.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }

    let app = api::app(state);
    // One listener for the API and every site (and one for HTTPS): the proxy resolves
    // each request and hands API requests (with the peer address) to the axum router.
    proxy::serve(
        proxy::Listeners {
            plain: listener,
            tls,
        },
        app,
        routes,
        pcfg,
        shutdown_signal(),
    )
    .await;
    tasks.shutdown(TASK_GRACE).await;
    // Dropping the serve task drops the socket, which removes its file.
    control_task.abort();
    let _ = control_task.await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped; VMs keep running");
    Ok(())
}

/// How long background tasks get to finish a pass at shutdown.
const TASK_GRACE: Duration = Duration::from_secs(10);

/// File descriptors kept for VM management (taps, QMP sockets, pidfds, disks, SSH
/// forwards, nft, the store) whatever the HTTP side holds.
const FD_RESERVE: u64 = 4096;

/// Raises the soft limit on open files to the hard one (systemd's `LimitNOFILE`); returns
/// the limit in force.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            1024
        }
    }
}

/// The proxy's settings: client connections in total stay below the open-file limit
/// minus [`FD_RESERVE`], so a flood of connections never stops VM management.
fn proxy_config(cfg: &Config, fd_limit: u64) -> proxy::ProxyConfig {
    let mut p = proxy::ProxyConfig::new(cfg.domain.clone());
    p.console_host = Some(cfg.console_host());
    let budget = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    p.max_conns = cfg.http.max_conns.min(budget.max(64));
    p.max_conns_per_address = cfg.http.max_conns_per_address;
    p.body_timeout = Duration::from_secs(cfg.http.body_timeout_secs);
    p.upstream_timeout = Duration::from_secs(cfg.http.upstream_timeout_secs);
    p.send_timeout = Duration::from_secs(cfg.http.send_timeout_secs);
    p.tunnel_idle_timeout = Duration::from_secs(cfg.http.tunnel_idle_secs);
    p.wake_timeout = Duration::from_secs(cfg.vm.wake_timeout_secs);
    tracing::info!(
        fd_limit,
        max_conns = p.max_conns,
        per_address = p.max_conns_per_address,
        "http connection caps"
    );
    p
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
