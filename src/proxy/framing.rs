//! Detection of ambiguous request framing that hyper tolerates.
//!
//! hyper refuses differing duplicate `Content-Length`s and a `Transfer-Encoding` that does
//! not end in `chunked`, but for `Content-Length` together with `Transfer-Encoding: chunked`
//! it silently drops the length, reads chunked and closes afterwards (RFC 9112 §6.3 allows
//! that). We want a 400 instead, and the service cannot see the dropped header, so the
//! connection's reader is wrapped in [`Sniffed`], which scans line starts of the raw bytes:
//! a block (text between two empty lines) holding both header lines raises a flag, and the
//! service answers 400 to the next request that carries `Transfer-Encoding`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const CL: &[u8] = b"content-length:";
const TE: &[u8] = b"transfer-encoding:";

/// A streaming scanner over raw request bytes.
#[derive(Debug, Default)]
pub struct FramingScan {
    prefix: [u8; 18],
    prefix_len: usize,
    line_len: usize,
    seen_cl: bool,
    seen_te: bool,
}

impl FramingScan {
    /// Feeds bytes; true if a block with both framing headers was completed by them.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut found = false;
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial(&data[..i]);
                    found |= self.end_line();
                    data = &data[i + 1..];
                }
                None => {
                    self.partial(data);
                    break;
                }
            }
        }
        found
    }

    fn partial(&mut self, s: &[u8]) {
        let take = (self.prefix.len() - self.prefix_len).min(s.len());
        for (d, b) in self.prefix[self.prefix_len..self.prefix_len + take]
            .iter_mut()
            .zip(s)
        {
            *d = b.to_ascii_lowercase();
        }
        self.prefix_len += take;
        self.line_len += s.len();
    }

    fn end_line(&mut self) -> bool {
        let p = &self.prefix[..self.prefix_len];
        let mut found = false;
        if self.line_len == 0 || (self.line_len == 1 && p == b"\r") {
            self.seen_cl = false;
            self.seen_te = false;
        } else {
            if p.starts_with(CL) {
                self.seen_cl = true;
            } else if p.starts_with(TE) {
                self.seen_te = true;
            }
            found = self.seen_cl && self.seen_te;
        }
        self.prefix_len = 0;
        self.line_len = 0;
        found
    }
}

/// A stream whose incoming bytes go through a [`FramingScan`].
pub struct Sniffed<S> {
    inner: S,
    scan: FramingScan,
    flag: Arc<AtomicBool>,
}

impl<S> Sniffed<S> {
    /// The wrapper and the flag it raises on ambiguous framing.
    pub fn new(inner: S) -> (Sniffed<S>, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (
            Sniffed {
                inner,
                scan: FramingScan::default(),
                flag: flag.clone(),
            },
            flag,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let this = &mut *self;
            if this.scan.feed(&buf.filled()[before..]) {
                this.flag.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(data: &[u8], piece: usize) -> bool {
        let mut s = FramingScan::default();
        data.chunks(piece).fold(false, |f, c| s.feed(c) | f)
    }

    #[test]
    fn finds_both_headers_in_one_head_however_split() {
        let cases: &[(&[u8], bool)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", true),
            (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n", true),
            (b"POST / HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
            // Two requests: one with each header is not ambiguous.
            (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
            // A header whose value mentions the other is not a header line.
            (b"GET / HTTP/1.1\r\nX: content-length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false),
        ];
        for (data, want) in cases {
            for piece in [1, 2, 3, 7, 64, 4096] {
                assert_eq!(
                    scan_in_pieces(data, piece),
                    *want,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
}
