//! In-process limiter: governor's GCRA for rates, a fixed window per key for quotas.
//!
//! Rates count periods on a [`Clock`] (the system's monotonic clock in production, a manual one in
//! tests); quotas count on the `now_secs` the caller passes.
//!
//! Everything about one key lives in one entry of one map behind one lock: its GCRA (a governor
//! *direct* limiter, made for the rate limit it counts), what the GCRA had left at the last check (for
//! `peek`: governor cannot be read without counting) and its quota window. A check hashes the key
//! once and takes one lock, and the key is copied only when it is first seen. (Three maps — governor's
//! keyed store, the last-seen rates, the quotas — cost three locks, four SipHash lookups and a copy of
//! the key per request: docs/benchmarks.md.)

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GcraQuota, RateLimiter};

use super::{Decision, Headroom, Limiter, Refused};
use crate::clock::Clock;
use crate::config::{Quota, RateLimit};
use crate::store::StoreResult;

type Gcra = RateLimiter<NotKeyed, InMemoryState, Clock, StateInformationMiddleware>;

/// governor reads our clock as nanoseconds since the clock's origin.
impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.elapsed())
    }
}

/// Prune idle keys every this many checks so the map does not grow with every session ever seen.
const PRUNE_EVERY: u64 = 100_000;

/// A quota window is forgotten this long after it started at the latest (a window that ended is
/// equivalent to no entry; the longest period a config may give is shorter).
const QUOTA_KEPT: u64 = 366 * 24 * 3600;

/// One key's GCRA.
struct RateState {
    /// The `(rate, per)` it was made for. A changed limit (a policy edited through the admin API)
    /// gets a new GCRA, starting from a full burst.
    limit: (u32, Duration),
    gcra: Gcra,
    /// The burst left after the last check, and when that was on the limiter's clock.
    last: (u32, Duration),
}

/// Everything the limiter knows about one key.
#[derive(Default)]
struct KeyState {
    rate: Option<RateState>,
    /// `(window start, used)` of the quota.
    quota: Option<(u64, u64)>,
}

#[derive(Default)]
pub struct MemoryLimiter {
    keys: Mutex<HashMap<String, KeyState>>,
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

    /// The map, also after a panic elsewhere while it was held: it holds counters that every
    /// update leaves consistent, so the limits go on being enforced rather than waved through.
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request against `rate` in `state`: its headroom, or the seconds until a retry.
    fn rate_step(&self, state: &mut KeyState, rate: &RateLimit) -> Result<Headroom, u64> {
        let limit = (rate.rate, rate.per);
        let rs = match &mut state.rate {
            Some(rs) if rs.limit == limit => rs,
            slot => {
                let Some(gcra) = new_gcra(rate, &self.clock) else {
                    // A rate of 0, or a period too short to count in: nothing to enforce.
                    return Ok(Headroom {
                        limit: u64::from(rate.rate),
                        remaining: u64::from(rate.rate),
                        reset_secs: 0,
                    });
                };
                slot.insert(RateState {
                    limit,
                    gcra,
                    last: (rate.rate, self.clock.elapsed()),
                })
            }
        };
        let interval = rate.per / rate.rate.max(1);
        match rs.gcra.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                rs.last = (remaining, self.clock.elapsed());
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

    fn prune(&self, now: u64) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY != PRUNE_EVERY - 1 {
            return;
        }
        self.forget_idle(now);
    }

    /// Drops what is equivalent to no entry: full GCRAs, ended quota windows, and keys left with
    /// neither.
    fn forget_idle(&self, now: u64) {
        let elapsed = self.clock.elapsed();
        self.keys().retain(|_, state| {
            // A GCRA whose last check is a whole period ago has its full burst again: the same as
            // none. A quota window is kept while it may still run.
            if state
                .rate
                .as_ref()
                .is_some_and(|rs| elapsed.saturating_sub(rs.last.1) >= rs.limit.1)
            {
                state.rate = None;
            }
            if state
                .quota
                .is_some_and(|(start, _)| now.saturating_sub(start) >= QUOTA_KEPT)
            {
                state.quota = None;
            }
            state.rate.is_some() || state.quota.is_some()
        });
    }
}

