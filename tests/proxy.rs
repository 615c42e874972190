//! The reverse proxy and the SSH forwarder against real sockets on loopback.
//!
//! Not privileged: every server here (upstream, API, proxy, echo) listens on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use roost::forward::{ForwardError, ForwardLimits, Forwarders};
use roost::proxy::{ProxyConfig, Route, RouteStatus, Routes};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOMAIN: &str = "example.test";
const MB: usize = 1 << 20;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

/// `n` bytes of `b'x'`, streamed in 64 KiB frames.
fn stream_of(n: usize) -> BoxBody {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let frames = futures::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let k = left.min(chunk.len());
            Some((
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..k))),
                left - k,
            ))
        }
    });
    StreamBody::new(frames).boxed()
}

/// The fake VM web server: echoes the request (and the proxy's address on this connection)
/// as JSON, serves `/big?n=`, echoes upgrades, and closes the connection after `/close`.
async fn upstream_service(
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<BoxBody>, hyper::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if let Some(n) = path.strip_prefix("/big?n=") {
        let n: usize = n.parse().unwrap_or(0);
        return Ok(Response::new(stream_of(n)));
    }
    if path == "/now" {
        // Answers before reading the request body, as a VM's server may (a 405 for a POST
        // to a static file, a 413, a redirect), then reads and discards the body, keeping
        // the connection (nginx's discarded body).
        let mut body = req.into_body();
        tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
        return Ok(Response::new(full("now")));
    }
    if path == "/stall" {
        // A head and a first chunk, then nothing.
        let first = futures::stream::once(async {
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"first")))
        });
        let body = StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()));
        return Ok(Response::new(body.boxed()));
    }
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(full(""))
            .expect("response"));
    }
    let method = req.method().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    let mut body = req.into_body();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            len += d.len();
        }
    }
    let json = serde_json::json!({
        "method": method, "path": path, "len": len, "headers": headers, "peer": peer.to_string(),
    });
    let connection = if path == "/close" { "close" } else { "x-hop" };
    Ok(Response::builder()
        .header("x-upstream", "yes")
        .header("connection", connection)
        .header("x-hop", "secret")
        .body(full(json.to_string()))
        .expect("response"))
}

async fn run_upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((s, peer)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    TokioIo::new(s),
                    hyper::service::service_fn(move |req| upstream_service(req, peer)),
                )
                .with_upgrades()
                .await;
        });
    }
}

