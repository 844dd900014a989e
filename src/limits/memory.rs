//! In-process limiter: governor's GCRA for rates, a fixed window per key for quotas.
//!
//! Rates count periods on a [`Clock`] (the system's monotonic clock in production, a manual one in
//! tests); quotas count on the `now_secs` the caller passes.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota as GcraQuota, RateLimiter};

use super::{Decision, Headroom, Limiter, Refused};
use crate::clock::Clock;
use crate::config::{Quota, RateLimit};
use crate::store::StoreResult;

type KeyedGcra =
    RateLimiter<String, DefaultKeyedStateStore<String>, Clock, StateInformationMiddleware>;

/// governor reads our clock as nanoseconds since the clock's origin.
impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.elapsed())
    }
}

/// Prune idle keys every this many checks so the maps do not grow with every session ever seen.
const PRUNE_EVERY: u64 = 100_000;

#[derive(Default)]
pub struct MemoryLimiter {
    /// One keyed GCRA limiter per distinct (rate, per): governor fixes the quota per limiter.
    rates: Mutex<HashMap<(u32, Duration), Arc<KeyedGcra>>>,
    /// key → (window start, count).
    quotas: Mutex<HashMap<String, (u64, u64)>>,
    /// key → (remaining burst after the last check, when on `clock`). governor cannot be read
    /// without counting, so this is what `peek` reports from, adding what has been replenished since.
    last_rate: Mutex<HashMap<String, (u32, Duration)>>,
    checks: AtomicU64,
    clock: Clock,
}

impl MemoryLimiter {
    /// A limiter on the system's clock.
    pub fn new() -> MemoryLimiter {
        MemoryLimiter::default()
    }

    /// A limiter whose rate periods pass on `clock` (a test's [`Clock::manual`]).
    pub fn with_clock(clock: Clock) -> MemoryLimiter {
        MemoryLimiter {
            clock,
            ..MemoryLimiter::default()
        }
    }

    fn gcra(&self, rate: &RateLimit) -> Option<Arc<KeyedGcra>> {
        let mut rates = self.rates.lock().ok()?;
        if let Some(limiter) = rates.get(&(rate.rate, rate.per)) {
            return Some(limiter.clone());
        }
        let burst = NonZeroU32::new(rate.rate)?;
        // `rate` requests per `per`, all of them usable at once: emission interval per/rate, burst rate.
        let quota = GcraQuota::with_period(rate.per / rate.rate)?.allow_burst(burst);
        let limiter = Arc::new(KeyedGcra::new(
            quota,
            DefaultKeyedStateStore::default(),
            self.clock.clone(),
        ));
        rates.insert((rate.rate, rate.per), limiter.clone());
        Some(limiter)
    }

