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
use crate::hosting;
use crate::proxy;
use crate::store::Store;

/// Creates the state directory (mode 0700) if needed.
pub fn prepare_state_dir(cfg: &Config) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .with_context(|| format!("cannot create state_dir {}", cfg.state_dir.display()))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    prepare_state_dir(&cfg)?;
    let store = Store::open(&cfg.state_dir)?;
    let secret = jwt::load_or_create_secret(&cfg.state_dir)?;
    let auth = Arc::new(Auth::new(store.clone(), &secret, &cfg));
    let cfg = Arc::new(cfg);
    let routes = proxy::Routes::new(Vec::new());
    let forwarders = proxy::Forwarders::new(std::net::Ipv4Addr::UNSPECIFIED);
    // Bridge, firewall, image, accelerator; then routes from the store, adoption of running
    // VMs and the reconciler. Without root or an image, the API still serves accounts.
    let hostings = hosting::start(cfg.clone(), store.clone(), routes.clone(), forwarders).await;
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
    let state = AppState {
        cfg: cfg.clone(),
        store,
        auth: auth.clone(),
        readiness,
        hostings,
    };

    let listener = TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", cfg.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, domain = %cfg.domain, "listening");

    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            auth.prune();
        }
    });

    // Tell systemd (Type=notify) that we accept connections; a no-op outside systemd.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }

    let app = api::app(state);
    // One listener for the API and every site: the proxy resolves each request and hands
    // API requests (with the peer address) to the axum router.
    proxy::serve_http(
        listener,
        app,
        routes,
        proxy::ProxyConfig::new(cfg.domain.clone()),
        shutdown_signal(),
    )
    .await;
    housekeeping.abort();
    // Dropping the serve task drops the socket, which removes its file.
    control_task.abort();
    let _ = control_task.await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped; VMs keep running");
    Ok(())
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