/// A GCRA for `rate` requests per `per`, all of them usable at once (emission interval per/rate,
/// burst rate); `None` when there is nothing to count (a rate of 0, or per/rate rounds to 0).
fn new_gcra(rate: &RateLimit, clock: &Clock) -> Option<Gcra> {
    let burst = NonZeroU32::new(rate.rate)?;
    let quota = GcraQuota::with_period(rate.per / rate.rate)?.allow_burst(burst);
    Some(RateLimiter::direct_with_clock(quota, clock.clone()).with_middleware())
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
        if rate.is_none() && quota.is_none() {
            return Ok(decision);
        }
        let mut keys = self.keys();
        let mut known = keys.get_mut(key);
        // An exhausted quota is refused before the rate limiter counts anything, so a refusal never
        // uses up a rate-limit slot either. A key without a window has its whole quota.
        if let Some(quota) = quota
            && let Some(window) = known.as_deref_mut().and_then(|state| state.quota.as_mut())
            && let Err(retry_after_secs) =
                quota_step(window, quota.max, quota_period(quota), now_secs, false)
        {
            refuse_quota(&mut decision, quota, retry_after_secs);
            return Ok(decision);
        }
        // The key is copied the first time it is seen, never again.
        let state = match known {
            Some(state) => state,
            None => keys.entry(key.to_string()).or_default(),
        };
        if let Some(rate) = rate {
            match self.rate_step(state, rate) {
                Ok(headroom) => decision.rate = Some(headroom),
                Err(retry_after_secs) => {
                    decision.rate = Some(Headroom {
                        limit: u64::from(rate.rate),
                        remaining: 0,
                        reset_secs: retry_after_secs,
                    });
                    decision.refused = Some(Refused::RateLimit { retry_after_secs });
                    return Ok(decision);
                }
            }
        }
        if let Some(quota) = quota {
            // The first counted request of a key starts its window.
            let window = state.quota.get_or_insert((now_secs, 0));
            match quota_step(window, quota.max, quota_period(quota), now_secs, true) {
                Ok(headroom) => decision.quota = Some(headroom),
                Err(retry_after_secs) => refuse_quota(&mut decision, quota, retry_after_secs),
            }
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
        let mut keys = self.keys();
        let known = keys.get_mut(key);
        if let Some(rate) = rate {
            let interval = rate.per / rate.rate.max(1);
            // What the GCRA had left at its last check, plus what has been replenished since; a
            // GCRA made for another limit says nothing about this one.
            let last = known
                .as_deref()
                .and_then(|state| state.rate.as_ref())
                .filter(|rs| rs.limit == (rate.rate, rate.per))
                .map(|rs| rs.last);
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
            let period = quota_period(quota);
            // A look must not start a window; the first counted request does.
            let window = known.and_then(|state| state.quota.as_mut());
            decision.quota = Some(match window {
                Some(window) => match quota_step(window, quota.max, period, now_secs, false) {
                    Ok(headroom) => headroom,
                    Err(reset_secs) => Headroom {
                        limit: quota.max,
                        remaining: 0,
                        reset_secs,
                    },
                },
                None => Headroom {
                    limit: quota.max,
                    remaining: quota.max,
                    reset_secs: period,
                },
            });
        }
        Ok(decision)
    }
}

fn quota_period(quota: &Quota) -> u64 {
    quota.period.as_secs().max(1)
}

fn refuse_quota(decision: &mut Decision, quota: &Quota, retry_after_secs: u64) {
    decision.quota = Some(Headroom {
        limit: quota.max,
        remaining: 0,
        reset_secs: retry_after_secs,
    });
    decision.refused = Some(Refused::Quota { retry_after_secs });
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
    use crate::limits::contract::rate;

    #[tokio::test]
    async fn peek_reports_the_rate_headroom_without_counting() {
        let limiter = MemoryLimiter::new();
        let r = rate(3, Duration::from_secs(3600));
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
    async fn idle_keys_are_forgotten_and_busy_ones_kept() {
        let (clock, manual) = Clock::manual();
        let limiter = MemoryLimiter::with_clock(clock);
        let r = rate(2, Duration::from_secs(10));
        let q = Quota {
            max: 5,
            period: Duration::from_secs(3600),
        };
        limiter.check("rate-only", Some(&r), None, 0).await.unwrap();
        limiter.check("rate-only", Some(&r), None, 0).await.unwrap();
        limiter
            .check("with-quota", Some(&r), Some(&q), 0)
            .await
            .unwrap();
        limiter.forget_idle(0);
        assert_eq!(limiter.keys().len(), 2, "nothing is idle yet");

        // A whole period later both GCRAs are full again; the quota window still runs.
        manual.advance(Duration::from_secs(10));
        limiter.forget_idle(10);
        {
            let keys = limiter.keys();
            assert_eq!(keys.len(), 1);
            let kept = keys
                .get("with-quota")
                .expect("the key with a running window is kept");
            assert!(kept.rate.is_none() && kept.quota == Some((0, 1)));
        }

        // Forgetting a full GCRA changes nothing a client can see: a full burst either way.
        for _ in 0..2 {
            let d = limiter
                .check("rate-only", Some(&r), None, 10)
                .await
                .unwrap();
            assert_eq!(d.refused, None);
        }
        let d = limiter
            .check("rate-only", Some(&r), None, 10)
            .await
            .unwrap();
        assert!(matches!(d.refused, Some(Refused::RateLimit { .. })));
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
