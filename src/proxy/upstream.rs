//! Keep-alive HTTP/1.1 connections from one proxy worker to one site's VM.
//!
//! A [`Pool`] belongs to one worker thread and one boot of one VM (see
//! [`super::routes::Route::generation`]): a rebooted guest gets a new pool, so a request
//! never lands on a connection to the previous boot. A connection goes back to the pool
//! when its response body has been read to the end ([`PooledBody`]) and its request body
//! has been sent to the end (a VM may answer before it has read an upload: the connection
//! is then busy until the upload ends, and the next visitor must not wait behind it), and
//! is taken most recently used first. A response body that sends nothing for
//! [`PoolLimits::response_idle`] fails, which closes its connection. A request refused by a pooled connection before any byte of it was
//! written (the VM closed that connection) is retried on the next one, or a new one.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::deadline::TimedBody;

/// A client's request body on its way to a VM: bounded in idleness, and known when sent.
pub type ClientBody = TimedBody<Incoming>;

/// Why a request could not be sent to the VM or got no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddrV4, after: Duration },
    #[error("connect to {addr} failed")]
    Connect {
        addr: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {addr} failed")]
    Handshake {
        addr: SocketAddrV4,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {addr} failed")]
    Request {
        addr: SocketAddrV4,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// True when no connection to the VM could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout { .. } | UpstreamError::Connect { .. }
        )
    }
}

/// Limits of one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Idle connections kept; more are closed when they finish.
    pub max_idle: usize,
    /// A response body that sends nothing for this long fails (nginx's
    /// `proxy_read_timeout` between two reads).
    pub response_idle: Duration,
}

struct Idle {
    tx: SendRequest<ClientBody>,
    since: Instant,
}

/// The idle connections of one worker to one VM boot.
pub struct Pool {
    addr: SocketAddrV4,
    limits: PoolLimits,
    /// Oldest first; taken from the back (most recently used, likely still open).
    idle: Mutex<VecDeque<Idle>>,
}

impl Pool {
    pub fn new(addr: SocketAddrV4, limits: PoolLimits) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            limits,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// The VM's address this pool connects to.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Sends `req` (origin-form URI) on a pooled connection or a new one, made within
    /// `connect_timeout`.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ClientBody>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let sent = req.body().finished();
        while let Some(mut tx) = self.checkout() {
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, tx, sent)),
                Err(mut e) => match e.take_message() {
                    // Not a byte was written: the next connection gets it.
                    Some(r) => req = r,
                    None => return Err(self.request_error(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(connect_timeout).await?;
        match tx.try_send_request(req).await {
            Ok(resp) => Ok(self.wrap(resp, tx, sent)),
            Err(e) => Err(self.request_error(e.into_error())),
        }
    }

    fn request_error(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Request {
            addr: self.addr,
            source,
        }
    }

    /// The most recently returned live connection, dropping closed and stale ones.
    fn checkout(&self) -> Option<SendRequest<ClientBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop_back() {
            if !c.tx.is_closed() && c.since.elapsed() < self.limits.idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    fn checkin(&self, tx: SendRequest<ClientBody>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Closed and stale connections gather at the front; shed them there (one clock
        // read per check-in, not one per idle connection).
        while let Some(c) = idle.front() {
            if c.tx.is_closed() || now.duration_since(c.since) >= self.limits.idle_timeout {
                idle.pop_front();
            } else {
                break;
            }
        }
        if idle.len() >= self.limits.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { tx, since: now });
    }

    async fn connect(&self, after: Duration) -> Result<SendRequest<ClientBody>, UpstreamError> {
        let addr = self.addr;
        let stream = tokio::time::timeout(after, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { addr, after })?
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    fn wrap(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        tx: SendRequest<ClientBody>,
        sent: Arc<AtomicBool>,
    ) -> Response<PooledBody> {
        // A switched connection belongs to the tunnel, never to the pool.
        let back = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| (self.clone(), tx));
        let idle = self.limits.response_idle;
        resp.map(|inner| PooledBody {
            inner: TimedBody::new(inner, "response", idle),
            back,
            sent,
            done: false,
        })
    }
}

/// A response body that returns its connection to the pool once read to the end, if the
/// request body has been sent to the end too. Dropped earlier (the client went away), or
/// with the upload still going, the connection is closed instead.
pub struct PooledBody {
    inner: TimedBody<Incoming>,
    back: Option<(Arc<Pool>, SendRequest<ClientBody>)>,
    /// Set when the request body has been sent to its end.
    sent: Arc<AtomicBool>,
    done: bool,
}

impl Body for PooledBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.done = true,
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let finished = self.done || self.inner.is_end_stream();
        if finished && self.sent.load(Ordering::Acquire) {
            if let Some((pool, tx)) = self.back.take() {
                pool.checkin(tx);
            }
        }
    }
}
