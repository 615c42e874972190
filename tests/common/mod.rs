//! Shared helpers for integration tests: the privileged-test switch and private network namespaces.
#![allow(dead_code)]

pub mod daemon;

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
