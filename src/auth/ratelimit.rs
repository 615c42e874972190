//! Keyed rate limits (login per client address and per username), on `governor`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Two limiters checked together: one keyed by client address, one by username.
pub struct LoginLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_user: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl LoginLimiter {
    /// `attempts` per `window`, replenished evenly over the window.
    pub fn new(attempts: u32, window: Duration) -> LoginLimiter {
        let burst = NonZeroU32::new(attempts).unwrap_or(NonZeroU32::MIN);
        let period = window / burst.get();
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        LoginLimiter {
            by_ip: RateLimiter::keyed(quota),
            by_user: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one attempt; `Err(wait)` when the address or the username is over its limit.
    pub fn check(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        let now = self.clock.now();
        self.by_ip
            .check_key(&ip)
            .map_err(|nu| nu.wait_time_from(now))?;
        self.by_user
            .check_key(&username.to_owned())
            .map_err(|nu| nu.wait_time_from(now))?;
        Ok(())
    }

    /// Drops state of keys that are back to full quota (bounded memory).
    pub fn prune(&self) {
        self.by_ip.retain_recent();
        self.by_user.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_per_user() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(l.check(a, "alice").is_ok());
        }
        let wait = l.check(a, "bob").expect_err("address over limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another address, same username: the username's own limit holds.
        assert!(l.check(b, "alice").is_err());
        // Another address and another user: fine.
        assert!(l.check(b, "carol").is_ok());
    }
}
