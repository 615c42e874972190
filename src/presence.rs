//! Whether anyone is using a site, and the doorbell that wakes it: what lets a hosting
//! sleep (its VM paused) while nobody visits, and wake on the next request or connection.
//!
//! One [`Presence`] per hosting, shared by the HTTP proxy (one [`Visit`] per request, held
//! until the response body has been sent, and by an upgraded tunnel until it ends), the
//! SSH forwarder (one per connection) and the hosting's actor, which alone decides to
//! sleep and to wake. A visitor that finds the site asleep rings ([`Presence::wake`]) and
//! waits, bounded, until the actor says it is awake.
//!
//! The one race that matters, a visit that begins while the actor decides to sleep, is
//! closed like Dekker's: the visitor counts itself in and then reads `asleep`; the actor
//! sets `asleep` and then reads the count (both sequentially consistent). Either the
//! visitor sees `asleep` and rings, or the actor sees the visit and stays awake.
//!
//! Imports nothing of roost; does no I/O.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{watch, Notify};

/// Who is using one site now, when the last use ended, and whether it sleeps.
pub struct Presence {
    start: Instant,
    /// Visits in progress.
    open: AtomicUsize,
    /// When the last visit began or ended, in ms since `start`.
    last_ms: AtomicU64,
    /// What visitors see: set by the actor before it pauses the VM, cleared once the VM
    /// runs again.
    asleep: AtomicBool,
    /// Rung by visitors that found the site asleep; a ring with nobody listening is kept
    /// (one), so the actor cannot miss it.
    bell: Notify,
    /// Bumped when the actor says the VM runs again; visitors wait on it (the state itself
    /// is `asleep`).
    awake_tx: watch::Sender<()>,
}

impl Presence {
    pub fn new() -> Arc<Presence> {
        Arc::new(Presence {
            start: Instant::now(),
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            bell: Notify::new(),
            awake_tx: watch::channel(()).0,
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Counts a visit in until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Visit {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Visit(self.clone())
    }

    /// Visits in progress.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// How long nobody has used the site at `now` (zero while a visit is in progress).
    pub fn idle_for(&self, now: Instant) -> Duration {
        if self.open() > 0 {
            return Duration::ZERO;
        }
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Whether a visitor must ring before it can be served.
    pub fn asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// Rings (if the site is asleep) and waits until it is awake or `deadline` passed;
    /// true when it is awake. Call it while holding a [`Visit`].
    pub async fn wake(&self, deadline: Duration) -> bool {
        if !self.asleep() {
            return true;
        }
        let mut rx = self.awake_tx.subscribe();
        self.bell.notify_one();
        let awake = async {
            loop {
                if !self.asleep() {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(deadline, awake).await.is_ok()
    }

    // The actor's side.

    /// Marks the site asleep (visitors ring from now on) unless a visit is in progress;
    /// false (and still awake) when one is.
    pub fn doze(&self) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) > 0 {
            self.set_awake();
            return false;
        }
        // An old ring (from a visitor that rang while the VM was already waking) must not
        // wake it again at once.
        self.clear_bell();
        true
    }

    /// Marks the site awake and lets every waiting visitor through.
    pub fn set_awake(&self) {
        self.asleep.store(false, Ordering::SeqCst);
        self.awake_tx.send_replace(());
    }

    /// Marks the site asleep without the visit check (a sleeping VM found after a daemon
    /// restart).
    pub fn set_asleep(&self) {
        self.asleep.store(true, Ordering::SeqCst);
    }

    /// Resolves when a visitor rang. Cancel-safe (a ring stays stored until awaited).
    pub async fn rung(&self) {
        self.bell.notified().await
    }

    /// Whether a ring is stored, consuming it.
    fn clear_bell(&self) -> bool {
        use std::future::Future;
        let n = self.bell.notified();
        let mut n = std::pin::pin!(n);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        n.as_mut().poll(&mut cx).is_ready()
    }
}

/// Identity, not value: routes compare equal when they share one `Presence`.
impl PartialEq for Presence {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for Presence {}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("open", &self.open())
            .field("asleep", &self.asleep())
            .finish()
    }
}

/// One visit in progress: counted out (and the site's last use set) on drop.
pub struct Visit(Arc<Presence>);

impl Drop for Visit {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_count_in_and_out_and_set_the_last_use() {
        let p = Presence::new();
        let later = Instant::now() + Duration::from_secs(60);
        {
            let _a = p.enter();
            let _b = p.enter();
            assert_eq!(p.open(), 2);
            assert_eq!(p.idle_for(later), Duration::ZERO, "a visit is in progress");
        }
        assert_eq!(p.open(), 0);
        let idle = p.idle_for(later);
        assert!(
            idle > Duration::from_secs(59) && idle < Duration::from_secs(61),
            "{idle:?}"
        );
    }

    #[test]
    fn dozing_is_refused_while_a_visit_is_in_progress() {
        let p = Presence::new();
        let v = p.enter();
        assert!(!p.doze());
        assert!(!p.asleep(), "a refused doze leaves the site awake");
        drop(v);
        assert!(p.doze());
        assert!(p.asleep());
    }

    #[tokio::test]
    async fn a_ring_wakes_the_actor_and_the_visitor_waits_for_it() {
        let p = Presence::new();
        assert!(p.doze());
        let actor = {
            let p = p.clone();
            tokio::spawn(async move {
                p.rung().await;
                p.set_awake();
            })
        };
        let _v = p.enter();
        assert!(p.wake(Duration::from_secs(10)).await);
        actor.await.expect("actor");
        assert!(!p.asleep());
    }

    #[tokio::test(start_paused = true)]
    async fn a_visitor_gives_up_when_nobody_wakes_the_site() {
        let p = Presence::new();
        assert!(p.doze());
        assert!(!p.wake(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn an_old_ring_is_forgotten_when_the_site_falls_asleep() {
        let p = Presence::new();
        // Rung while awake (a visitor that raced the wake-up).
        p.bell.notify_one();
        assert!(p.doze());
        let rung = tokio::time::timeout(Duration::from_millis(50), p.rung()).await;
        assert!(rung.is_err(), "the stale ring woke the site");
    }

    #[test]
    fn routes_compare_presences_by_identity() {
        let (a, b) = (Presence::new(), Presence::new());
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
    }
}