    fn check_rate(&self, key: &str, rate: &RateLimit) -> Result<Headroom, u64> {
        let Some(limiter) = self.gcra(rate) else {
            return Ok(Headroom {
                limit: u64::from(rate.rate),
                remaining: u64::from(rate.rate),
                reset_secs: 0,
            });
        };
        let interval = rate.per / rate.rate.max(1);
        match limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                if let Ok(mut last) = self.last_rate.lock() {
                    // Update in place: the key is only copied the first time it is seen.
                    let seen = (remaining, self.clock.elapsed());
                    match last.get_mut(key) {
                        Some(entry) => *entry = seen,
                        None => {
                            last.insert(key.to_string(), seen);
                        }
                    }
                }
                let used = rate.rate.saturating_sub(remaining);
                Ok(Headroom {
                    limit: u64::from(rate.rate),
                    remaining: u64::from(remaining),
                    reset_secs: ceil_secs(interval * used),
                })
            }
            Err(not_until) => Err(ceil_secs(
                not_until.wait_time_from(governor::clock::Clock::now(&self.clock)),
            )
            .max(1)),
        }
    }

    /// The rate limit's answer into `decision`: its headroom, and the refusal when it refuses.
    fn apply_rate(&self, key: &str, rate: &RateLimit, decision: &mut Decision) {
        match self.check_rate(key, rate) {
            Ok(headroom) => decision.rate = Some(headroom),
            Err(retry_after_secs) => {
                decision.rate = Some(Headroom {
                    limit: u64::from(rate.rate),
                    remaining: 0,
                    reset_secs: retry_after_secs,
                });
                decision.refused = Some(Refused::RateLimit { retry_after_secs });
            }
        }
    }

    fn check_quota(
        &self,
        key: &str,
        quota: &Quota,
        now: u64,
        count: bool,
    ) -> Result<Headroom, u64> {
        let period = quota.period.as_secs().max(1);
        let Ok(mut quotas) = self.quotas.lock() else {
            return Err(1);
        };
        // One lookup by reference when the key is known (every request but the first of a window's
        // key): no copy of the key and no second hash.
        if let Some(entry) = quotas.get_mut(key) {
            return quota_step(entry, quota.max, period, now, count);
        }
        if !count {
            // A look from the admin API must not start a window; the first counted request does.
            return Ok(Headroom {
                limit: quota.max,
                remaining: quota.max,
                reset_secs: period,
            });
        }
        let entry = quotas.entry(key.to_string()).or_insert((now, 0));
        quota_step(entry, quota.max, period, now, count)
    }

    fn prune(&self, now: u64) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY != PRUNE_EVERY - 1 {
            return;
        }
        if let Ok(rates) = self.rates.lock() {
            for limiter in rates.values() {
                limiter.retain_recent();
            }
        }
        if let Ok(mut last) = self.last_rate.lock() {
            let elapsed = self.clock.elapsed();
            last.retain(|_, (_, at)| elapsed.saturating_sub(*at) < Duration::from_secs(24 * 3600));
        }
        if let Ok(mut quotas) = self.quotas.lock() {
            // A window that ended is equivalent to no entry.
            quotas.retain(|_, (start, _)| now.saturating_sub(*start) < 366 * 24 * 3600);
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn check(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        now_secs: u64,
    ) -> StoreResult<Decision> {
        self.prune(now_secs);
        let mut decision = Decision::default();
        let Some(quota) = quota else {
            if let Some(rate) = rate {
                self.apply_rate(key, rate, &mut decision);
            }
            return Ok(decision);
        };
        let period = quota.period.as_secs().max(1);
        let refuse_quota = |decision: &mut Decision, retry_after_secs: u64| {
            decision.quota = Some(Headroom {
                limit: quota.max,
                remaining: 0,
                reset_secs: retry_after_secs,
            });
            decision.refused = Some(Refused::Quota { retry_after_secs });
        };
        // The quota's lock is held across the rate check, so the key is hashed and looked up once
        // for both looks at the quota (before the rate limiter counts, and to count after it). The
        // only lock taken inside is governor's and `last_rate`, never in the other order.
        let Ok(mut quotas) = self.quotas.lock() else {
            refuse_quota(&mut decision, 1);
            return Ok(decision);
        };
        let mut known = quotas.get_mut(key);
        // An exhausted quota is refused before the rate limiter counts anything, so a refusal never
        // uses up a rate-limit slot either. A key without a window has its whole quota.
        if let Some(entry) = known.as_deref_mut()
            && let Err(retry_after_secs) = quota_step(entry, quota.max, period, now_secs, false)
        {
            refuse_quota(&mut decision, retry_after_secs);
            return Ok(decision);
        }
        if let Some(rate) = rate {
            self.apply_rate(key, rate, &mut decision);
            if decision.refused.is_some() {
                return Ok(decision);
            }
        }
        // The first counted request of a key starts its window.
        let entry = match known {
            Some(entry) => entry,
            None => quotas.entry(key.to_string()).or_insert((now_secs, 0)),
        };
        match quota_step(entry, quota.max, period, now_secs, true) {
            Ok(headroom) => decision.quota = Some(headroom),
            Err(retry_after_secs) => refuse_quota(&mut decision, retry_after_secs),
        }
        Ok(decision)
    }

    async fn peek(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        now_secs: u64,
    ) -> StoreResult<Decision> {
        let mut decision = Decision::default();
        if let Some(rate) = rate {
            let interval = rate.per / rate.rate.max(1);
            let last = self.last_rate.lock().ok().and_then(|m| m.get(key).copied());
            let remaining = match last {
                Some((remaining, at)) if !interval.is_zero() => {
                    let since = self.clock.elapsed().saturating_sub(at);
                    let replenished = since.as_nanos() / interval.as_nanos().max(1);
                    u64::from(remaining)
                        .saturating_add(u64::try_from(replenished).unwrap_or(u64::MAX))
                        .min(u64::from(rate.rate))
                }
                _ => u64::from(rate.rate),
            };
            let used = u32::try_from(u64::from(rate.rate) - remaining).unwrap_or(0);
            decision.rate = Some(Headroom {
                limit: u64::from(rate.rate),
                remaining,
                reset_secs: ceil_secs(interval * used),
            });
        }
        if let Some(quota) = quota {
            decision.quota = Some(match self.check_quota(key, quota, now_secs, false) {
                Ok(headroom) => headroom,
                Err(reset_secs) => Headroom {
                    limit: quota.max,
                    remaining: 0,
                    reset_secs,
                },
            });
        }
        Ok(decision)
    }
}

