//! Per-client query rate: a token bucket per source address (governor's GCRA, which is
//! the same thing), pruned so its memory stays bounded.
//!
//! For the guests' forwarder only sources inside the allowed subnet ever reach it (at most
//! a /16, so at most 65,536 keys even unpruned); the ACME challenge server keys it by any
//! address. Every `PRUNE_EVERY` checks, keys whose bucket is full again are dropped, so an
//! idle client costs nothing and a flood of one-off sources holds at most about
//! `PRUNE_EVERY` buckets per refill period.

use std::hash::Hash;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Checks between two prunes of idle keys.
const PRUNE_EVERY: u32 = 4096;

type Keyed<K, C> =
    RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One bucket per client address: `burst` queries at once, refilled at `qps` per second.
pub(crate) struct ClientLimiter<K = Ipv4Addr, C: Clock = DefaultClock>
where
    K: Hash + Eq + Clone,
{
    buckets: Keyed<K, C>,
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone> ClientLimiter<K> {
    /// `None` when `qps` or `burst` is 0.
    pub(crate) fn new(qps: u32, burst: u32) -> Option<Self> {
        Self::with_clock(qps, burst, &DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> ClientLimiter<K, C> {
    pub(crate) fn with_clock(qps: u32, burst: u32, clock: &C) -> Option<Self> {
        let quota = Quota::per_second(NonZeroU32::new(qps)?).allow_burst(NonZeroU32::new(burst)?);
        Some(ClientLimiter {
            buckets: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
            checks: AtomicU32::new(0),
        })
    }

    /// Takes a token from `client`'s bucket; false when it is empty.
    pub(crate) fn check(&self, client: K) -> bool {
        let n = self.checks.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if n.is_multiple_of(PRUNE_EVERY) {
            self.prune();
        }
        self.buckets.check_key(&client).is_ok()
    }

    /// Drops the buckets that are full again (indistinguishable from new ones).
    fn prune(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    #[test]
    fn zero_rate_or_burst_is_refused() {
        assert!(ClientLimiter::<Ipv4Addr>::new(0, 5).is_none());
        assert!(ClientLimiter::<Ipv4Addr>::new(5, 0).is_none());
        assert!(ClientLimiter::<Ipv4Addr>::new(1, 1).is_some());
    }

    #[test]
    fn burst_then_refill_per_client() {
        let clock = FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(10, 3, &clock).expect("valid quota");
        let a = Ipv4Addr::new(10, 88, 0, 2);
        let b = Ipv4Addr::new(10, 88, 0, 3);
        assert!((0..3).all(|_| limiter.check(a)));
        assert!(
            !limiter.check(a),
            "the fourth query at once is over the burst"
        );
        assert!(limiter.check(b), "another client has its own bucket");
        clock.advance(Duration::from_millis(100));
        assert!(limiter.check(a), "one token back after 1/qps");
        assert!(!limiter.check(a));
    }

    #[test]
    fn idle_clients_are_pruned() {
        let clock = FakeRelativeClock::default();
        let limiter = ClientLimiter::with_clock(100, 10, &clock).expect("valid quota");
        for i in 0..=255u8 {
            limiter.check(Ipv4Addr::new(10, 88, 1, i));
        }
        assert_eq!(limiter.tracked(), 256);
        clock.advance(Duration::from_secs(1));
        limiter.prune();
        assert_eq!(limiter.tracked(), 0, "full buckets are forgotten");
    }
}
