//! The SSH forwarder: one listening socket per hosting port, bytes copied to the VM's :22.
//!
//! It never terminates SSH. Each port caps its live connections, the live connections of
//! one client address (below the port's cap, so one address cannot lock the owner out) and
//! the new connections one client address may open per minute (extra ones are accepted and
//! closed at once: sshd forks and re-executes itself for every connection, which scans and
//! password guessing would make the guest pay for). It closes connections whose client
//! says nothing at first, and connections idle in both directions. `remove`
//! stops the listener and closes that port's live connections (they are tasks owned by the
//! listener's task, so aborting it drops them all). Bytes move with `splice(2)` through a
//! pipe (no copy into user space), falling back to a user-space copy if splice is refused.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use crate::idle::{with_idle_timeout, Activity, Counted};
use crate::metrics::{SshMetrics, SshRefusal};
use crate::presence::Presence;

/// Errors of the forwarder. Messages are short; causes are in `source`.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("port {port} is already in use on this host")]
    PortInUse {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on port {port}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the forwarders' runtime")]
    Runtime(#[source] std::io::Error),
    #[error("accept failed")]
    Accept(#[source] std::io::Error),
}

/// Per-port limits of the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Live connections per port; the next ones are closed at once.
    pub max_conns: usize,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Connecting to the VM gives up after this.
    pub connect_timeout: Duration,
    /// Use `splice(2)`; `false` forces `copy_bidirectional` (benchmarks, odd kernels).
    pub splice: bool,
    /// New connections per minute that one client address may open to a port, all usable
    /// at once and replenished evenly; the next ones are closed at once. 0 counts as 1.
    pub new_conns_per_minute: u32,
    /// Live connections one client address may hold on a port: below `max_conns`, so one
    /// address can never fill a port and lock its owner out. 0 counts as 1.
    pub max_conns_per_address: usize,
    /// A client that has sent nothing this long after connecting is closed (an SSH client
    /// sends its version string at once), so silent connections cannot hold slots for
    /// `idle_timeout`.
    pub silent_timeout: Duration,
    /// Connect to the VM from the client's own address (`IP_TRANSPARENT`), with this
    /// packet mark, which the firewall and a policy route use to bring the replies back
    /// to the forwarder. `None`: connect from the host's own address.
    pub client_mark: Option<u32>,
    /// A connection to a sleeping hosting waits this long for its VM to wake, then is
    /// closed.
    pub wake_timeout: Duration,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        ForwardLimits {
            max_conns: 32,
            idle_timeout: Duration::from_secs(30 * 60),
            connect_timeout: Duration::from_secs(5),
            splice: true,
            new_conns_per_minute: 60,
            max_conns_per_address: 8,
            silent_timeout: Duration::from_secs(20),
            client_mark: None,
            wake_timeout: Duration::from_secs(15),
        }
    }
}

struct Port {
    target: SocketAddrV4,
    limits: ForwardLimits,
    presence: Arc<Presence>,
    task: JoinHandle<()>,
}

impl Port {
    /// Aborts the listener task (and with it every connection task it owns) and waits
    /// until it is gone, so the socket is closed and the port can be bound again.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The set of SSH forwards. Cloning gives another handle to the same set.
///
/// Operations are serialised by one async lock, so `ensure` and `remove` of the same port
/// never race. The listeners and connections run on the forwarders' own runtime (threads
/// named `roost-ssh`), so nothing the daemon's runtime does (store writes that fsync, QMP,
/// netlink, nft) delays forwarded bytes. Dropping the last handle stops every listener.
#[derive(Clone)]
pub struct Forwarders {
    bind: Ipv4Addr,
    ports: Arc<Mutex<HashMap<u16, Port>>>,
    runtime: Arc<OwnRuntime>,
    metrics: SshMetrics,
}

/// A runtime that may be dropped from async code (it shuts down in the background).
struct OwnRuntime {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// True when nothing listens on `0.0.0.0:port` (a bind test, so it is only a hint).
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

impl Forwarders {
    /// Forwarders listening on `bind` (`0.0.0.0` in production, loopback in tests), with
    /// one runtime thread per core.
    pub fn new(bind: Ipv4Addr) -> Result<Forwarders, ForwardError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("roost-ssh")
            .enable_all()
            .build()
            .map_err(ForwardError::Runtime)?;
        Ok(Forwarders {
            bind,
            ports: Arc::new(Mutex::new(HashMap::new())),
            runtime: Arc::new(OwnRuntime {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            }),
            metrics: SshMetrics::default(),
        })
    }