/// One quota window `(start, used)` at `now`: restarted when `period` has passed, refused when `max`
/// is used up, counted when `count`.
fn quota_step(
    entry: &mut (u64, u64),
    max: u64,
    period: u64,
    now: u64,
    count: bool,
) -> Result<Headroom, u64> {
    if now >= entry.0 + period {
        *entry = (now, 0);
    }
    let reset_secs = (entry.0 + period).saturating_sub(now);
    if entry.1 >= max {
        return Err(reset_secs.max(1));
    }
    if count {
        entry.1 += 1;
    }
    Ok(Headroom {
        limit: max,
        remaining: max - entry.1,
        reset_secs,
    })
}

#[cfg(test)]
mod contract_tests {
    crate::limiter_contract_tests!(manual_clock: |clock| async move {
        std::sync::Arc::new(super::MemoryLimiter::with_clock(clock))
            as std::sync::Arc<dyn crate::limits::Limiter>
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnStorageError;

    #[tokio::test]
    async fn peek_reports_the_rate_headroom_without_counting() {
        let limiter = MemoryLimiter::new();
        let r = RateLimit {
            rate: 3,
            per: Duration::from_secs(3600),
            on_storage_error: OnStorageError::Local,
            exact: false,
        };
        assert_eq!(
            limiter
                .peek("s", Some(&r), None, 0)
                .await
                .unwrap()
                .rate
                .unwrap()
                .remaining,
            3
        );
        limiter.check("s", Some(&r), None, 0).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                limiter
                    .peek("s", Some(&r), None, 0)
                    .await
                    .unwrap()
                    .rate
                    .unwrap()
                    .remaining,
                2
            );
        }
    }

    #[tokio::test]
    async fn quota_counts_per_window_and_resets() {
        let limiter = MemoryLimiter::new();
        let q = Quota {
            max: 2,
            period: Duration::from_secs(100),
        };
        assert_eq!(
            limiter
                .check("s", None, Some(&q), 1000)
                .await
                .unwrap()
                .quota
                .unwrap()
                .remaining,
            1
        );
        assert_eq!(
            limiter
                .check("s", None, Some(&q), 1010)
                .await
                .unwrap()
                .quota
                .unwrap()
                .remaining,
            0
        );
        let refused = limiter.check("s", None, Some(&q), 1020).await.unwrap();
        assert_eq!(
            refused.refused,
            Some(Refused::Quota {
                retry_after_secs: 80
            })
        );
        // Refusals did not count: after the window the full quota is back.
        let d = limiter.check("s", None, Some(&q), 1100).await.unwrap();
        assert_eq!(d.refused, None);
        assert_eq!(d.quota.unwrap().remaining, 1);
        assert_eq!(
            limiter
                .peek("s", None, Some(&q), 1100)
                .await
                .unwrap()
                .quota
                .unwrap()
                .remaining,
            1
        );
    }
}
