//! Deadlines on what a peer can hold open by going quiet: a request or response body that
//! stops sending ([`TimedBody`]), and a client that stops reading ([`SendDeadline`]).
//!
//! nginx's `client_body_timeout`, `proxy_read_timeout` and `send_timeout` are the model:
//! each bounds the wait between two successive operations, not the whole transfer, so a
//! slow but moving upload or download is never cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A body sent nothing for its idle deadline.
#[derive(Debug, thiserror::Error)]
#[error("{side} body sent nothing for {after:?}")]
pub struct BodyStalled {
    pub side: &'static str,
    pub after: Duration,
}

/// True when `e` or one of its sources is a [`BodyStalled`] of `side`.
pub fn stalled(e: &(dyn std::error::Error + 'static), side: &str) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.downcast_ref::<BodyStalled>()
            .is_some_and(|s| s.side == side)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// A timer that runs only while the guarded operation is pending, restarted by progress.
struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(after: Duration) -> IdleTimer {
        IdleTimer { after, sleep: None }
    }

    /// The operation made progress: the next wait starts a new deadline.
    fn progress(&mut self) {
        self.sleep = None;
    }

    /// The operation is pending: arms the deadline (once) and tells whether it has passed.
    /// Registers `cx` for the wake-up at the deadline.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let after = self.after;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A body that fails with [`BodyStalled`] when no frame arrives for `idle`, and records in
/// a shared flag when it has been read to the end (so a connection carrying it is known to
/// be free again).
pub struct TimedBody<B> {
    inner: B,
    side: &'static str,
    timer: IdleTimer,
    finished: Arc<AtomicBool>,
}

impl<B: Body> TimedBody<B> {
    pub fn new(inner: B, side: &'static str, idle: Duration) -> TimedBody<B> {
        let finished = Arc::new(AtomicBool::new(inner.is_end_stream()));
        TimedBody {
            inner,
            side,
            timer: IdleTimer::new(idle),
            finished,
        }
    }

    /// Set once the body has been read to its end.
    pub fn finished(&self) -> Arc<AtomicBool> {
        self.finished.clone()
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => {
                this.timer.progress();
                if r.is_ok() && this.inner.is_end_stream() {
                    this.finished.store(true, Ordering::Release);
                }
                Poll::Ready(Some(r.map_err(Into::into)))
            }
            Poll::Pending if this.timer.expired(cx) => {
                Poll::Ready(Some(Err(Box::new(BodyStalled {
                    side: this.side,
                    after: this.timer.after,
                }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose writes fail with `TimedOut` when the peer takes nothing for `idle`
/// (a client that stops reading its response, or the far end of a tunnel). Reads are
/// untouched: hyper bounds the wait for a request head, tunnels their own idleness.
pub struct SendDeadline<S> {
    inner: S,
    timer: IdleTimer,
}

impl<S> SendDeadline<S> {
    pub fn new(inner: S, idle: Duration) -> SendDeadline<S> {
        SendDeadline {
            inner,
            timer: IdleTimer::new(idle),
        }
    }

    fn check<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending if self.timer.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer took nothing within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                self.timer.progress();
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that yields one frame, then never another.
    struct OneThenSilence(bool);

    impl Body for OneThenSilence {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
            }
        }
    }

    #[tokio::test]
    async fn a_silent_body_fails_after_its_idle_time_and_names_its_side() {
        let mut b = TimedBody::new(OneThenSilence(false), "request", Duration::from_millis(50));
        assert!(b.frame().await.is_some_and(|f| f.is_ok()));
        let e = b.frame().await.expect("a frame").expect_err("stalled");
        assert!(stalled(&*e, "request"));
        assert!(!stalled(&*e, "response"));
        assert!(!b.finished().load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_body_read_to_the_end_is_marked_finished() {
        let full = http_body_util::Full::new(bytes::Bytes::from_static(b"abc"));
        let mut b = TimedBody::new(full, "request", Duration::from_secs(1));
        let flag = b.finished();
        assert!(!flag.load(Ordering::Acquire));
        while let Some(f) = b.frame().await {
            f.expect("frame");
        }
        assert!(flag.load(Ordering::Acquire));
        let empty = TimedBody::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
            "request",
            Duration::from_secs(1),
        );
        assert!(
            empty.finished().load(Ordering::Acquire),
            "an empty body is finished at once"
        );
    }

    #[tokio::test]
    async fn writes_to_a_peer_that_takes_nothing_time_out() {
        use tokio::io::AsyncWriteExt;
        // A duplex pipe with a 16-byte buffer that nobody reads.
        let (a, _b) = tokio::io::duplex(16);
        let mut w = SendDeadline::new(a, Duration::from_millis(50));
        let e = w.write_all(&[0u8; 64]).await.expect_err("times out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
