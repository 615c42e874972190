//! Byte-moving helpers shared by the SSH forwarder and the HTTP proxy's upgraded tunnels:
//! when bytes last moved, and a watchdog that ends a transfer idle for too long.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The last time bytes moved, and how many, shared by both directions; and how many came
/// from the client.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    bytes: AtomicU64,
    from_client: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
        }
    }
    pub(crate) fn client_sent(&self, n: usize) {
        self.from_client.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn touch(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    pub(crate) fn total(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Runs `work` until it ends, nothing moves for `idle`, or the client has sent nothing
/// `silent` after the start.
pub(crate) async fn with_idle_timeout<T>(
    work: impl Future<Output = std::io::Result<T>>,
    activity: &Activity,
    idle: Duration,
    silent: Duration,
) -> std::io::Result<T> {
    let watchdog = async {
        loop {
            let left = idle.saturating_sub(activity.idle_for());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    };
    let quiet_client = async {
        tokio::time::sleep(silent).await;
        if activity.from_client.load(Ordering::Relaxed) > 0 {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = work => r,
        _ = watchdog => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")),
        _ = quiet_client => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client sent nothing")),
    }
}

/// A stream wrapper that reports reads to an [`Activity`] (for the copy fallback).
pub(crate) struct Counted<'a, S> {
    inner: &'a mut S,
    activity: &'a Activity,
}

impl<'a, S> Counted<'a, S> {
    pub(crate) fn new(inner: &'a mut S, activity: &'a Activity) -> Self {
        Counted { inner, activity }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.touch(n);
            self.activity.client_sent(n);
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.activity.touch(*n);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