    /// These forwarders, counting their ports and connections in `metrics`.
    pub fn with_metrics(mut self, metrics: SshMetrics) -> Forwarders {
        self.metrics = metrics;
        self
    }

    /// Makes `port` forward to `target`, each connection counted as a visit of `presence`
    /// (and waking a sleeping VM first). Idempotent; a changed target, limits or presence
    /// re-binds the port (live connections to the old target are closed).
    pub async fn ensure(
        &self,
        port: u16,
        target: SocketAddrV4,
        limits: ForwardLimits,
        presence: Arc<Presence>,
    ) -> Result<(), ForwardError> {
        let rt = self.runtime.handle.clone();
        let mut ports = self.ports.lock().await;
        if let Some(p) = ports.get(&port) {
            if p.target == target
                && p.limits == limits
                && p.presence == presence
                && !p.task.is_finished()
            {
                return Ok(());
            }
        }
        if let Some(old) = ports.remove(&port) {
            old.stop().await;
        }
        // Bound and registered with the forwarders' own reactor, not the caller's.
        let listener = {
            let _in_runtime = rt.enter();
            let listener = bind(self.bind, port)?;
            TcpListener::from_std(listener).map_err(|source| ForwardError::Bind { port, source })?
        };
        let task = rt.spawn(accept_loop(
            listener,
            port,
            target,
            limits,
            presence.clone(),
            self.metrics.clone(),
        ));
        tracing::info!(port, %target, "ssh forward listening");
        ports.insert(
            port,
            Port {
                target,
                limits,
                presence,
                task,
            },
        );
        self.metrics.set_forwards(ports.len());
        Ok(())
    }

    /// Stops listening on `port` and closes its live connections; when it returns the port
    /// is free. False if it was not forwarded.
    pub async fn remove(&self, port: u16) -> bool {
        let mut ports = self.ports.lock().await;
        match ports.remove(&port) {
            Some(p) => {
                p.stop().await;
                self.metrics.set_forwards(ports.len());
                tracing::info!(port, "ssh forward removed");
                true
            }
            None => false,
        }
    }

    /// The forwarded ports with their targets, sorted by port.
    pub async fn ports(&self) -> Vec<(u16, SocketAddrV4)> {
        let mut v: Vec<_> = self
            .ports
            .lock()
            .await
            .iter()
            .map(|(p, f)| (*p, f.target))
            .collect();
        v.sort();
        v
    }
}

fn bind(ip: Ipv4Addr, port: u16) -> Result<std::net::TcpListener, ForwardError> {
    let addr = SocketAddr::from((ip, port));
    let sock = socket2_like_bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ForwardError::PortInUse { port, source }
        } else {
            ForwardError::Bind { port, source }
        }
    })?;
    sock.set_nonblocking(true)
        .map_err(|source| ForwardError::Bind { port, source })?;
    Ok(sock)
}

/// Binds with `SO_REUSEADDR` (so a port in TIME_WAIT after a removal can be reused, as
/// tokio does) but without `SO_REUSEPORT` (so a port someone listens on is an error).
fn socket2_like_bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    let l = sock.listen(128)?;
    l.into_std()
}

