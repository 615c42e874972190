//! The HTTP listener shared by the API and the reverse proxy.
//!
//! Each request is resolved against a snapshot of the route table: API requests go to the
//! axum router (with `ConnectInfo` so its rate limiter sees the real peer), site requests
//! are proxied to the VM over pooled keep-alive connections, with bodies streamed both ways
//! and `Upgrade` (WebSocket) requests tunnelled. Errors are answered by side: the VM failing
//! gives 502, a bad request 400, a client that is gone gets nothing.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::framing::Sniffed;
use super::headers::{self, Forwarding};
use super::pages::{self, Page};
use super::routes::{resolve, Resolution, Route, RouteStatus, Routes};
use super::ProxyConfig;

type UpstreamClient = Client<HttpConnector, Incoming>;

struct Shared {
    api: axum::Router,
    routes: Routes,
    cfg: ProxyConfig,
    /// One keep-alive pool per site and VM generation (see [`Route::generation`]).
    clients: std::sync::RwLock<std::collections::HashMap<String, (u64, UpstreamClient)>>,
}

impl Shared {
    fn new_client(&self) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.cfg.pool_idle_timeout)
            .pool_max_idle_per_host(self.cfg.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector)
    }

    /// The pool for this route's current generation; a new generation replaces (and so
    /// closes) the pool of the previous boot.
    fn client(&self, route: &Route) -> UpstreamClient {
        if let Ok(map) = self.clients.read() {
            if let Some((g, c)) = map.get(&route.slug) {
                if *g == route.generation {
                    return c.clone();
                }
            }
        }
        let c = self.new_client();
        if let Ok(mut map) = self.clients.write() {
            // Forget pools of sites that are gone, so the map stays bounded.
            let table = self.routes.snapshot();
            if map.len() > 2 * table.len() + 16 {
                map.retain(|slug, _| table.get(slug).is_some());
            }
            map.insert(route.slug.clone(), (route.generation, c.clone()));
        }
        c
    }
}

/// Serves the API and every site on `listener` until `shutdown` completes, then stops
/// accepting and drains in-flight requests for up to `cfg.drain_timeout`.
///
/// Route changes made through `routes` apply to the next request; they never touch open
/// connections. Tunnelled (upgraded) connections are not drained: they end with the process.
pub async fn serve_http(
    listener: TcpListener,
    api: axum::Router,
    routes: Routes,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192));

    let shared = Arc::new(Shared {
        api,
        routes,
        cfg,
        clients: Default::default(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let (stream, ambiguous) = Sniffed::new(stream);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let refuse = req.headers().contains_key(header::TRANSFER_ENCODING)
                && ambiguous.swap(false, Ordering::Relaxed);
            handle(shared.clone(), peer, req, refuse)
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = shared.cfg.drain_timeout;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "http drain timed out; dropping remaining connections"
        );
    }
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    ambiguous_framing: bool,
) -> Result<Response<Body>, Infallible> {
    if ambiguous_framing {
        tracing::info!(%peer, "refused: Content-Length with Transfer-Encoding");
        let mut resp = pages::render(Page::BadRequest, req.headers());
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(resp);
    }
    let table = shared.routes.snapshot();
    let host: Option<String> = match req.uri().authority() {
        Some(a) => Some(a.as_str().to_string()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string),
    };
    let raw = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| req.uri().path());
    let resolution = resolve(
        &table,
        req.method(),
        raw,
        host.as_deref(),
        &shared.cfg.domain,
    );
    drop(table);
    Ok(match resolution {
        Resolution::Api => {
            req.extensions_mut().insert(ConnectInfo(peer));
            match shared.api.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
        Resolution::Redirect(to) => pages::redirect(&to),
        Resolution::NoSite => pages::render(Page::NoSite, req.headers()),
        Resolution::Unavailable {
            retry_after: Some(s),
            ..
        } => pages::render(Page::Starting { retry_after: s }, req.headers()),
        Resolution::Unavailable { .. } => pages::render(Page::Down, req.headers()),
        Resolution::Proxy {
            route,
            upstream_path,
            prefix,
        } => {
            proxy(
                &shared,
                peer,
                req,
                &route,
                &upstream_path,
                prefix.as_deref(),
                host.as_deref(),
            )
            .await
        }
    })
}

async fn proxy(
    shared: &Shared,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    route: &Route,
    upstream_path: &str,
    prefix: Option<&str>,
    host: Option<&str>,
) -> Response<Body> {
    let Some(upstream) = route.upstream.filter(|_| route.status == RouteStatus::Live) else {
        return pages::render(Page::BadGateway, req.headers());
    };
    let uri: Uri = match format!("http://{upstream}{upstream_path}").parse() {
        Ok(u) => u,
        Err(_) => return pages::render(Page::BadRequest, req.headers()),
    };
    let upgrade = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let accept = parts.headers.get(header::ACCEPT).cloned();
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(
        &mut parts.headers,
        Forwarding {
            peer: peer.ip(),
            host,
            prefix,
        },
    );
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
            parts.headers.insert(header::HOST, h);
        }
    }

    let mut resp = match shared
        .client(route)
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(slug = %route.slug, %upstream, error = %e, source = ?std::error::Error::source(&e), "upstream failed");
            let mut h = hyper::HeaderMap::new();
            if let Some(a) = accept {
                h.insert(header::ACCEPT, a);
            }
            return pages::render(Page::BadGateway, &h);
        }
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(resp.headers_mut(), switching && upgrade);
    if let Some(prefix) = prefix {
        let rewritten = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| headers::rewrite_location(l, prefix, host))
            .and_then(|l| HeaderValue::from_str(&l).ok());
        if let Some(l) = rewritten {
            resp.headers_mut().insert(header::LOCATION, l);
        }
    }
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let slug = route.slug.clone();
            tokio::spawn(async move {
                let (c, u) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(%slug, error = %e, "upgrade did not complete");
                        return;
                    }
                };
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                    Ok((up, down)) => tracing::debug!(%slug, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(%slug, error = %e, "tunnel ended"),
                }
            });
        }
    }
    resp.map(Body::new)
}
