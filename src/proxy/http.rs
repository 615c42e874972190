//! The HTTP listener shared by the API and the reverse proxy.
//!
//! Each request is resolved against a snapshot of the route table: API requests go to the
//! axum router (with `ConnectInfo` so its rate limiter sees the real peer), site requests
//! are proxied to the VM over pooled keep-alive connections, with bodies streamed both ways
//! and `Upgrade` (WebSocket) requests tunnelled. Errors are answered by side: the VM failing
//! gives 502, a bad request 400, a client that is gone gets nothing.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::deadline::{self, SendDeadline, TimedBody};
use super::framing::Sniffed;
use super::headers::{self, Forwarding};
use super::pages::{self, Page};
use super::routes::{
    resolve, Resolution, Route, RouteCache, RouteStatus, RouteTable, Routes, RETRY_AFTER_SECS,
};
use super::upstream::{Pool, PoolLimits};
use super::ProxyConfig;
use crate::idle::{with_idle_timeout, Activity, Counted};
use crate::metrics::HttpKind;

struct Shared {
    api: axum::Router,
    /// The runtime API requests run on (the daemon's, not a proxy worker's).
    api_rt: tokio::runtime::Handle,
    /// This worker's copy of the route table.
    cache: std::sync::Mutex<RouteCache>,
    cfg: ProxyConfig,
    /// This worker's keep-alive pool per site and VM generation (see [`Route::generation`]).
    pools: std::sync::RwLock<std::collections::HashMap<String, (u64, Arc<Pool>)>>,
}

impl Shared {
    /// The current route table, as this worker sees it.
    fn table(&self) -> Arc<RouteTable> {
        match self.cache.lock() {
            Ok(mut c) => c.table(),
            Err(p) => p.into_inner().table(),
        }
    }

    /// The pool for this route's current generation; a new generation replaces (and so
    /// closes) the pool of the previous boot.
    fn pool(&self, route: &Route, upstream: SocketAddrV4) -> Arc<Pool> {
        if let Ok(map) = self.pools.read() {
            if let Some((g, p)) = map.get(&route.slug) {
                if *g == route.generation && p.addr() == upstream {
                    return p.clone();
                }
            }
        }
        let p = Pool::new(
            upstream,
            PoolLimits {
                idle_timeout: self.cfg.pool_idle_timeout,
                max_idle: self.cfg.pool_max_idle_per_host,
                response_idle: self.cfg.upstream_timeout,
            },
        );
        if let Ok(mut map) = self.pools.write() {
            // Forget pools of sites that are gone, so the map stays bounded.
            let table = self.table();
            if map.len() > 2 * table.len() + 16 {
                map.retain(|slug, _| table.get(slug).is_some());
            }
            map.insert(route.slug.clone(), (route.generation, p.clone()));
        }
        p
    }
}

/// Serves the API and every site on `listener` until `shutdown` completes, then stops
/// accepting and drains in-flight requests for up to `cfg.drain_timeout`.
///
/// Connections are accepted here and dealt round-robin to `cfg.workers` threads, each with
/// its own single-threaded runtime and its own keep-alive pools to the VMs (nginx's worker
/// model): a request and its upstream connection stay on one thread, with no cross-thread
/// wake-ups. API requests are handed back to the runtime that called `serve_http`, where
/// the daemon's other tasks live. Dropping the returned future also stops the workers.
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
    serve(
        Listeners {
            plain: listener,
            tls: None,
        },
        api,
        routes,
        cfg,
        shutdown,
    )
    .await
}

/// Where clients connect: plain HTTP, and optionally TLS with its server configuration
/// (certificates by SNI, ALPN `h2` and `http/1.1`).
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

