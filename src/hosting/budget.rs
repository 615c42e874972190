//! The operation budget of each account: creating and deleting a hosting, starting,
//! stopping and rebooting it, and taking, restoring and deleting snapshots each cost the
//! host real work (a boot under TCG is a minute of CPU; a snapshot drains the disk), so an
//! account gets `[limits] operations_per_hour` of them: a sixth of that at once, then one
//! every `3600 / operations_per_hour` seconds. Reads are free. The API exempts
//! administrators (they act on every hosting).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::store::UserId;

pub struct OperationBudget {
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
    clock: DefaultClock,
}

/// The quota for `per_hour` operations (`None`: no budget).
pub fn quota(per_hour: u32) -> Option<Quota> {
    let per_hour = NonZeroU32::new(per_hour)?;
    let burst = NonZeroU32::new(per_hour.get().div_ceil(6)).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(3600) / per_hour.get();
    Some(Quota::with_period(period.max(Duration::from_millis(1)))?.allow_burst(burst))
}

impl OperationBudget {
    /// `per_hour` operations per account (0: unlimited).
    pub fn new(per_hour: u32) -> OperationBudget {
        OperationBudget {
            limiter: quota(per_hour).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// Spends one operation of `user`'s; `Err(wait)` when none is left.
    pub fn spend(&self, user: UserId) -> Result<(), Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        let r = l
            .check_key(&user)
            .map_err(|nu| nu.wait_time_from(self.clock.now()));
        // Keys of accounts whose budget is full again carry nothing: drop them now and then.
        if l.len() > 4096 {
            l.retain_recent();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sixth_at_once_then_evenly() {
        let b = OperationBudget::new(60);
        let (alice, bob) = (UserId::new(), UserId::new());
        for i in 0..10 {
            assert!(b.spend(alice).is_ok(), "operation {i}");
        }
        let wait = b.spend(alice).expect_err("the eleventh");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Another account's budget is its own.
        assert!(b.spend(bob).is_ok());
        // Zero: no budget at all.
        let open = OperationBudget::new(0);
        for _ in 0..1000 {
            assert!(open.spend(alice).is_ok());
        }
    }
}