/// Size of a port's per-address table at which addresses with a full quota are dropped.
const FORGET_ADDRESSES_ABOVE: usize = 1024;

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    target: SocketAddrV4,
    limits: ForwardLimits,
    presence: Arc<Presence>,
    metrics: SshMetrics,
) {
    let mut conns = JoinSet::new();
    let per_minute =
        std::num::NonZeroU32::new(limits.new_conns_per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    let by_address: governor::DefaultKeyedRateLimiter<std::net::IpAddr> =
        governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute));
    let live_by_address = Arc::new(std::sync::Mutex::new(HashMap::new()));
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(port, error = %e, "ssh accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if by_address.check_key(&peer.ip()).is_err() {
            // Not a warning: a scan would make one per port and per attempt.
            tracing::debug!(port, %peer, "ssh connection refused: too many new connections from this address");
            metrics.refused(SshRefusal::RateLimited);
            drop(client);
            continue;
        }
        // Addresses back to a full quota are forgotten, so a scan from many addresses
        // cannot grow the table without bound.
        if by_address.len() > FORGET_ADDRESSES_ABOVE {
            by_address.retain_recent();
        }
        while conns.try_join_next().is_some() {}
        if conns.len() >= limits.max_conns {
            tracing::warn!(port, %peer, max = limits.max_conns, "ssh connection refused: per-port cap reached");
            metrics.refused(SshRefusal::PortFull);
            drop(client);
            continue;
        }
        let Some(slot) =
            AddressSlot::take(&live_by_address, peer.ip(), limits.max_conns_per_address)
        else {
            tracing::debug!(port, %peer, "ssh connection refused: this address holds its share of the port");
            metrics.refused(SshRefusal::AddressFull);
            drop(client);
            continue;
        };
        let open = metrics.accepted();
        // Counted in before `asleep` is read (see `presence`); an open session keeps the
        // VM awake.
        let visit = presence.enter();
        let presence = presence.clone();
        conns.spawn(async move {
            let _slot = slot;
            let _open = open;
            let _visit = visit;
            if presence.asleep() {
                tracing::info!(port, %peer, "ssh connection wakes a sleeping vm");
                if !presence.wake(limits.wake_timeout).await {
                    tracing::warn!(port, %peer, "the vm did not wake in time; connection closed");
                    return;
                }
            }
            match forward(client, peer, target, limits).await {
                Ok((up, down)) => tracing::debug!(port, %peer, up, down, "ssh connection closed"),
                Err(e) => tracing::info!(port, %peer, error = %e, "ssh connection ended"),
            }
        });
    }
}

/// One client address's share of a port's live connections, given back on drop.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl AddressSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        max: usize,
    ) -> Option<AddressSlot> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Buffer per direction of the user-space copy, the fallback when splice is refused (so
/// 512 KiB per connection there). tokio's default of 8 KiB was measured at less than half
/// of splice's throughput; 256 KiB is on par with it (docs/benchmarks.md).
const COPY_BUF: usize = 256 << 10;

/// Connects to `target` and moves bytes both ways until both sides close, an error, or
/// `limits.idle_timeout` without traffic. Returns bytes (client→target, target→client).
pub(crate) async fn forward(
    client: TcpStream,
    peer: SocketAddr,
    target: SocketAddrV4,
    limits: ForwardLimits,
) -> std::io::Result<(u64, u64)> {
    let upstream = tokio::time::timeout(
        limits.connect_timeout,
        connect_upstream(peer, target, limits.client_mark),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let activity = Activity::new();
    let copy = async {
        if limits.splice {
            match splice_bidirectional(&client, &upstream, &activity).await {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && activity.total() == 0 => {}
                other => return other,
            }
            tracing::debug!("splice refused; using copy_bidirectional");
        }
        let (mut c, mut u) = (client, upstream);
        let mut c2 = Counted::new(&mut c, &activity);
        tokio::io::copy_bidirectional_with_sizes(&mut c2, &mut u, COPY_BUF, COPY_BUF).await
    };
    with_idle_timeout(copy, &activity, limits.idle_timeout, limits.silent_timeout).await
}

/// Connects to the VM, from the client's own address when `mark` is set and the address
/// can be kept (see [`keepable`]); otherwise, and if the kernel refuses the transparent
/// socket, from the host's address as before.
async fn connect_upstream(
    peer: SocketAddr,
    target: SocketAddrV4,
    mark: Option<u32>,
) -> std::io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect(target).await;
    };
    let client = match keepable(peer.ip(), *target.ip()) {
        Ok(ip) => ip,
        Err(why) => {
            tracing::info!(%peer, why, "ssh client address not kept: the guest sees the gateway");
            return TcpStream::connect(target).await;
        }
    };
    let sock = tokio::net::TcpSocket::new_v4()?;
    let transparent =
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::IpTransparent, &true)
            .and_then(|()| {
                nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Mark, &mark)
            });
    if let Err(e) = transparent {
        tracing::warn!(%peer, error = %e, "ssh client address not kept: no transparent socket (CAP_NET_ADMIN?)");
        return TcpStream::connect(target).await;
    }
    // Port 0: the kernel picks a source port free for this (client, guest) pair.
    sock.bind(SocketAddr::from((client, 0)))?;
    sock.connect(SocketAddr::V4(target)).await
}