/// [`serve_http`] on both listeners: the TLS one's connections are handshaken in the
/// worker (within `header_read_timeout`), then served as HTTP/2 or HTTP/1.1 as ALPN chose,
/// under the same connection caps as plain ones.
pub async fn serve(
    listeners: Listeners,
    api: axum::Router,
    routes: Routes,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let Listeners {
        plain: listener,
        tls,
    } = listeners;
    let (tls_listener, tls_config) = match tls {
        Some((l, c)) => (Some(l), Some(tokio_rustls::TlsAcceptor::from(c))),
        None => (None, None),
    };
    let api_rt = tokio::runtime::Handle::current();
    let mut workers = Vec::new();
    let mut done = Vec::new();
    for n in 0..cfg.workers.max(1) {
        let shared = Arc::new(Shared {
            api: api.clone(),
            api_rt: api_rt.clone(),
            cache: std::sync::Mutex::new(RouteCache::new(routes.clone())),
            cfg: cfg.clone(),
            pools: Default::default(),
        });
        let (conn_tx, conn_rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("roost-http-{n}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker(conn_rx, shared)),
                    Err(e) => tracing::error!(error = %e, "http worker runtime"),
                }
                drop(done_tx);
            });
        match spawned {
            Ok(_) => {
                workers.push(conn_tx);
                done.push(done_rx);
            }
            Err(e) => tracing::error!(error = %e, "cannot start an http worker"),
        }
    }
    if workers.is_empty() {
        tracing::error!("no http worker could start");
        return;
    }
    tokio::pin!(shutdown);
    let mut next = 0usize;
    let conns = ConnCounter::new(cfg.max_conns, cfg.max_conns_per_address);
    loop {
        let (accepted, secure) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => (r, false),
            r = accept_opt(tls_listener.as_ref()) => (r, true),
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, secure, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = conns.take(peer.ip()) else {
            // Not a warning per connection: a flood would make one per attempt.
            tracing::debug!(%peer, "http connection refused: connection cap");
            drop(stream);
            continue;
        };
        // The worker registers the socket with its own runtime.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker");
                continue;
            }
        };
        next = (next + 1) % workers.len();
        let tls = if secure { tls_config.clone() } else { None };
        if workers[next].send((stream, peer, slot, tls)).is_err() {
            tracing::error!(worker = next, "http worker is gone");
        }
    }
    drop(listener);
    drop(tls_listener);
    // Closing the channels tells each worker to drain and stop.
    drop(workers);
    for d in done {
        let _ = d.await;
    }
}

/// Accepts on `l`, or never when there is no such listener.
async fn accept_opt(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A connection handed to a worker: the socket, its peer, its slot under the connection
/// caps, and the TLS acceptor when it came in on the HTTPS listener.
type Handoff = (
    std::net::TcpStream,
    SocketAddr,
    ConnSlot,
    Option<tokio_rustls::TlsAcceptor>,
);

/// One worker: serves the connections it is handed until the channel closes, then drains
/// its own connections for up to `cfg.drain_timeout`.
async fn worker(mut conns: tokio::sync::mpsc::UnboundedReceiver<Handoff>, shared: Arc<Shared>) {
    let mut plain = auto::Builder::new(TokioExecutor::new()).http1_only();
    tune_http1(&mut plain, &shared.cfg);
    // Over TLS, ALPN decides: h2 for clients that offered it, HTTP/1.1 otherwise.
    let mut secure = auto::Builder::new(TokioExecutor::new());
    tune_http1(&mut secure, &shared.cfg);
    secure
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(u32::try_from(shared.cfg.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let (plain, secure) = (Arc::new(plain), Arc::new(secure));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some((stream, peer, slot, tls)) = conns.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "http worker cannot register a connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stream = SendDeadline::new(stream, shared.cfg.send_timeout);
        // Counted until hyper is done with the connection and any tunnel it became.
        let client = Client {
            peer,
            slot: Arc::new(slot),
            secure: tls.is_some(),
        };
        match tls {
            None => serve_conn(&plain, graceful.watcher(), shared, client, stream),
            Some(acceptor) => {
                // Watched from here, so a drain waits for handshakes too (they are short).
                let (secure, watcher) = (secure.clone(), graceful.watcher());
                tokio::spawn(async move {
                    // The handshake shares the request head's deadline (slowloris).
                    let hs = acceptor.accept(stream);
                    match tokio::time::timeout(shared.cfg.header_read_timeout, hs).await {
                        Ok(Ok(tls)) => serve_conn(&secure, watcher, shared, client, tls),
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        }
    }
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

/// HTTP/1.1 settings of both listeners.
fn tune_http1(b: &mut auto::Builder<TokioExecutor>, cfg: &ProxyConfig) {
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192));
}

/// Serves one client connection (plain, or the decrypted side of TLS) on this worker.
fn serve_conn<S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    shared: Arc<Shared>,
    client: Client,
    stream: S,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer;
    let (stream, ambiguous) = Sniffed::new(stream);
    let slot = client.slot.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let refuse = req.headers().contains_key(header::TRANSFER_ENCODING)
            && ambiguous.swap(false, Ordering::Relaxed);
        handle(shared.clone(), client.clone(), req, refuse)
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .into_owned();
    let conn = watcher.watch(conn);
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "http connection ended with an error");
        }
    });
}

/// Open client connections, in total and per address.
#[derive(Clone)]
struct ConnCounter {
    inner: Arc<std::sync::Mutex<ConnCounts>>,
    max: usize,
    per_address: usize,
}

#[derive(Default)]
struct ConnCounts {
    total: usize,
    by_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// Who is on the other end of a client connection, and its connection slot (shared by
/// hyper's connection task and any tunnel the connection becomes).
#[derive(Clone)]
struct Client {
    peer: SocketAddr,
    slot: Arc<ConnSlot>,
    /// It came in over TLS.
    secure: bool,
}

/// One open connection; counted until dropped.
struct ConnSlot {
    counter: ConnCounter,
    ip: std::net::IpAddr,
}

impl ConnCounter {
    fn new(max: usize, per_address: usize) -> ConnCounter {
        ConnCounter {
            inner: Arc::default(),
            max: max.max(1),
            per_address: per_address.max(1),
        }
    }