fn api_router() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "api-healthz" }))
        .route(
            "/api/v1/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/api/v1/echo",
            axum::routing::post(|body: String| async move { body }),
        )
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "api-404") })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An upstream, the proxy with a few routes, and their runtime; dropping it stops all.
struct Harness {
    _rt: tokio::runtime::Runtime,
    proxy: SocketAddr,
    /// The TLS listener, when started with one.
    tls: Option<SocketAddr>,
    upstream: SocketAddrV4,
    routes: Routes,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One presence for every forward of these tests (a port's presence is part of its identity).
fn presence() -> std::sync::Arc<roost::presence::Presence> {
    static P: std::sync::OnceLock<std::sync::Arc<roost::presence::Presence>> =
        std::sync::OnceLock::new();
    P.get_or_init(roost::presence::Presence::new).clone()
}

fn route(slug: &str, upstream: SocketAddrV4, status: RouteStatus) -> Route {
    Route {
        generation: 0,
        slug: slug.into(),
        hosting_id: format!("h-{slug}"),
        upstream: Some(upstream),
        ssh: None,
        status,
        presence: roost::presence::Presence::new(),
    }
}

impl Harness {
    fn start(cfg: ProxyConfig) -> Harness {
        Harness::start_with(cfg, None)
    }

    fn start_with(cfg: ProxyConfig, tls: Option<Arc<rustls::ServerConfig>>) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (proxy_l, up_l) = rt.block_on(async {
            (
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            )
        });
        let proxy = proxy_l.local_addr().expect("addr");
        let upstream = match up_l.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound on 127.0.0.1"),
        };
        let down = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
        let routes = Routes::new(vec![
            route("alice", upstream, RouteStatus::Live),
            route("bob", upstream, RouteStatus::Live),
            // Booting: its web server is not up yet, or already is.
            route("boot", down, RouteStatus::Booting),
            route("early", upstream, RouteStatus::Booting),
            route("off", upstream, RouteStatus::Stopped),
            route("down", down, RouteStatus::Live),
        ]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(run_upstream(up_l));
        let tls = tls.map(|c| {
            let l = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            (l, c)
        });
        let tls_addr = tls.as_ref().map(|(l, _)| l.local_addr().expect("addr"));
        rt.spawn(roost::proxy::serve(
            roost::proxy::Listeners {
                plain: proxy_l,
                tls,
            },
            api_router(),
            routes.clone(),
            cfg,
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            _rt: rt,
            proxy,
            tls: tls_addr,
            upstream,
            routes,
            stop: Some(stop),
        }
    }

    fn default() -> Harness {
        Harness::start(ProxyConfig::new(DOMAIN))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn echo_json(resp: reqwest::blocking::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200, "upstream answer expected");
    assert_eq!(resp.headers()["x-upstream"], "yes");
    resp.json().expect("json")
}

fn header<'a>(v: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|p| p[0] == name)
        .filter_map(|p| p[1].as_str())
        .collect()
}

/// Sends raw bytes and reads until the server closes (or 10 s pass).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a response head byte by byte (nothing of the body), lowercased; `closed` is the
/// failure message if the connection ends first.
fn read_head(s: &mut TcpStream, closed: &str) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("read head"), 1, "{closed}");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// One request on an open keep-alive connection; returns the status line and the body.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> (String, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    let head = read_head(s, "connection closed");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn upstream_connections_are_reused_and_follow_the_vm_boot() {
    let h = Harness::default();
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let peer = |s: &mut TcpStream, path: &str| {
        let (status, body) = keep_alive_get(s, path);
        assert!(status.starts_with("http/1.1 200"), "{status}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["peer"].as_str().expect("peer").to_string()
    };
    // Sequential requests reuse one pooled connection to the VM.
    let first = peer(&mut s, "/alice/");
    for _ in 0..5 {
        assert_eq!(peer(&mut s, "/alice/x"), first);
    }
    // The VM closes that connection after a response: the next request gets a new one,
    // and no error.
    assert_eq!(peer(&mut s, "/alice/close"), first);
    let second = peer(&mut s, "/alice/");
    assert_ne!(second, first);
    assert_eq!(peer(&mut s, "/alice/"), second);
    // A new boot of the VM (generation) never gets a connection made to the previous one.
    let mut rebooted = route("alice", h.upstream, RouteStatus::Live);
    rebooted.generation = 1;
    h.routes.upsert(rebooted);
    let third = peer(&mut s, "/alice/");
    assert_ne!(third, second);
    assert_eq!(peer(&mut s, "/alice/"), third);
}

#[test]
fn path_route_strips_prefix_and_sets_forwarding_headers() {
    let h = Harness::default();
    let v = echo_json(
        client()
            .get(h.url("/alice/x/y?q=1&r=/bob/"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("x-forwarded-prefix", "/evil")
            .send()
            .expect("send"),
    );
    assert_eq!(v["path"], "/x/y?q=1&r=/bob/");
    assert_eq!(v["method"], "GET");
    assert_eq!(header(&v, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header(&v, "x-forwarded-prefix"), vec!["/alice"]);
    assert_eq!(header(&v, "x-forwarded-proto"), vec!["http"]);
    let host = h.proxy.to_string();
    assert_eq!(header(&v, "x-forwarded-host"), vec![host.as_str()]);
    assert_eq!(header(&v, "host"), vec![host.as_str()]);
    assert_eq!(
        header(&v, "forwarded"),
        vec![format!("for=127.0.0.1;host=\"{host}\";proto=http").as_str()]
    );
}

#[test]
fn raw_path_is_never_decoded_for_routing() {
    let h = Harness::default();
    let v = echo_json(
        client()
            .get(h.url("/alice/..%2fbob/"))
            .send()
            .expect("send"),
    );
    assert_eq!(v["path"], "/..%2fbob/");
    let r = client().get(h.url("/alice%2f../")).send().expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().expect("text"), "api-404");
}

#[test]
fn host_route_keeps_path_and_has_no_prefix() {
    let h = Harness::default();
    let host = format!("ALICE.{DOMAIN}:{}", h.proxy.port());
    let v = echo_json(
        client()
            .get(h.url("/api/v1/anything?x"))
            .header("host", &host)
            .send()
            .expect("send"),
    );
    assert_eq!(v["path"], "/api/v1/anything?x");
    assert!(header(&v, "x-forwarded-prefix").is_empty());
    assert_eq!(header(&v, "x-forwarded-host"), vec![host.as_str()]);
}

/// A plain (blocking) connection to the proxy from a chosen loopback source address.
fn connect_proxy_from(proxy: SocketAddr, src: Ipv4Addr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().expect("socket");
            sock.bind(SocketAddr::from((src, 0))).expect("bind source");
            sock.connect(proxy).await.expect("connect").into_std()
        })
        .expect("std stream");
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// One request on `s`; true when a response came back, false when the proxy closed it.
fn answered(s: &mut TcpStream, path: &str) -> bool {
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

/// One client address cannot hold more than its share of connections, and all clients
/// together not more than the total: beyond, connections are closed at once, and other
/// clients (or the same one, once it lets go) are served.
#[test]
fn connection_caps_per_address_and_in_total() {
    let h = Harness::start(ProxyConfig {
        max_conns_per_address: 20,
        max_conns: 40,
        ..ProxyConfig::new(DOMAIN)
    });
    let flooder = Ipv4Addr::new(127, 0, 0, 9);
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| connect_proxy_from(h.proxy, flooder))
        .collect();
    // Counted: the proxy has accepted them all before the next one is judged.
    common::poll("the flood to be accepted", Duration::from_secs(5), || {
        let mut probe = connect_proxy_from(h.proxy, flooder);
        (!answered(&mut probe, "/alice/")).then_some(())
    });
    let mut other = connect_proxy_from(h.proxy, Ipv4Addr::new(127, 0, 0, 10));
    assert!(answered(&mut other, "/alice/"), "another address is served");

    // A second flooding address fills the total.
    let second = Ipv4Addr::new(127, 0, 0, 11);
    held.extend((0..20).map(|_| connect_proxy_from(h.proxy, second)));
    common::poll("the total to be reached", Duration::from_secs(5), || {
        let mut probe = connect_proxy_from(h.proxy, Ipv4Addr::new(127, 0, 0, 12));
        (!answered(&mut probe, "/alice/")).then_some(())
    });
    // Letting go gives the slots back.
    drop(held);
    common::poll("slots to come back", Duration::from_secs(5), || {
        let mut s = connect_proxy_from(h.proxy, flooder);
        answered(&mut s, "/alice/").then_some(())
    });
}

/// An absolute-form request is routed by its authority, and the VM sees that authority as
/// `Host`, not the client's independent `Host` header.
#[test]
fn absolute_form_requests_carry_their_own_authority_as_host() {
    let h = Harness::default();
    let authority = format!("alice.{DOMAIN}");
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET http://{authority}/x HTTP/1.1\r\nHost: bob.{DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = body.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c.is_whitespace());
    let body = &body[..body.rfind('}').map_or(body.len(), |i| i + 1)];
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(header(&v, "host"), vec![authority.as_str()], "{v}");
    assert_eq!(
        header(&v, "x-forwarded-host"),
        vec![authority.as_str()],
        "{v}"
    );
}

#[test]
fn api_requests_reach_the_router_with_the_peer() {
    let h = Harness::default();
    let c = client();
    let r = c.get(h.url("/healthz")).send().expect("send");
    assert_eq!(r.text().expect("text"), "api-healthz");
    let r = c
        .get(h.url("/api/v1/peer"))
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .expect("send");
    assert_eq!(r.text().expect("text"), "127.0.0.1");
    let r = c.get(h.url("/")).send().expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().expect("text"), "api-404");
}

#[test]
fn slug_without_slash_redirects_with_query() {
    let h = Harness::default();
    let r = client().get(h.url("/alice?a=1&b")).send().expect("send");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/alice/?a=1&b");
}

#[test]
fn error_pages_by_state() {
    let h = Harness::default();
    let c = client();
    let r = c.get(h.url("/nobody/")).send().expect("send");
    assert_eq!(r.status(), 404);
    assert!(r.text().expect("text").contains("no site"));
    let r = c
        .get(h.url("/nobody/"))
        .header("accept", "application/json")
        .send()
        .expect("send");
    let v: serde_json::Value = r.json().expect("json");
    assert_eq!(v["error"]["code"], "no_site");

    let r = c.get(h.url("/boot/")).send().expect("send");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(r.text().expect("text").contains("starting"));
    // A booting guest whose web server already answers is served at once.
    let r = c.get(h.url("/early/")).send().expect("send");
    assert_eq!(r.status(), 200);
    let r = c.get(h.url("/off/")).send().expect("send");
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_none());

