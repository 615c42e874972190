//! The serial console hub of one VM: roost holds the one client connection QEMU's serial
//! socket accepts ([`super::argv::VmSpec::serial_socket`]) and fans the guest's output out
//! to any number of viewers, each first shown a scrollback of the last screens; viewers'
//! keystrokes go back to the guest.
//!
//! The reader never waits for a viewer: output goes into a bounded ring and a bounded
//! broadcast, and a viewer that falls behind the broadcast is told it lagged (the caller
//! drops it). So a slow or stalled browser can never stall the guest's UART. Input is
//! bounded too: when the guest does not read it, further keystrokes are refused, not
//! queued without end.
//!
//! The hub ends when QEMU closes the socket (the VM stopped) or when its last handle is
//! dropped; then QEMU accepts the next client. A hub started later seeds its scrollback
//! from the tail of the serial log, which QEMU appends to all along.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};

/// Chunks of output a viewer may be behind before it is dropped.
const VIEWER_BACKLOG: usize = 512;
/// Keystroke chunks waiting for the guest to read them.
const INPUT_BACKLOG: usize = 64;
/// The largest keystroke chunk accepted at once.
pub const MAX_INPUT: usize = 4096;

/// Why a console cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot connect to the serial console socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the console already has {0} viewers")]
    Full(usize),
    #[error("the console has closed (the VM stopped)")]
    Closed,
    #[error("the guest is not reading its console input")]
    InputBusy,
    #[error("input of {0} bytes is over the limit of {MAX_INPUT}")]
    InputTooLarge(usize),
}

struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Ring {
    fn push(&mut self, b: &[u8]) {
        let b = if b.len() > self.cap {
            &b[b.len() - self.cap..]
        } else {
            b
        };
        let over = (self.buf.len() + b.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(b);
    }
}

struct Shared {
    ring: Mutex<(Ring, Option<broadcast::Sender<Bytes>>)>,
    viewers: AtomicUsize,
    max_viewers: usize,
}

/// One VM's console hub. Dropping the last `Arc` disconnects from QEMU.
pub struct Hub {
    shared: Arc<Shared>,
    input: mpsc::Sender<Bytes>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Hub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One viewer: what it missed, then everything new. Counts as a viewer until dropped.
pub struct Viewer {
    pub scrollback: Vec<u8>,
    pub output: broadcast::Receiver<Bytes>,
    pub hub: Arc<Hub>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.hub.shared.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// Connects to QEMU's serial socket, with the tail of `log` as the first scrollback.
    pub async fn connect(
        socket: &Path,
        log: &Path,
        scrollback: usize,
        max_viewers: usize,
    ) -> Result<Arc<Hub>, ConsoleError> {
        let mut ring = Ring {
            buf: VecDeque::with_capacity(scrollback),
            cap: scrollback,
        };
        ring.push(&log_tail(log, scrollback));
        let stream = UnixStream::connect(socket)
            .await
            .map_err(ConsoleError::Connect)?;
        let (mut rd, mut wr) = stream.into_split();
        let (out, _) = broadcast::channel(VIEWER_BACKLOG);
        let shared = Arc::new(Shared {
            ring: Mutex::new((ring, Some(out))),
            viewers: AtomicUsize::new(0),
            max_viewers,
        });
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut g = lock(&shared.ring);
                            g.0.push(&buf[..n]);
                            if let Some(tx) = &g.1 {
                                // No receivers is fine: output is kept in the ring.
                                let _ = tx.send(Bytes::copy_from_slice(&buf[..n]));
                            }
                        }
                    }
                }
                // Viewers see the broadcast end.
                lock(&shared.ring).1 = None;
            })
        };
        let (input, mut keys) = mpsc::channel::<Bytes>(INPUT_BACKLOG);
        let writer = tokio::spawn(async move {
            while let Some(k) = keys.recv().await {
                if wr.write_all(&k).await.is_err() {
                    break;
                }
            }
        });
        Ok(Arc::new(Hub {
            shared,
            input,
            tasks: [reader.abort_handle(), writer.abort_handle()],
        }))
    }

    /// Adds a viewer: the scrollback and the live output from exactly after it.
    pub fn join(self: &Arc<Self>) -> Result<Viewer, ConsoleError> {
        let g = lock(&self.shared.ring);
        let tx = g.1.as_ref().ok_or(ConsoleError::Closed)?;
        let n = self.shared.viewers.fetch_add(1, Ordering::Relaxed);
        if n >= self.shared.max_viewers {
            self.shared.viewers.fetch_sub(1, Ordering::Relaxed);
            return Err(ConsoleError::Full(self.shared.max_viewers));
        }
        let (a, b) = g.0.buf.as_slices();
        Ok(Viewer {
            scrollback: [a, b].concat(),
            output: tx.subscribe(),
            hub: self.clone(),
        })
    }

    /// Sends keystrokes to the guest; refused (not queued) when it is not reading them.
    pub fn send(&self, keys: Bytes) -> Result<(), ConsoleError> {
        if keys.len() > MAX_INPUT {
            return Err(ConsoleError::InputTooLarge(keys.len()));
        }
        self.input.try_send(keys).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ConsoleError::InputBusy,
            mpsc::error::TrySendError::Closed(_) => ConsoleError::Closed,
        })
    }

    /// Viewers now.
    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Relaxed)
    }

    /// True once QEMU closed the socket.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.ring).1.is_none()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last `max` bytes of the serial log, starting after a line break when cut (so no
