//! Keyed rate limits, on `governor`: login attempts per client address, login failures per
//! (username, address) and per username (sparing the account's known addresses), and
//! account creation per client address.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Login throttling that slows password guessing without letting an attacker lock an
/// owner out:
/// - attempts per client address (any username);
/// - failures per (username, address): one address guessing one account is stopped;
/// - failures per username from all addresses, a larger budget: guessing spread over many
///   addresses is stopped too, but only for addresses that have not logged in to this
///   account before. The owner's own addresses keep working, and a single attacking
///   address never reaches this budget (its pair budget is smaller).
pub struct LoginLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_pair: FailureLimiter<(String, IpAddr)>,
    by_user: FailureLimiter<String>,
    /// Per username, the addresses of its recent successful logins, newest last.
    known: Mutex<HashMap<String, VecDeque<(IpAddr, Instant)>>>,
    clock: DefaultClock,
}

/// How long a successful login makes its address known to the account.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86400);
/// Known addresses kept per account.
const KNOWN_PER_USER: usize = 16;

/// A limiter that counts only failures: once a key has used its budget it is blocked
/// until the budget has a slot again.
struct FailureLimiter<K: Hash + Eq + Clone> {
    budget: DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    fn new(quota: Quota) -> Self {
        FailureLimiter {
            budget: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// How long `key` stays blocked, if it is.
    fn blocked(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.blocked)
            .get(key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Counts one failure; the key is blocked when it had no budget left.
    fn failed(&self, key: &K) {
        if let Err(nu) = self.budget.check_key(key) {
            let wait = nu.wait_time_from(self.clock.now());
            lock(&self.blocked).insert(key.clone(), Instant::now() + wait);
        }
    }

    fn prune(&self) {
        self.budget.retain_recent();
        let now = Instant::now();
        lock(&self.blocked).retain(|_, until| *until > now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// `attempts` per `window` per address and failures per (username, address);
    /// `user_failures_per_hour` failures per username from addresses it does not know.
    pub fn new(attempts: u32, window: Duration, user_failures_per_hour: u32) -> LoginLimiter {
        let quota = quota(attempts, window);
        LoginLimiter {
            by_ip: RateLimiter::keyed(quota),
            by_pair: FailureLimiter::new(quota),
            by_user: FailureLimiter::new(self::quota(
                user_failures_per_hour,
                Duration::from_secs(3600),
            )),
            known: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one attempt; `Err(wait)` when it must not be tried now.
    pub fn check(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        let now = self.clock.now();
        self.by_ip
            .check_key(&ip)
            .map_err(|nu| nu.wait_time_from(now))?;
        if let Some(wait) = self.by_pair.blocked(&(username.to_owned(), ip)) {
            return Err(wait);
        }
        if let Some(wait) = self.by_user.blocked(&username.to_owned()) {
            if !self.is_known(username, ip) {
                return Err(wait);
            }
        }
        Ok(())
    }

    /// A wrong password (or no such user) from `ip`.
    pub fn failed(&self, ip: IpAddr, username: &str) {
        self.by_pair.failed(&(username.to_owned(), ip));
        self.by_user.failed(&username.to_owned());
    }

    /// A successful login from `ip`: the address becomes known to the account.
    pub fn succeeded(&self, ip: IpAddr, username: &str) {
        let mut known = lock(&self.known);
        let list = known.entry(username.to_owned()).or_default();
        list.retain(|(a, _)| *a != ip);
        list.push_back((ip, Instant::now()));
        while list.len() > KNOWN_PER_USER {
            list.pop_front();
        }
    }

    fn is_known(&self, username: &str, ip: IpAddr) -> bool {
        lock(&self.known)
            .get(username)
            .is_some_and(|l| l.iter().any(|(a, at)| *a == ip && at.elapsed() < KNOWN_FOR))
    }

    /// Drops state of keys that are back to full quota, and expired known addresses
    /// (bounded memory).
    pub fn prune(&self) {
        self.by_ip.retain_recent();
        self.by_pair.prune();
        self.by_user.prune();
        let mut known = lock(&self.known);
        for l in known.values_mut() {
            l.retain(|(_, at)| at.elapsed() < KNOWN_FOR);
        }
        known.retain(|_, l| !l.is_empty());
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
    fn attempts_per_address() {
        let l = LoginLimiter::new(3, Duration::from_secs(60), 100);
        let a: IpAddr = [127, 0, 0, 1].into();
        for u in ["alice", "bob", "carol"] {
            assert!(l.check(a, u).is_ok());
        }
        let wait = l.check(a, "dave").expect_err("address over limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
    }

    #[test]
    fn one_attacking_address_does_not_lock_the_owner_out() {
        let l = LoginLimiter::new(3, Duration::from_secs(60), 5);
        let (attacker, owner): (IpAddr, IpAddr) = ([10, 0, 0, 66].into(), [10, 0, 0, 1].into());
        for _ in 0..3 {
            assert!(l.check(attacker, "alice").is_ok());
            l.failed(attacker, "alice");
        }
        assert!(l.check(attacker, "alice").is_err(), "the pair is blocked");
        assert!(l.check(owner, "alice").is_ok(), "another address is not");
    }

    #[test]
    fn guessing_from_many_addresses_spares_known_addresses_only() {
        let l = LoginLimiter::new(3, Duration::from_secs(60), 5);
        let home: IpAddr = [10, 0, 0, 1].into();
        assert!(l.check(home, "alice").is_ok());
        l.succeeded(home, "alice");
        for i in 0..6u8 {
            let ip: IpAddr = [10, 1, 0, i].into();
            assert!(l.check(ip, "alice").is_ok());
            l.failed(ip, "alice");
        }
        let stranger: IpAddr = [10, 2, 0, 1].into();
        assert!(
            l.check(stranger, "alice").is_err(),
            "the username's budget is used up"
        );
        assert!(
            l.check(home, "alice").is_ok(),
            "the owner's known address still works"
        );
        assert!(
            l.check(stranger, "bob").is_ok(),
            "other accounts are not affected"
        );
    }
}
