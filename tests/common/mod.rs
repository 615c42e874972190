//! Shared helpers for integration tests: the privileged-test switch, private network
//! namespaces, polling, floods, and the one daemon harness ([`daemon::Daemon`]).
#![allow(dead_code)]

pub mod daemon;
pub mod guest;
pub mod pebble;

use std::time::{Duration, Instant};

/// The one switch that enables tests needing root, network namespaces or QEMU.
/// `scripts/test.sh` sets it; plain `cargo test` leaves it unset and those tests skip.
pub const PRIVILEGED_ENV: &str = "ROOST_PRIVILEGED_TESTS";

/// True when privileged tests should run. Prints a skip line otherwise.
pub fn privileged(test: &str) -> bool {
    if std::env::var(PRIVILEGED_ENV).as_deref() == Ok("1") {
        true
    } else {
        eprintln!("skipping {test}: set {PRIVILEGED_ENV}=1 (scripts/test.sh does) to run it");
        false
    }
}

/// Runs `f` on a fresh thread that has its own, new network namespace (with `lo` up).
///
/// The namespace is unnamed: it disappears by itself when the thread and every
/// process started from it (QEMU, the daemon, curl, ssh) have exited, so a test
/// cannot leave it behind. Processes spawned from inside `f` inherit it.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let st = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip link set lo up failed");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `program args`, which must succeed; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills and reaps a spawned process on drop, so a failing test leaves nothing running.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some` or `deadline` passes. No sleeps as synchronisation:
/// this is the only waiting primitive tests should use.
pub fn poll<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`poll`] for async checks (inside a tokio test).
pub async fn poll_async<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Many connections from one source address to `target`, held open for as long as the
/// server keeps them, and re-opened when it closes them (as an attacker would): refused
/// ones wait a few seconds before the next try, so the flood stays steady without
/// burning the cores the VMs need. Stops, and closes everything, when dropped.
pub struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    pub fn start(src: std::net::Ipv4Addr, target: std::net::SocketAddr, conns: usize) -> Flood {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        // The test's own descriptor limit: soft up to hard.
        if let Ok((_, hard)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                hard,
                hard,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (s, h, p) = (stop.clone(), held.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for _ in 0..conns {
                    let (s, h, p) = (s.clone(), h.clone(), p.clone());
                    tasks.push(tokio::spawn(async move {
                        while !s.load(Ordering::Relaxed) {
                            // Out of descriptors or source ports for now (the test's
                            // own other connections, TIME_WAIT): try again later, as an
                            // attacker would, instead of leaving the flood for good.
                            let sock = match tokio::net::TcpSocket::new_v4() {
                                Ok(x) => x,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_secs(3)).await;
                                    continue;
                                }
                            };
                            if sock.bind(std::net::SocketAddr::from((src, 0))).is_err() {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                continue;
                            }
                            let Ok(mut c) = sock.connect(target).await else {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                continue;
                            };
                            let opened = Instant::now();
                            let mut counted = false;
                            let mut buf = [0u8; 512];
                            while !s.load(Ordering::Relaxed) {
                                match tokio::time::timeout(
                                    Duration::from_secs(1),
                                    tokio::io::AsyncReadExt::read(&mut c, &mut buf),
                                )
                                .await
                                {
                                    Ok(Ok(0)) | Ok(Err(_)) => break,
                                    Ok(Ok(_)) => {}
                                    // Held: a whole second without the server closing it
                                    // (a refused connection is closed at once).
                                    Err(_) if !counted => {
                                        counted = true;
                                        let n = h.fetch_add(1, Ordering::Relaxed) + 1;
                                        p.fetch_max(n, Ordering::Relaxed);
                                    }
                                    Err(_) => {}
                                }
                            }
                            if counted {
                                h.fetch_sub(1, Ordering::Relaxed);
                            }
                            if opened.elapsed() < Duration::from_secs(1) {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Flood {
            stop,
            held,
            peak,
            thread: Some(thread),
        }
    }

    /// Connections the server holds open right now (open for a second or more).
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most connections the server held open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// curl against the hosting daemon's listener (`daemon::HOSTING_HTTP`).
use daemon::HOSTING_HTTP as HTTP;
use serde_json::Value;
use std::process::Command;

/// A request with curl (a real client); returns status and JSON body (Null if not JSON).
pub fn http(method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let (s, text) = curl(method, path, token, body, &[]);
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn curl(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[&str],
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-m", "20", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &b.to_string(),
        ]);
    }
    for h in headers {
        c.args(["-H", h]);
    }
    c.arg(format!("http://{HTTP}{path}"));
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}
