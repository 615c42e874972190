//! Serving a hickory `RequestHandler` on UDP and TCP at one address, with a stop signal:
//! the plumbing shared by the guests' forwarder and the ACME challenge server.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::server::RequestHandler;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Tries at binding UDP and TCP to one kernel-chosen port before giving up.
const BIND_ATTEMPTS: usize = 8;
/// An idle TCP client is dropped after this.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A socket that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for DNS on {proto} {addr}")]
pub struct BindError {
    pub proto: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// A running server: `shutdown` stops it and waits; dropping it stops it too (the sockets
/// close once the serving task has seen the signal).
pub struct Serving {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    what: &'static str,
}

impl Serving {
    /// Binds UDP and TCP on `listen` (the same port) and serves `handler` on the current
    /// tokio runtime; `what` names it in logs. `tcp_buffer` is the responses queued per
    /// TCP connection.
    pub async fn start<H: RequestHandler>(
        listen: SocketAddr,
        handler: H,
        tcp_buffer: usize,
        what: &'static str,
    ) -> Result<Serving, BindError> {
        let (udp, tcp) = bind(listen).await?;
        let local_addr = udp.local_addr().map_err(|source| BindError {
            proto: "udp",
            addr: listen,
            source,
        })?;
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, tcp_buffer);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(server, stopped, what));
        Ok(Serving {
            local_addr,
            stop,
            task,
            what,
        })
    }

    /// The bound address (the chosen port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits until both sockets are closed. Queries in flight are dropped.
    pub async fn shutdown(self) {
        let Serving {
            stop, task, what, ..
        } = self;
        // The serving task may already have ended on its own (and logged why).
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "{what} task failed");
        }
    }
}

/// Runs until `stopped` fires or its sender is dropped, then shuts the server down.
async fn serve<H: RequestHandler>(
    mut server: Server<H>,
    stopped: oneshot::Receiver<()>,
    what: &'static str,
) {
    let token = server.shutdown_token().clone();
    let done = server.block_until_done();
    tokio::pin!(done);
    let result = tokio::select! {
        result = &mut done => result,
        _ = stopped => {
            token.cancel();
            done.await
        }
    };
    match result {
        Ok(()) => tracing::info!("{what} stopped"),
        Err(e) => tracing::error!(error = %e, "{what} stopped"),
    }
}

/// Binds UDP, then TCP on the same port. With port 0 the kernel picks the UDP port, which
/// may be taken for TCP: then both are tried again.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), BindError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp_err = |source| BindError {
            proto: "udp",
            addr: listen,
            source,
        };
        let udp = UdpSocket::bind(listen).await.map_err(udp_err)?;
        let mut tcp_addr = listen;
        if listen.port() == 0 {
            tcp_addr.set_port(udp.local_addr().map_err(udp_err)?.port());
        }
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if listen.port() == 0
                    && e.kind() == io::ErrorKind::AddrInUse
                    && attempt < BIND_ATTEMPTS =>
            {
                continue
            }
            Err(source) => {
                return Err(BindError {
                    proto: "tcp",
                    addr: tcp_addr,
                    source,
                })
            }
        }
    }
}
