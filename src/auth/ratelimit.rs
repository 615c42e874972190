//! Keyed rate limits, on `governor`: logins per client address and per username, and
//! account creation per client address.

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

/// `attempts` per `window`, all usable at once, replenished evenly over the window.
fn quota(attempts: u32, window: Duration) -> Quota {
    let burst = NonZeroU32::new(attempts).unwrap_or(NonZeroU32::MIN);
    let period = window / burst.get();
    Quota::with_period(period.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl LoginLimiter {
    /// `attempts` per `window`, replenished evenly over the window.
    pub fn new(attempts: u32, window: Duration) -> LoginLimiter {
        let quota = quota(attempts, window);
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

/// Account creation per client address: registering costs a password hash and a row that
/// stays, so one address cannot fill the store or keep the hashing threads busy.
pub struct RegisterLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RegisterLimiter {
    /// `per_hour` accounts per address, replenished evenly over the hour.
    pub fn new(per_hour: u32) -> RegisterLimiter {
        RegisterLimiter {
            by_ip: RateLimiter::keyed(quota(per_hour, Duration::from_secs(3600))),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one account creation; `Err(wait)` when the address is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.by_ip
            .check_key(&ip)
            .map_err(|nu| nu.wait_time_from(self.clock.now()))
    }

    /// Drops state of addresses that are back to full quota (bounded memory).
    pub fn prune(&self) {
        self.by_ip.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_registrations_per_address() {
        let l = RegisterLimiter::new(2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let wait = l.check(a).expect_err("address over limit");
        // One account comes back every 30 minutes at 2 per hour.
        assert!(
            wait > Duration::from_secs(1700) && wait <= Duration::from_secs(1800),
            "{wait:?}"
        );
        assert!(l.check(b).is_ok(), "other addresses are not affected");
    }

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