    /// A slot for a new connection from `ip`, unless a cap is reached.
    fn take(&self, ip: std::net::IpAddr) -> Option<ConnSlot> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.by_address.get(&ip).copied().unwrap_or(0);
        if c.total >= self.max || mine >= self.per_address {
            return None;
        }
        c.total += 1;
        c.by_address.insert(ip, mine + 1);
        Some(ConnSlot {
            counter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.counter.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.ip);
            }
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    client: Client,
    req: Request<Incoming>,
    ambiguous_framing: bool,
) -> Result<Response<Body>, Infallible> {
    let secure = client.secure;
    let hsts = secure && shared.cfg.https.as_ref().is_some_and(|h| h.hsts);
    let (started, metrics) = (std::time::Instant::now(), shared.cfg.metrics.clone());
    let mut kind = HttpKind::Other;
    let mut resp = route_request(shared, client, req, ambiguous_framing, &mut kind).await;
    metrics.observe(kind, resp.status().as_u16(), started.elapsed());
    if hsts
        && !resp
            .headers()
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
    {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    Ok(resp)
}

/// What plain HTTP answers itself while HTTPS is on: an ACME HTTP-01 challenge, or the
/// redirect to the same URL over HTTPS. `None`: route the request as usual.
fn plain_http_answer(
    policy: &super::HttpsPolicy,
    peer: SocketAddr,
    req: &Request<Incoming>,
    host: Option<&str>,
    domain: &str,
) -> Option<Response<Body>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/") {
        let (status, body) = match (policy.http01.0)(token) {
            Some(answer) => (StatusCode::OK, answer),
            None => (StatusCode::NOT_FOUND, "no such challenge\n".to_owned()),
        };
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Some(r);
    }
    if !policy.redirect || peer.ip().is_loopback() {
        return None;
    }
    // The name only, never a port the client made up; a Host that is not a plain name
    // goes to DOMAIN instead of into a Location header.
    let name = host
        .map(|h| super::routes::split_port(h).0)
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .unwrap_or(domain);
    let port = match policy.port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let to = format!("https://{name}{port}{pq}");
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Some(r)
}

/// Answers `req`; `kind` is set to who answered it (for the metrics).
async fn route_request(
    shared: Arc<Shared>,
    client: Client,
    req: Request<Incoming>,
    ambiguous_framing: bool,
    kind: &mut HttpKind,
) -> Response<Body> {
    let peer = client.peer;
    if ambiguous_framing {
        tracing::info!(%peer, "refused: Content-Length with Transfer-Encoding");
        return closing(pages::render(Page::BadRequest, req.headers()));
    }
    let table = shared.table();
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
    let console = shared
        .cfg
        .console_host
        .as_deref()
        .is_some_and(|c| super::routes::host_is(host.as_deref(), c));
    let resolution = if console {
        Resolution::Api
    } else {
        resolve(
            &table,
            req.method(),
            raw,
            host.as_deref(),
            &shared.cfg.domain,
        )
    };
    drop(table);
    if !client.secure {
        if let Some(policy) = &shared.cfg.https {
            if let Some(r) =
                plain_http_answer(policy, peer, &req, host.as_deref(), &shared.cfg.domain)
            {
                return r;
            }
        }
    }
    *kind = match resolution {
        Resolution::Api => HttpKind::Api,
        Resolution::NoSite => HttpKind::Other,
        _ => HttpKind::Site,
    };
    let body_timeout = shared.cfg.body_timeout;
    let mut req = req.map(|b| TimedBody::new(b, "request", body_timeout));
    match resolution {
        Resolution::Api => {
            req.extensions_mut().insert(ConnectInfo(peer));
            // How the client really came: the API refuses passwords over plain HTTP by it.
            req.extensions_mut().insert(super::Transport {
                secure: client.secure,
                console,
            });
            let req = req.map(Body::new);
            let call = shared.api.clone().oneshot(req);
            match shared.api_rt.spawn(call).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                // The daemon's runtime is shutting down (or the handler panicked).
                Err(e) => {
                    tracing::warn!(error = %e, "api request did not complete");
                    let mut r = Response::new(Body::from(
                        r#"{"error":"unavailable","message":"the service is shutting down"}"#,
                    ));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
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
                client,
                req,
                &route,
                &upstream_path,
                prefix.as_deref(),
                host.as_deref(),
            )
            .await
        }
    }
}

/// `resp` with `Connection: close`: the request's framing cannot be trusted past it.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Connecting to a booting guest gives up after this (then the "starting" page).
const BOOTING_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