    let started = Instant::now();
    let r = c.get(h.url("/down/")).send().expect("send");
    assert_eq!(r.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed_both_ways() {
    let h = Harness::default();
    let out = raw(
        h.proxy,
        b"GET /alice/ HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: basic eA==\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = &out[out.find("\r\n\r\n").expect("head end") + 4..];
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(header(&v, gone).is_empty(), "{gone} reached the upstream");
    }
    // The upstream's `Connection: x-hop` named `X-Hop`: it must not reach the client.
    let head = out[..out.find("\r\n\r\n").expect("head end")].to_ascii_lowercase();
    assert!(!head.contains("x-hop"), "{head}");
}

#[test]
fn large_upload_and_download_stream_through() {
    let h = Harness::default();
    let n = 50 * MB;
    let body = reqwest::blocking::Body::new(std::io::repeat(b'u').take(n as u64));
    let v = echo_json(
        client()
            .post(h.url("/alice/upload"))
            .body(body)
            .send()
            .expect("send"),
    );
    assert_eq!(v["len"], n);

    let r = client()
        .get(h.url(&format!("/alice/big?n={n}")))
        .send()
        .expect("send");
    assert_eq!(r.status(), 200);
    let got = r.bytes().expect("bytes").len();
    assert_eq!(got, n);
}

#[test]
fn upgrade_is_tunnelled() {
    let h = Harness::default();
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(
        b"GET /alice/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("write");
    let head = read_head(&mut s, "closed before 101");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [
        &b"hello"[..],
        &[0u8, 1, 2, 255][..],
        &vec![7u8; 100_000][..],
    ] {
        s.write_all(msg).expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg);
    }
}

#[test]
fn ambiguous_framing_is_refused() {
    let h = Harness::default();
    // Two different Content-Length values: hyper refuses the request outright.
    let out = raw(
        h.proxy,
        b"POST /alice/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Content-Length with Transfer-Encoding.
    let out = raw(
        h.proxy,
        b"POST /alice/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /bob/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(!out.contains("smuggled"), "{out}");
    // Transfer-Encoding that does not end in chunked.
    let out = raw(
        h.proxy,
        b"POST /alice/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[test]
fn slowloris_is_cut_off() {
    let h = Harness::start(ProxyConfig {
        header_read_timeout: Duration::from_millis(800),
        ..ProxyConfig::new(DOMAIN)
    });
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let request = b"GET /alice/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut closed = false;
    // One byte per ~100 ms: the whole head would take ~10 s, far beyond the 0.8 s limit.
    for b in request.iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                // hyper answers 408 before closing; what matters is that it closes.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the slow client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn route_swap_does_not_break_other_routes_connections() {
    let h = Harness::default();
    let n = 200 * MB;
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(format!("GET /bob/big?n={n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = s.read(&mut buf).expect("first bytes");
    assert!(got > 0);

    // Swap the whole table (alice gone, carol added, bob changed to a copy of itself)
    // while bob's download is in flight, then keep reading it.
    let diff = h.routes.replace(vec![
        route("bob", h.upstream, RouteStatus::Live),
        route("carol", h.upstream, RouteStatus::Live),
    ]);
    assert_eq!(diff.added, vec!["carol"]);
    assert!(diff.removed.contains(&"alice".to_string()));
    let r = client().get(h.url("/alice/")).send().expect("send");
    assert_eq!(r.status(), 404);
    let v = echo_json(client().get(h.url("/carol/")).send().expect("send"));
    assert_eq!(v["path"], "/");

    let mut head_end = None;
    let mut all = buf[..got].to_vec();
    loop {
        if head_end.is_none() {
            head_end = all.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(e) = head_end {
            let head = String::from_utf8_lossy(&all[..e]).to_ascii_lowercase();
            let body_len = all.len() - e;
            // The upstream streams chunked; count decoded bytes roughly by reading to the end.
            if head.contains("transfer-encoding: chunked") && all.ends_with(b"0\r\n\r\n") {
                break;
            }
            if head.contains(&format!("content-length: {n}")) && body_len == n {
                break;
            }
        }
        let k = s.read(&mut buf).expect("download continues");
        assert!(k > 0, "download cut after {got} bytes");
        got += k;
        all.extend_from_slice(&buf[..k]);
    }
    assert!(got > n, "got {got} of {n}");
}

// ---- SSH forwarder ----

/// An echo server on loopback; returns its address. Runs until the runtime ends.
async fn echo_server() -> SocketAddrV4 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = match l.local_addr().expect("addr") {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound on 127.0.0.1"),
    };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn limits(splice: bool) -> ForwardLimits {
    ForwardLimits {
        max_conns: 2,
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        splice,
        new_conns_per_minute: 1000,
        max_conns_per_address: 1000,
        silent_timeout: Duration::from_secs(30),
        client_mark: None,
        wake_timeout: Duration::from_secs(15),
    }
}

async fn roundtrip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connect");
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(payload).await.expect("write");
        w.shutdown().await.expect("half-close");
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (_, n) = tokio::join!(write, read);
    n.expect("read");
    back
}

async fn forwarder_roundtrip(splice: bool) {
    let echo = echo_server().await;
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    let port = free_port();
    fw.ensure(port, echo, limits(splice), presence())
        .await
        .expect("ensure");
    fw.ensure(port, echo, limits(splice), presence())
        .await
        .expect("ensure is idempotent");
    assert_eq!(fw.ports().await, vec![(port, echo)]);
    let payload: Vec<u8> = (0..5 * MB).map(|i| (i % 251) as u8).collect();
    let back = roundtrip(port, &payload).await;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "bytes differ");
    assert!(fw.remove(port).await);
    assert!(fw.ports().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_roundtrip_splice() {
    forwarder_roundtrip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_roundtrip_copy() {
    forwarder_roundtrip(false).await;
}

/// True once the peer closed `s` (EOF or reset) within `deadline`.
async fn closed_within(s: &mut tokio::net::TcpStream, deadline: Duration) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(deadline, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn ping(s: &mut tokio::net::TcpStream) {
    s.write_all(b"ping").await.expect("write");
    let mut b = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&b, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_caps_connections_and_removal_closes_them() {
    let echo = echo_server().await;
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    let port = free_port();
    fw.ensure(port, echo, limits(true), presence())
        .await
        .expect("ensure");
    let connect = || tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    let mut a = connect().await.expect("a");
    ping(&mut a).await;
    let mut b = connect().await.expect("b");
    ping(&mut b).await;
    let mut c = connect().await.expect("c");
    assert!(
        closed_within(&mut c, Duration::from_secs(5)).await,
        "third connection should be closed by the cap of 2"
    );
    ping(&mut a).await;

    assert!(fw.remove(port).await);
    assert!(closed_within(&mut a, Duration::from_secs(5)).await);
    assert!(closed_within(&mut b, Duration::from_secs(5)).await);
    assert!(connect().await.is_err(), "nothing listens after remove");
}

/// A connection to the forwarder on 127.0.0.1 from the source address `src` (any 127/8).
async fn connect_from(src: Ipv4Addr, port: u16) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((src, 0))).expect("bind source");
    sock.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_limits_new_connections_per_address() {
    let echo = echo_server().await;
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    let port = free_port();
    let l = ForwardLimits {
        max_conns: 10,
        new_conns_per_minute: 3,
        ..limits(true)
    };
    fw.ensure(port, echo, l, presence()).await.expect("ensure");
    // Three in a row are fine, even once closed again...
    for _ in 0..3 {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, port).await;
        ping(&mut s).await;
    }
    // ...the fourth within the minute is closed at once...
    let mut s = connect_from(Ipv4Addr::LOCALHOST, port).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "fourth new connection in a minute should be closed"
    );
    // ...while another client address is not affected.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await;
    ping(&mut other).await;
    assert!(fw.remove(port).await);
}

/// One address cannot fill a port (its owner can still connect from elsewhere), and a
/// client that says nothing is closed long before the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_caps_each_address_and_closes_silent_clients() {
    let echo = echo_server().await;
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    let port = free_port();
    for splice in [true, false] {
        let l = ForwardLimits {
            max_conns: 10,
            max_conns_per_address: 3,
            ..limits(splice)
        };
        fw.ensure(port, echo, l, presence()).await.expect("ensure");
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = connect_from(Ipv4Addr::LOCALHOST, port).await;
            ping(&mut s).await;
            held.push(s);
        }
        let mut fourth = connect_from(Ipv4Addr::LOCALHOST, port).await;
        assert!(
            closed_within(&mut fourth, Duration::from_secs(5)).await,
            "a fourth live connection from one address is closed"
        );
        let mut owner = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await;
        ping(&mut owner).await;
        // A slot comes back when a connection ends.
        drop(held.pop());
        let mut again =
            common::poll_async("a slot to come back", Duration::from_secs(5), || async {
                let mut s = connect_from(Ipv4Addr::LOCALHOST, port).await;
                let ok = tokio::time::timeout(Duration::from_secs(1), async {
                    s.write_all(b"ping").await.ok()?;
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b).await.ok()
                })
                .await
                .ok()
                .flatten()
                .is_some();
                ok.then_some(s)
            })
            .await;
        ping(&mut again).await;
        drop((held, owner, again));

        let l = ForwardLimits {
            silent_timeout: Duration::from_millis(400),
            ..limits(splice)
        };
        fw.ensure(port, echo, l, presence()).await.expect("ensure");
        let mut silent = connect_from(Ipv4Addr::new(127, 0, 0, 3), port).await;
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "a client that sends nothing is closed"
        );
        let mut talker = connect_from(Ipv4Addr::new(127, 0, 0, 3), port).await;
        ping(&mut talker).await;
        assert!(
            !closed_within(&mut talker, Duration::from_secs(1)).await,
            "a client that spoke is not closed for being quiet later"
        );
        ping(&mut talker).await;
    }
    assert!(fw.remove(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_closes_idle_connections() {
    let echo = echo_server().await;
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    let port = free_port();
    for splice in [true, false] {
        let l = ForwardLimits {
            idle_timeout: Duration::from_millis(400),
            ..limits(splice)
        };
        fw.ensure(port, echo, l, presence()).await.expect("ensure");
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("connect");
        ping(&mut s).await;
        let started = Instant::now();
        assert!(closed_within(&mut s, Duration::from_secs(5)).await);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_reports_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    match fw
        .ensure(port, target, ForwardLimits::default(), presence())
        .await
    {
        Err(ForwardError::PortInUse { port: p, .. }) => assert_eq!(p, port),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    assert!(fw.ports().await.is_empty());
    assert!(!roost::forward::port_is_free(port));
    drop(taken);
}

/// An echo server on plain threads, independent of any async runtime.
fn thread_echo_server() -> SocketAddrV4 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = match l.local_addr().expect("addr") {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound on 127.0.0.1"),
    };
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

/// The forwarders run on threads of their own: a daemon runtime whose every worker is
/// blocked (a store write's fsync blocks one) does not hold forwarded bytes back, and the
/// forwarders need no runtime from their caller at all.
#[test]
fn forwarding_does_not_wait_for_a_busy_daemon_runtime() {
    let echo = thread_echo_server();
    let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
    // Ensured from the daemon's runtime, as the daemon does.
    let daemon = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let port = free_port();
    daemon
        .block_on(fw.ensure(port, echo, limits(true), presence()))
        .expect("ensure");
    // And from no runtime at all.
    let other = free_port();
    futures::executor::block_on(fw.ensure(other, echo, limits(true), presence()))
        .expect("ensure outside a runtime");
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, other)).expect("connect");
    s.write_all(b"ping").expect("write");
    let mut b = [0u8; 4];
    s.read_exact(&mut b).expect("echo");
    // Every worker of the daemon's runtime is stuck for 20 s.
    for _ in 0..4 {
        daemon.spawn(async { std::thread::sleep(Duration::from_secs(20)) });
    }
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"ping").expect("write");
    let mut b = [0u8; 4];
    s.read_exact(&mut b)
        .expect("the echo comes back while the daemon's runtime is blocked");
    assert_eq!(&b, b"ping");
    daemon.shutdown_background();
}

/// Reads from `s` until the proxy answers or closes; `None` when neither happens within
/// `within` (the connection is still held open).
fn answer_or_close(s: &mut TcpStream, within: Duration) -> Option<String> {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {
                return Some(String::from_utf8_lossy(&out).into_owned())
            }
            Err(_) => return None,
        }
    }
}

/// A visitor whose upload stalls, on a site that answered before reading it, must not hold
/// the pooled connection: the next visitor of the same site (same worker, same pool) is
/// answered at once, not after the uploader's body timeout.
#[test]
fn a_slow_uploader_does_not_delay_the_next_visitor() {
    let h = Harness::start(ProxyConfig {
        workers: 1,
        ..ProxyConfig::new(DOMAIN)
    });
    let mut up = TcpStream::connect(h.proxy).expect("connect");
    up.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    up.write_all(
        b"POST /alice/now HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nfirst bytes",
    )
    .expect("write");
    let head = read_head(&mut up, "the uploader got no answer");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut body = [0u8; 3];
    up.read_exact(&mut body).expect("body");
    assert_eq!(&body, b"now");
    // The upload is still open (999,989 bytes to go) and sends nothing more.
    let mut next = TcpStream::connect(h.proxy).expect("connect");
    let answer = answer_or_close(next_request(&mut next, "/alice/"), Duration::from_secs(10));
    let answer = answer.expect("the next visitor waited behind the stalled upload");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(up);
}

fn next_request<'a>(s: &'a mut TcpStream, path: &str) -> &'a mut TcpStream {
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    s
}

/// A request body that stops arriving is cut after the body timeout, on a site (408) and
/// on the API (the login route reads a body too), instead of holding the connection.
#[test]
fn a_stalled_request_body_is_cut_off() {
    let h = Harness::start(ProxyConfig {
        body_timeout: Duration::from_millis(800),
        ..ProxyConfig::new(DOMAIN)
    });
    for (path, expect) in [("/alice/", Some("HTTP/1.1 408")), ("/api/v1/echo", None)] {
        let mut s = TcpStream::connect(h.proxy).expect("connect");
        s.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nten bytes!")
                .as_bytes(),
        )
        .expect("write");
        let out = answer_or_close(&mut s, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{path}: the stalled body held the connection"));
        if let Some(status) = expect {
            assert!(out.starts_with(status), "{path}: {out}");
        }
        // Whatever was answered, the connection ends.
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        assert!(s.read_to_end(&mut rest).is_ok(), "{path}: not closed");
    }
}

/// A VM that takes a request and never answers gets the visitor a 504, not an endless wait.
#[test]
fn a_silent_vm_gets_a_gateway_timeout() {
    let h = Harness::start(ProxyConfig {
        upstream_timeout: Duration::from_millis(800),
        ..ProxyConfig::new(DOMAIN)
    });
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    let out = answer_or_close(next_request(&mut s, "/alice/hang"), Duration::from_secs(20))
        .expect("no answer from the proxy");
    assert!(out.starts_with("HTTP/1.1 504"), "{out}");
    // A response body that stops: the visitor's connection ends instead of hanging.
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    next_request(&mut s, "/alice/stall");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut got = Vec::new();
    let ended = s.read_to_end(&mut got);
    assert!(
        ended.is_ok() || ended.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a stalled response body held the visitor"
    );
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // The site still answers others.
    assert!(answered(
        &mut TcpStream::connect(h.proxy).expect("connect"),
        "/alice/"
    ));
}

/// A client that asks for a large response and reads none of it is disconnected after the
/// send timeout, which gives its connection slot back.
#[test]
fn a_client_that_reads_nothing_is_disconnected() {
    let h = Harness::start(ProxyConfig {
        send_timeout: Duration::from_millis(800),
        max_conns_per_address: 1,
        ..ProxyConfig::new(DOMAIN)
    });
    let src = Ipv4Addr::new(127, 0, 0, 21);
    let mut hog = connect_proxy_from(h.proxy, src);
    write!(
        hog,
        "GET /alice/big?n={} HTTP/1.1\r\nHost: x\r\n\r\n",
        500 * MB
    )
    .expect("write");
    // While the hog holds the only slot, its address is refused; once the proxy gives up
    // on it, the address is served again.
    common::poll(
        "the reader-less client to be dropped",
        Duration::from_secs(30),
        || {
            let mut s = connect_proxy_from(h.proxy, src);
            answered(&mut s, "/alice/").then_some(())
        },
    );
    drop(hog);
}

/// An upgraded tunnel counts against its address's connection cap while it is open, and
/// is closed when nothing moves through it for the tunnel idle timeout.
#[test]
fn tunnels_count_against_the_caps_and_close_when_idle() {
    let h = Harness::start(ProxyConfig {
        tunnel_idle_timeout: Duration::from_secs(3),
        max_conns_per_address: 1,
        ..ProxyConfig::new(DOMAIN)
    });
    let src = Ipv4Addr::new(127, 0, 0, 22);
    let mut t = connect_proxy_from(h.proxy, src);
    t.write_all(
        b"GET /alice/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("write");
    let head = read_head(&mut t, "closed before 101");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    t.write_all(b"ping").expect("write");
    let mut back = [0u8; 4];
    t.read_exact(&mut back).expect("echo");
    // The tunnel holds the address's one slot.
    let mut second = connect_proxy_from(h.proxy, src);
    assert!(
        !answered(&mut second, "/alice/"),
        "a tunnel was not counted"
    );
    // Idle: the proxy closes it, and the slot comes back.
    t.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rest = Vec::new();
    assert!(
        t.read_to_end(&mut rest).is_ok(),
        "the idle tunnel was not closed"
    );
    common::poll(
        "the tunnel's slot to come back",
        Duration::from_secs(10),
        || {
            let mut s = connect_proxy_from(h.proxy, src);
            answered(&mut s, "/alice/").then_some(())
        },
    );
}

/// A proxy with a TLS listener whose certificate (for DOMAIN and its wildcard) is signed by
/// a test CA, and a client configuration that trusts that CA and offers `alpn`.
fn tls_harness(alpn: &[&[u8]]) -> (Harness, Arc<rustls::ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![DOMAIN.to_string(), format!("*.{DOMAIN}")])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let store = roost::tls::CertStore::new(DOMAIN);
    store.install(
        roost::tls::certs::parse(
            "domain",
            "test",
            leaf.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .expect("parse"),
    );
    let server = store.server_config().expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(roost::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (
        Harness::start_with(ProxyConfig::new(DOMAIN), Some(server)),
        Arc::new(client),
    )
}

/// A blocking TLS connection to the harness's TLS listener, with SNI `name`.
fn tls_connect(
    h: &Harness,
    client: &Arc<rustls::ClientConfig>,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(h.tls.expect("tls listener")).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(client.clone(), server_name).expect("client");
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn over_tls_the_vm_is_told_https_and_upgrades_are_tunnelled() {
    let (h, client) = tls_harness(&[b"http/1.1"]);
    // A plain request: the VM sees proto=https whatever the client claimed.
    let mut s = tls_connect(&h, &client, &format!("alice.{DOMAIN}"));
    s.write_all(
        format!("GET /x HTTP/1.1\r\nHost: alice.{DOMAIN}\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).expect("echo json");
    assert_eq!(header(&v, "x-forwarded-proto"), vec!["https"], "{text}");
    assert!(
        header(&v, "forwarded")[0].ends_with(";proto=https"),
        "{text}"
    );
    // A returning client resumes its session (a ticket from the first connection) instead
    // of a full handshake.
    assert_eq!(s.conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    // A WebSocket-style upgrade through TLS: 101, then bytes both ways.
    let mut s = tls_connect(&h, &client, &format!("alice.{DOMAIN}"));
    s.write_all(
        b"GET /alice/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(
        s.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    for msg in [&b"hello"[..], &vec![7u8; 100_000][..]] {
        s.write_all(msg).expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg);
    }
}

#[test]
fn tls_clients_get_http2_by_alpn_and_the_handshake_has_a_deadline() {
    let (h, client) = tls_harness(&[b"h2", b"http/1.1"]);
    let mut s = tls_connect(&h, &client, DOMAIN);
    // Completing the handshake: ALPN chose h2, and the server speaks HTTP/2 (its
    // connection preface starts with a SETTINGS frame).
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("preface");
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).expect("settings");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(frame[3], 0x4, "first frame is SETTINGS");
    // A client that connects and never says hello is dropped (the header-read deadline,
    // 10 s by default), not held forever.
    let mut idle = TcpStream::connect(h.tls.expect("tls")).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the silent client got bytes");
    assert!(started.elapsed() < Duration::from_secs(25), "held open");
}

/// The presence behind `slug`'s route (as the hosting module keeps one per hosting).
fn presence_of(h: &Harness, slug: &str) -> Arc<roost::presence::Presence> {
    h.routes
        .snapshot()
        .get(slug)
        .expect("route")
        .presence
        .clone()
}

#[test]
fn a_request_to_a_sleeping_site_rings_and_is_served_once_it_wakes() {
    let h = Harness::default();
    let p = presence_of(&h, "alice");
    assert!(p.doze(), "nobody visits");
    // The actor's part: wake on the ring, as a QMP `cont` would.
    let rang = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (p, rang) = (p.clone(), rang.clone());
        h._rt.spawn(async move {
            p.rung().await;
            rang.store(true, std::sync::atomic::Ordering::SeqCst);
            p.set_awake();
        });
    }
    let v = echo_json(client().get(h.url("/alice/woken")).send().expect("get"));
    assert_eq!(v["path"], "/woken");
    assert!(
        rang.load(std::sync::atomic::Ordering::SeqCst),
        "served without a ring"
    );
    common::poll("the visit counted out", Duration::from_secs(10), || {
        (p.open() == 0).then_some(())
    });
    // Another site's sleep is not alice's.
    assert!(!presence_of(&h, "bob").asleep());
}

#[test]
fn a_sleeping_site_that_does_not_wake_in_time_gets_the_starting_page() {
    let h = Harness::start(ProxyConfig {
        wake_timeout: Duration::from_millis(300),
        ..ProxyConfig::new(DOMAIN)
    });
    let p = presence_of(&h, "alice");
    assert!(p.doze());
    let started = Instant::now();
    let r = client().get(h.url("/alice/")).send().expect("get");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        r.headers().get("x-upstream").is_none(),
        "reached the sleeping vm"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    common::poll("the visit counted out", Duration::from_secs(10), || {
        (p.open() == 0).then_some(())
    });
}

#[test]
fn a_visit_lasts_until_the_response_body_is_sent() {
    let h = Harness::default();
    let p = presence_of(&h, "alice");
    let mut s = TcpStream::connect(h.proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let n = 64 * MB;
    s.write_all(
        format!("GET /alice/big?n={n} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("write");
    let head = read_head(&mut s, "closed before the head");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // The head is here, the body is not read: the download is a visit in progress, so the
    // site cannot fall asleep under it.
    assert_eq!(p.open(), 1);
    assert!(!p.doze(), "dozed off during a download");
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("body");
    assert!(body.len() >= n, "{}", body.len());
    common::poll("the visit counted out", Duration::from_secs(10), || {
        (p.open() == 0).then_some(())
    });
    assert!(p.doze());
}

#[test]
fn an_ssh_connection_to_a_sleeping_vm_wakes_it_first_and_keeps_it_awake() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let echo = echo_server().await;
        let fw = Forwarders::new(Ipv4Addr::LOCALHOST).expect("forwarders");
        let port = free_port();
        let p = roost::presence::Presence::new();
        fw.ensure(port, echo, limits(true), p.clone())
            .await
            .expect("ensure");
        assert!(p.doze());
        let woke = {
            let p = p.clone();
            tokio::spawn(async move {
                p.rung().await;
                p.set_awake();
            })
        };
        assert_eq!(roundtrip_open(port, &p).await, b"hello");
        woke.await.expect("woken");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while p.open() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the session never counted out"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// One exchange with the echo server through `port`, checking that the open session counts
/// as a visit.
async fn roundtrip_open(port: u16, p: &roost::presence::Presence) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connect");
    s.write_all(b"hello").await.expect("write");
    let mut got = vec![0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .expect("an answer in time")
        .expect("read");
    assert_eq!(p.open(), 1, "an open session is a visit");
    got
}
