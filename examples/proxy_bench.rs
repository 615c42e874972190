//! Benchmark helper for `scripts/bench-proxy.sh`: runs one piece of the proxy.
//!
//! ```text
//! proxy_bench http    LISTEN UPSTREAM           # serve_http, route "bench" -> UPSTREAM
//! proxy_bench https   LISTEN UPSTREAM CERT KEY  # the same behind roost's TLS listener, set
//!                                               # up as `roost serve` does with [https]
//!                                               # cert_file/key_file (a plain listener on
//!                                               # an ephemeral loopback port beside it)
//! proxy_bench forward PORT TARGET splice|copy [BIND [transparent]]
//!                                               # one SSH forwarder port on BIND (default
//!                                               # 127.0.0.1); `transparent`: connect from
//!                                               # the client's address, mark CLIENT_MARK
//! proxy_bench client-routing BRIDGE             # the policy route of transparent replies
//!                                               # (net::egress::ensure_client_routing, in
//!                                               # this namespace); prints the mark
//! proxy_bench sink    LISTEN                    # accepts, discards, closes on EOF
//! proxy_bench send    ADDR BYTES                # sends BYTES, waits for close, prints MiB/s
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use roost::forward::{ForwardLimits, Forwarders};
use roost::net::egress::{ensure_client_routing, CLIENT_MARK};
use roost::proxy::{
    serve_http, Http01, HttpsPolicy, Listeners, ProxyConfig, Route, RouteStatus, Routes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The forwarder's own lines (e.g. "ssh client address not kept") on stderr; the
    // netlink crate's complaints about attributes of newer kernels are left out.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
                .add_directive("netlink_packet_route=error".parse()?),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// The one route every proxy part serves: "bench" -> `upstream`.
fn bench_routes(upstream: SocketAddrV4) -> Routes {
    Routes::new(vec![Route {
        generation: 0,
        slug: "bench".into(),
        hosting_id: "bench".into(),
        upstream: Some(upstream),
        ssh: None,
        status: RouteStatus::Live,
        presence: roost::presence::Presence::new(),
    }])
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let arg = |i: usize| args.get(i).cloned().context("missing argument");
    match arg(0)?.as_str() {
        "http" => {
            let listen: SocketAddr = arg(1)?.parse()?;
            let upstream: SocketAddrV4 = arg(2)?.parse()?;
            let l = tokio::net::TcpListener::bind(listen).await?;
            serve_http(
                l,
                axum::Router::new(),
                bench_routes(upstream),
                ProxyConfig::new("bench.test"),
                std::future::pending(),
            )
            .await;
        }
        "https" => {
            let listen: SocketAddr = arg(1)?.parse()?;
            let upstream: SocketAddrV4 = arg(2)?.parse()?;
            let (cert, key) = (arg(3)?, arg(4)?);
            // What tls::manager::start does with the operator's files.
            let store = roost::tls::CertStore::new("bench.test");
            store.install(roost::tls::certs::load_files(
                roost::tls::manager::FILE_SLOT,
                cert.as_ref(),
                key.as_ref(),
            )?);
            let defaults = roost::config::HttpsConfig::default();
            let mut cfg = ProxyConfig::new("bench.test");
            cfg.https = Some(HttpsPolicy {
                port: listen.port(),
                redirect: defaults.redirect,
                hsts: defaults.hsts,
                http01: Http01(std::sync::Arc::new(|_| None)),
            });
            let listeners = Listeners {
                plain: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
                tls: Some((
                    tokio::net::TcpListener::bind(listen).await?,
                    store.server_config()?,
                )),
            };
            roost::proxy::serve(
                listeners,
                axum::Router::new(),
                bench_routes(upstream),
                cfg,
                std::future::pending(),
            )
            .await;
        }
        "forward" => {
            let port: u16 = arg(1)?.parse()?;
            let target: SocketAddrV4 = arg(2)?.parse()?;
            let splice = arg(3)? == "splice";
            let bind: Ipv4Addr = match args.get(4) {
                Some(b) => b.parse()?,
                None => Ipv4Addr::LOCALHOST,
            };
            let client_mark = match args.get(5).map(String::as_str) {
                None => None,
                Some("transparent") => Some(CLIENT_MARK),
                Some(other) => bail!("unknown forward option {other}"),
            };
            let fw = Forwarders::new(bind)?;
            let limits = ForwardLimits {
                splice,
                client_mark,
                ..ForwardLimits::default()
            };
            fw.ensure(port, target, limits, roost::presence::Presence::new())
                .await?;
            std::future::pending::<()>().await;
        }
        "client-routing" => {
            let handle = roost::net::netlink()?;
            ensure_client_routing(&handle, &arg(1)?).await?;
            println!("{CLIENT_MARK:#x}");
        }
        "sink" => {
            let l = tokio::net::TcpListener::bind(arg(1)?.parse::<SocketAddr>()?).await?;
            loop {
                let (mut s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        }
        "send" => {
            let addr: SocketAddr = arg(1)?.parse()?;
            let total: u64 = arg(2)?.parse()?;
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let buf = vec![0u8; 1 << 16];
            let started = Instant::now();
            let mut left = total;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..k]).await?;
                left -= k as u64;
            }
            s.shutdown().await?;
            let mut b = [0u8; 16];
            // The sink closes after EOF: every byte has crossed when this returns 0.
            let n = tokio::time::timeout(Duration::from_secs(120), s.read(&mut b)).await??;
            if n != 0 {
                bail!("unexpected bytes from the sink");
            }
            let secs = started.elapsed().as_secs_f64();
            println!("{:.1}", total as f64 / (1 << 20) as f64 / secs);
        }
        other => bail!("unknown mode {other}"),
    }
    Ok(())
}