/// The client address the guest can be shown, or why not: an IPv6 client cannot appear
/// on an IPv4-only guest, and loopback, unspecified, multicast or broadcast sources, or
/// one on the guest's own side, would make the guest send its replies elsewhere.
fn keepable(peer: IpAddr, guest: Ipv4Addr) -> Result<Ipv4Addr, &'static str> {
    let ip = match peer {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(ip) => ip,
            None => return Err("an IPv6 client cannot be shown to an IPv4 guest"),
        },
    };
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err("a loopback or special client address");
    }
    if ip == guest {
        return Err("the guest's own address");
    }
    Ok(ip)
}

/// The pipe's capacity (asked with `F_SETPIPE_SZ`) and the most one splice call moves.
/// Larger than the 64 KiB default, so a busy connection takes fewer calls and wake-ups.
const SPLICE_CHUNK: usize = 1 << 20;

/// Both directions with `splice(2)`; returns (a→b, b→a) byte counts. `a` is the client.
async fn splice_bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    activity: &Activity,
) -> std::io::Result<(u64, u64)> {
    tokio::try_join!(
        splice_one_way(a, b, activity, true),
        splice_one_way(b, a, activity, false)
    )
}

/// Moves bytes `from` → `to` through a private pipe until `from` reaches EOF, then shuts
/// down `to`'s write side (so half-closes pass through, as with `copy_bidirectional`).
async fn splice_one_way(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Activity,
    from_client: bool,
) -> std::io::Result<u64> {
    let (pipe_r, pipe_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    // Refused above /proc/sys/fs/pipe-max-size: then the pipe keeps its default size and
    // splice simply moves less per call.
    let chunk = match nix::fcntl::fcntl(
        pipe_w.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(SPLICE_CHUNK as i32),
    ) {
        Ok(n) if n > 0 => n as usize,
        _ => 1 << 16,
    };
    let mut total = 0u64;
    loop {
        // Socket → pipe.
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_fd(), pipe_w.as_fd(), chunk)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // EOF from `from`: pass the half-close on. Shutting down a `&TcpStream` needs
            // the raw socket call; tokio only offers it on an owned or split stream.
            let _ = nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
            return Ok(total);
        }
        activity.touch(n);
        if from_client {
            activity.client_sent(n);
        }
        // Pipe → socket, until the pipe is empty.
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_fd(), to.as_fd(), left)
            }) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "peer stopped reading",
                    ))
                }
                Ok(m) => {
                    left -= m;
                    total += m as u64;
                    activity.touch(0);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One non-blocking `splice(2)` call without offsets (both ends are a socket or a pipe).
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> std::io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed), the
    // offsets are null as splice requires for pipes and sockets, and no memory is passed.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_client_addresses_a_guest_can_be_shown() {
        let guest = Ipv4Addr::new(10, 88, 0, 2);
        let v4 = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            keepable(v4("198.51.100.7"), guest),
            Ok(Ipv4Addr::new(198, 51, 100, 7))
        );
        assert_eq!(
            keepable(v4("::ffff:198.51.100.7"), guest),
            Ok(Ipv4Addr::new(198, 51, 100, 7))
        );
        for no in [
            "2001:db8::7",
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "10.88.0.2",
        ] {
            assert!(keepable(v4(no), guest).is_err(), "{no}");
        }
    }
}