async fn proxy(
    shared: &Shared,
    client: Client,
    mut req: Request<TimedBody<Incoming>>,
    route: &Route,
    upstream_path: &str,
    prefix: Option<&str>,
    host: Option<&str>,
) -> Response<Body> {
    let peer = client.peer;
    let booting = route.status == RouteStatus::Booting;
    let Some(upstream) = route
        .upstream
        .filter(|_| booting || route.status == RouteStatus::Live)
    else {
        return pages::render(Page::BadGateway, req.headers());
    };
    // Counted in before `asleep` is read (see `presence`), and held until the response
    // body has been sent, so a long download keeps the site awake.
    let visit = route.presence.enter();
    if route.presence.asleep() {
        tracing::info!(slug = %route.slug, %peer, "waking a sleeping site");
        if !route.presence.wake(shared.cfg.wake_timeout).await {
            tracing::warn!(slug = %route.slug, after = ?shared.cfg.wake_timeout, "the site did not wake in time");
            return pages::render(
                Page::Starting {
                    retry_after: RETRY_AFTER_SECS,
                },
                req.headers(),
            );
        }
    }
    // A booting guest that does not take the connection yet is "starting", not broken,
    // and the visitor should not wait long for that answer.
    let connect_timeout = if booting {
        shared.cfg.connect_timeout.min(BOOTING_CONNECT_TIMEOUT)
    } else {
        shared.cfg.connect_timeout
    };
    // Origin-form, as HTTP/1.1 sends it to a server that is not a proxy.
    let uri: Uri = match upstream_path.parse() {
        Ok(u) => u,
        Err(_) => return pages::render(Page::BadRequest, req.headers()),
    };
    let upgrade = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let accept = parts.headers.get(header::ACCEPT).cloned();
    // An absolute-form target (`GET http://alice.DOMAIN/ HTTP/1.1`) was routed by its
    // authority, which wins over `Host` (RFC 9112 3.2.2): the VM is told that authority,
    // never a `Host` the client chose independently of the routing.
    let absolute = parts.uri.authority().is_some();
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarded(
        &mut parts.headers,
        Forwarding {
            peer: peer.ip(),
            host,
            prefix,
            secure: client.secure,
        },
    );
    if absolute {
        parts.headers.remove(header::HOST);
    }
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/1.1 requires one: the client's, else the VM's address.
        let h = host
            .and_then(|h| HeaderValue::from_str(h).ok())
            .or_else(|| HeaderValue::from_str(&upstream.to_string()).ok());
        if let Some(h) = h {
            parts.headers.insert(header::HOST, h);
        }
    }

    // The request (and its headers) go to the pool: an error page is chosen by the
    // client's saved `Accept` alone.
    let saved = |accept: Option<HeaderValue>| {
        let mut h = hyper::HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT, a);
        }
        h
    };
    let pool = shared.pool(route, upstream);
    let sent = pool.send(Request::from_parts(parts, body), connect_timeout);
    let mut resp = match tokio::time::timeout(shared.cfg.upstream_timeout, sent).await {
        Ok(Ok(r)) => r,
        Err(_) => {
            tracing::info!(slug = %route.slug, %upstream, after = ?shared.cfg.upstream_timeout, "upstream sent no response head");
            return pages::render(Page::GatewayTimeout, &saved(accept));
        }
        Ok(Err(e)) => {
            let h = saved(accept);
            if deadline::stalled(&e, "request") {
                tracing::info!(slug = %route.slug, %peer, "request body stalled");
                return closing(pages::render(Page::RequestTimeout, &h));
            }
            if booting && e.is_connect() {
                return pages::render(
                    Page::Starting {
                        retry_after: RETRY_AFTER_SECS,
                    },
                    &h,
                );
            }
            tracing::warn!(slug = %route.slug, %upstream, error = %e, source = ?std::error::Error::source(&e), "upstream failed");
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
            let idle = shared.cfg.tunnel_idle_timeout;
            let visit = route.presence.enter();
            tokio::spawn(async move {
                // The tunnel holds its client's connection slot, and keeps the site awake,
                // until it ends.
                let _slot = client.slot;
                let _visit = visit;
                let (c, u) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(%slug, error = %e, "upgrade did not complete");
                        return;
                    }
                };
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                let activity = Activity::new();
                let mut counted = Counted::new(&mut c, &activity);
                let copy = tokio::io::copy_bidirectional(&mut counted, &mut u);
                match with_idle_timeout(copy, &activity, idle, idle).await {
                    Ok((up, down)) => tracing::debug!(%slug, up, down, "tunnel closed"),
                    Err(e) => tracing::debug!(%slug, error = %e, "tunnel ended"),
                }
            });
        }
    }
    resp.map(|b| {
        Body::new(b.map_frame(move |f| {
            let _held = &visit;
            f
        }))
    })
}