/// screen starts in the middle of an escape sequence). Empty when there is no log.
fn log_tail(path: &Path, max: usize) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(max);
    if f.take(max as u64).read_to_end(&mut out).is_err() {
        return Vec::new();
    }
    if start > 0 {
        match out.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.drain(..=i);
            }
            None => out.clear(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::UnixListener;

    /// A stand-in for QEMU's serial socket: one client, a log file.
    async fn qemu(
        dir: &Path,
        log: &[u8],
    ) -> (std::path::PathBuf, std::path::PathBuf, UnixListener) {
        let sock = dir.join("serial.sock");
        let logp = dir.join("serial.log");
        std::fs::write(&logp, log).expect("log");
        (sock.clone(), logp, UnixListener::bind(&sock).expect("bind"))
    }

    async fn next(v: &mut Viewer) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), v.output.recv())
            .await
            .expect("output in time")
            .expect("open")
            .to_vec()
    }

    #[test]
    fn the_ring_keeps_the_newest_bytes() {
        let mut r = Ring {
            buf: VecDeque::new(),
            cap: 4,
        };
        r.push(b"ab");
        r.push(b"cde");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"bcde");
        r.push(b"0123456789");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"6789");
    }

    #[test]
    fn the_log_tail_starts_at_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        std::fs::write(&p, b"first line\nsecond\nthird").expect("write");
        assert_eq!(log_tail(&p, 100), b"first line\nsecond\nthird");
        assert_eq!(log_tail(&p, 10), b"third");
        assert_eq!(log_tail(&dir.path().join("none"), 10), b"");
    }

    #[tokio::test]
    async fn fans_out_with_scrollback_and_takes_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sock, log, listener) = qemu(dir.path(), b"old boot messages\nlogin: ").await;
        let hub = Hub::connect(&sock, &log, 1024, 4).await.expect("connect");
        let (mut guest, _) = listener.accept().await.expect("accept");
        let mut a = hub.join().expect("a");
        assert_eq!(a.scrollback, b"old boot messages\nlogin: ");
        guest.write_all(b"hello").await.expect("write");
        assert_eq!(next(&mut a).await, b"hello");
        // A later viewer sees what the first saw, in its scrollback.
        let mut b = hub.join().expect("b");
        assert!(b.scrollback.ends_with(b"login: hello"));
        assert_eq!(hub.viewers(), 2);
        guest.write_all(b"!").await.expect("write");
        assert_eq!(next(&mut a).await, b"!");
        assert_eq!(next(&mut b).await, b"!");
        hub.send(Bytes::from_static(b"root\r")).expect("send");
        let mut got = [0u8; 5];
        guest.read_exact(&mut got).await.expect("input");
        assert_eq!(&got, b"root\r");
        assert!(matches!(
            hub.send(Bytes::from(vec![0; MAX_INPUT + 1])),
            Err(ConsoleError::InputTooLarge(_))
        ));
        drop(b);
        assert_eq!(hub.viewers(), 1);
        // QEMU goes away: viewers see the end, and no one can join.
        drop(guest);
        drop(listener);
        let end = tokio::time::timeout(Duration::from_secs(5), a.output.recv())
            .await
            .expect("end in time");
        assert!(end.is_err(), "closed");
        assert!(matches!(hub.join(), Err(ConsoleError::Closed)));
    }

    #[tokio::test]
    async fn a_viewer_that_does_not_read_lags_without_holding_up_the_guest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sock, log, listener) = qemu(dir.path(), b"").await;
        let hub = Hub::connect(&sock, &log, 4096, 4).await.expect("connect");
        let (mut guest, _) = listener.accept().await.expect("accept");
        let mut idle = hub.join().expect("viewer");
        // Far more than the viewer's backlog: every write completes, nobody reads.
        let chunk = vec![b'x'; 1024];
        let total = (VIEWER_BACKLOG + 64) * chunk.len() * 4;
        let writer = tokio::spawn(async move {
            let mut sent = 0;
            while sent < total {
                guest.write_all(&chunk).await.expect("guest write");
                sent += chunk.len();
            }
            guest
        });
        let _guest = tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the guest was never stalled")
            .expect("join");
        // The idle viewer is told it fell behind.
        let lagged = loop {
            match idle.output.try_recv() {
                Err(broadcast::error::TryRecvError::Lagged(n)) => break n,
                Ok(_) => continue,
                Err(e) => panic!("unexpected {e:?}"),
            }
        };
        assert!(lagged > 0);
    }

    #[tokio::test]
    async fn viewers_are_capped_and_the_last_one_disconnects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sock, log, listener) = qemu(dir.path(), b"").await;
        let hub = Hub::connect(&sock, &log, 4096, 1).await.expect("connect");
        let (mut guest, _) = listener.accept().await.expect("accept");
        let v = hub.join().expect("first");
        assert!(matches!(hub.join(), Err(ConsoleError::Full(1))));
        drop(v);
        drop(hub);
        // QEMU sees its client go, so it can accept the next one.
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), guest.read(&mut b))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(n, 0);
    }
}
