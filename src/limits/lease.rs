//! The local side of Redis limits counted by leases (docs/design.md §9e, docs/redis.md "Leases").
//!
//! Per limiter key (a session, a session at one API, or a whole API), a node holds *batches*: GCRA
//! tokens and quota units that Redis granted it in one script call. Requests spend them here, with no
//! round trip; a batch that runs low is renewed in the background; a batch that reaches its lifetime
//! is given back (its unused tokens and units go back to Redis), and so is every batch at shutdown.
//!
//! The invariants the accuracy promises rest on:
//! - A token is spent at most `lifetime` after Redis granted it ([`Params::lifetime`], measured from
//!   before the call), so in any interval the tokens spent were granted in an interval `lifetime`
//!   longer: over-admission is at most `rate × lifetime / per`, whatever the number of nodes.
//! - Quota units are reserved in Redis before they are spent and never outlive their window, so a
//!   quota is never exceeded across nodes; units still held are returned, so the counter settles to
//!   the exact count.
//! - Memory is bounded: the table holds at most `capacity` keys; a key beyond that is counted exactly
//!   (one script call, nothing kept), and the sweeper drops every key whose batches have all expired.
//!
//! This file holds no I/O: [`super::redis::RedisLimiter`] makes the calls and feeds the answers in.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{Decision, Headroom, Refused};
use crate::config::{Quota, RateLimit};

/// A rate limit's lease lifetime is this fraction of its period: over-admission ≤ 1/10 of the limit.
pub const LIFETIME_DIVISOR: u32 = 10;
/// ...and at most this long, so that a slow limit (1000 a day) does not hold tokens for hours.
pub const MAX_LIFETIME: Duration = Duration::from_secs(1);
/// How long quota units are held when no rate limit applies to the key.
pub const QUOTA_ONLY_LIFETIME: Duration = Duration::from_secs(1);
/// A quota block is at most this many units...
pub const MAX_QUOTA_BLOCK: u64 = 1024;
/// ...and at most this share of what is left of the quota, so that near the end of a quota the
/// blocks shrink to one unit and no node strands units another node's client could use.
pub const QUOTA_BLOCK_DIVISOR: u64 = 16;
/// Default cap on the keys a node holds leases for.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// How often the sweeper returns expired batches and drops idle keys.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The limits a key is leased under; a request with other limits (a policy changed) settles the
/// old batches and starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// (rate, per) of a counted rate limit.
    pub rate: Option<(u32, Duration)>,
    /// (max, period) of a quota.
    pub quota: Option<(u64, Duration)>,
}

impl Params {
    pub fn new(rate: Option<&RateLimit>, quota: Option<&Quota>) -> Params {
        Params {
            // A rate of 0 or over 0 s is no limit (as in the other limiters).
            rate: rate
                .filter(|r| r.rate > 0 && !r.per.is_zero())
                .map(|r| (r.rate, r.per)),
            quota: quota.map(|q| (q.max, q.period)),
        }
    }

    /// How long a batch may be spent from after it was asked for.
    pub fn lifetime(&self) -> Duration {
        match self.rate {
            Some((_, per)) => (per / LIFETIME_DIVISOR).min(MAX_LIFETIME),
            None => QUOTA_ONLY_LIFETIME,
        }
    }

    /// Tokens asked for per lease: what the rate allows in one lifetime (at least one). A node
    /// cannot spend more than that in a lifetime at the sustained rate, so a larger lease would only
    /// hold tokens back from the other nodes.
    pub fn lease_tokens(&self) -> u64 {
        let Some((rate, per)) = self.rate else {
            return 0;
        };
        let tokens = u128::from(rate) * self.lifetime().as_nanos() / per.as_nanos().max(1);
        u64::try_from(tokens).unwrap_or(u64::MAX).max(1)
    }

    /// Units asked for per block, given what Redis said was used of the quota.
    pub fn block_units(&self, used_seen: u64) -> u64 {
        let Some((max, _)) = self.quota else {
            return 0;
        };
        let mut block =
            (max.saturating_sub(used_seen) / QUOTA_BLOCK_DIVISOR).clamp(1, MAX_QUOTA_BLOCK);
        if self.rate.is_some() {
            // No more than two leases of tokens can spend.
            block = block.min(self.lease_tokens().saturating_mul(2));
        }
        block
    }

    pub fn interval(&self) -> Duration {
        match self.rate {
            Some((rate, per)) => per / rate.max(1),
            None => Duration::ZERO,
        }
    }
}

/// What one lease call asks Redis for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub tokens: u64,
    pub units: u64,
}

/// Redis's answer to a lease call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Granted {
        tokens: u64,
        units: u64,
        /// Tokens Redis has left after this grant.
        rate_remaining: u64,
        /// Quota units counted in Redis after this grant (spent or held by some node).
        used: u64,
        /// Until the quota window ends.
        window: Duration,
        /// When the window ends on Redis's clock (ms since the epoch): identifies the window when
        /// units are returned, so units of an ended window are never credited to the next one.
        window_end_ms: i64,
    },
    RateRefused {
        retry: Duration,
    },
    QuotaRefused {
        window: Duration,
    },
}

/// Tokens and units granted together, spent until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub tokens: u64,
    pub units: u64,
    pub expires: Instant,
    pub window_end_ms: i64,
    /// The limits it was granted under: what is unspent goes back to those keys.
    pub params: Params,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.tokens == 0 && self.units == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct CachedRefusal {
    quota: bool,
    /// When the client may retry (reported in `Retry-After`).
    retry_at: Instant,
    /// When this node asks Redis again (at most a lifetime later: another node may give back).
    recheck_at: Instant,
}

#[derive(Debug)]
struct State {
    params: Params,
    batches: VecDeque<Batch>,
    rate_seen: u64,
    used_seen: u64,
    window_ends: Instant,
    refused: Option<CachedRefusal>,
    renewing: bool,
}

/// One key's leases. `refill` makes the callers that find the batches empty wait for one call
/// instead of each making their own.
#[derive(Debug)]
pub struct Entry {
    state: Mutex<State>,
    pub refill: tokio::sync::Mutex<()>,
}

/// What a request does next.
#[derive(Debug)]
pub enum Step {
    /// Decided locally; `renew` asks for a background renewal.
    Done {
        decision: Decision,
        renew: Option<Want>,
    },
    /// Nothing (enough) held: ask Redis for this.
    Ask(Want),
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Entry {
    fn new(params: Params, now: Instant) -> Entry {
        Entry {
            state: Mutex::new(State {
                params,
                batches: VecDeque::new(),
                rate_seen: 0,
                used_seen: 0,
                window_ends: now,
                refused: None,
                renewing: false,
            }),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain counters, consistent after every statement: a panic elsewhere cannot
        // leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends one request from the batches if they hold what it needs, else says what to ask for.
    /// Batches past their lifetime (and all of them, when the limits changed) are moved to
    /// `settle` for the caller to give back.
    pub fn step(&self, params: Params, now: Instant, settle: &mut Vec<Batch>) -> Step {
        let mut state = self.lock();
        if state.params != params {
            settle.extend(state.batches.drain(..));
            *state = Entry::new(params, now)
                .state
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
        }
        expire(&mut state, now, settle);
        let need_tokens = params.rate.is_some();
        let need_units = params.quota.is_some();
        let tokens: u64 = state.batches.iter().map(|b| b.tokens).sum();
        let units: u64 = state.batches.iter().map(|b| b.units).sum();
        // A quota refusal comes before the rate limit counts anything; a rate refusal spends no unit.
        if let Some(refused) = state.refused
            && now < refused.recheck_at
        {
            let retry_after_secs =
                ceil_secs(refused.retry_at.saturating_duration_since(now)).max(1);
            if refused.quota && need_units && units == 0 {
                return Step::Done {
                    decision: quota_refusal(params, retry_after_secs),
                    renew: None,
                };
            }
            // Units held or not: Redis would refuse the rate again before reserving any.
            if !refused.quota && need_tokens && tokens == 0 {
                return Step::Done {
                    decision: rate_refusal(params, retry_after_secs),
                    renew: None,
                };
            }
        }
        let want = Want {
            tokens: if need_tokens && tokens == 0 {
                params.lease_tokens()
            } else {
                0
            },
            units: if need_units && units == 0 {
                params.block_units(state.used_seen)
            } else {
                0
            },
        };
        if want.tokens > 0 || want.units > 0 {
            return Step::Ask(want);
        }
        let decision = spend(&mut state, now);
        let renew = renewal(&mut state);
        Step::Done { decision, renew }
    }

    /// Takes in Redis's answer to a call asked for at `asked` (before the call: the lifetime counts
    /// from there, so it covers the moment Redis granted). With `spend`, the request that asked
    /// spends its one token and unit in the same step, so no other request can take them first;
    /// `None` then means the grant did not cover it (the limits changed meanwhile) and it asks again.
    pub fn apply(
        &self,
        params: Params,
        grant: Grant,
        asked: Instant,
        spend_one: bool,
    ) -> Option<Decision> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.params != params {
            return None;
        }
        let lifetime = params.lifetime();
        match grant {
            Grant::Granted {
                tokens,
                units,
                rate_remaining,
                used,
                window,
                window_end_ms,
            } => {
                state.refused = None;
                if params.rate.is_some() {
                    state.rate_seen = rate_remaining;
                }
                if params.quota.is_some() {
                    state.used_seen = used;
                    state.window_ends = asked + window;
                }
                if tokens > 0 || units > 0 {
                    state.batches.push_back(Batch {
                        tokens,
                        units,
                        expires: asked + lifetime,
                        window_end_ms,
                        params,
                    });
                }
                if !spend_one {
                    return None;
                }
                let has_tokens =
                    params.rate.is_none() || state.batches.iter().any(|b| b.tokens > 0);
                let has_units = params.quota.is_none() || state.batches.iter().any(|b| b.units > 0);
                (has_tokens && has_units).then(|| spend(&mut state, now))
            }
            Grant::RateRefused { retry } => {
                let retry_at = now + retry;
                state.refused = Some(CachedRefusal {
                    quota: false,
                    retry_at,
                    recheck_at: retry_at.min(now + lifetime),
                });
                Some(rate_refusal(params, ceil_secs(retry).max(1)))
            }
            Grant::QuotaRefused { window } => {
                let retry_at = now + window;
                state.refused = Some(CachedRefusal {
                    quota: true,
                    retry_at,
                    recheck_at: retry_at.min(now + lifetime),
                });
                Some(quota_refusal(params, ceil_secs(window).max(1)))
            }
        }
    }

    /// When the limits changed (a policy was edited), takes everything held under the old ones,
    /// so the caller can give it back before asking under the new ones: the admin view and the
    /// other nodes then see the count as it is.
    pub fn take_if_changed(&self, params: Params) -> Vec<Batch> {
        let mut state = self.lock();
        if state.params == params {
            return Vec::new();
        }
        let held: Vec<Batch> = state.batches.drain(..).collect();
        *state = Entry::new(params, Instant::now())
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        held
    }

    /// Tokens and units this node holds for `params` (for the admin view: Redis's counters do not
    /// include what a node holds but has not spent).
    pub fn held(&self, params: Params, now: Instant) -> (u64, u64) {
        let state = self.lock();
        if state.params != params {
            return (0, 0);
        }
        let window_over = now >= state.window_ends;
        state
            .batches
            .iter()
            .filter(|b| now < b.expires)
            .fold((0, 0), |(tokens, units), b| {
                (
                    tokens + b.tokens,
                    units + if window_over { 0 } else { b.units },
                )
            })
    }

    /// A background renewal ended (granted, refused or failed): another may start.
    pub fn renewed(&self) {
        self.lock().renewing = false;
    }

    /// Moves expired batches to `settle`; true when nothing is left that needs the entry kept.
    fn sweep(&self, now: Instant, settle: &mut Vec<Batch>) -> bool {
        let mut state = self.lock();
        expire(&mut state, now, settle);
        state.batches.is_empty()
            && !state.renewing
            && state.refused.is_none_or(|r| now >= r.recheck_at)
    }

    fn drain(&self, settle: &mut Vec<Batch>) {
        settle.extend(self.lock().batches.drain(..));
    }
}

fn expire(state: &mut State, now: Instant, settle: &mut Vec<Batch>) {
    let window_over = now >= state.window_ends;
    state.batches.retain_mut(|batch| {
        if window_over {
            // Units of an ended window are worth nothing: Redis dropped that counter already.
            batch.units = 0;
        }
        if now >= batch.expires {
            if !batch.is_empty() {
                settle.push(*batch);
            }
            return false;
        }
        !batch.is_empty()
    });
}

/// Spends one token and one unit (whichever the limits need) from the oldest batches that have them.
fn spend(state: &mut State, now: Instant) -> Decision {
    let params = state.params;
    let mut decision = Decision::default();
    if let Some((rate, _)) = params.rate {
        if let Some(batch) = state.batches.iter_mut().find(|b| b.tokens > 0) {
            batch.tokens -= 1;
        }
        let held: u64 = state.batches.iter().map(|b| b.tokens).sum();
        let limit = u64::from(rate);
        let remaining = state.rate_seen.saturating_add(held).min(limit);
        decision.rate = Some(Headroom {
            limit,
            remaining,
            reset_secs: ceil_secs(
                params
                    .interval()
                    .saturating_mul(u32::try_from(limit - remaining).unwrap_or(u32::MAX)),
            ),
        });
    }
    if let Some((max, _)) = params.quota {
        if let Some(batch) = state.batches.iter_mut().find(|b| b.units > 0) {
            batch.units -= 1;
        }
        let held: u64 = state.batches.iter().map(|b| b.units).sum();
        decision.quota = Some(Headroom {
            limit: max,
            remaining: max
                .saturating_sub(state.used_seen)
                .saturating_add(held)
                .min(max),
            reset_secs: ceil_secs(state.window_ends.saturating_duration_since(now)),
        });
    }
    state.batches.retain(|b| !b.is_empty());
    decision
}

/// Asks for a renewal when the tokens or units held fell to half a lease, so that a busy key finds
/// the next batch there before the current one runs out.
fn renewal(state: &mut State) -> Option<Want> {
    if state.renewing || state.batches.len() >= 2 {
        return None;
    }
    let params = state.params;
    let low = |held: u64, lease: u64| lease >= 2 && held.saturating_mul(2) <= lease;
    let tokens: u64 = state.batches.iter().map(|b| b.tokens).sum();
    let units: u64 = state.batches.iter().map(|b| b.units).sum();
    let lease = params.lease_tokens();
    let block = params.block_units(state.used_seen);
    let want = Want {
        tokens: if params.rate.is_some() && low(tokens, lease) {
            lease
        } else {
            0
        },
        units: if params.quota.is_some() && low(units, block) {
            block
        } else {
            0
        },
    };
    if want.tokens == 0 && want.units == 0 {
        return None;
    }
    state.renewing = true;
    Some(want)
}

fn rate_refusal(params: Params, retry_after_secs: u64) -> Decision {
    Decision {
        rate: params.rate.map(|(rate, _)| Headroom {
            limit: u64::from(rate),
            remaining: 0,
            reset_secs: retry_after_secs,
        }),
        quota: None,
        refused: Some(Refused::RateLimit { retry_after_secs }),
    }
}

fn quota_refusal(params: Params, retry_after_secs: u64) -> Decision {
    Decision {
        rate: None,
        quota: params.quota.map(|(max, _)| Headroom {
            limit: max,
            remaining: 0,
            reset_secs: retry_after_secs,
        }),
        refused: Some(Refused::Quota { retry_after_secs }),
    }
}

/// The keys this node holds leases for, bounded by `capacity`.
#[derive(Debug)]
pub struct Table {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    capacity: AtomicUsize,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            entries: Mutex::new(HashMap::new()),
            capacity: AtomicUsize::new(DEFAULT_CAPACITY),
        }
    }
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry of `key`, made if there is room; `None` when the table is full (the caller counts
    /// the request exactly instead, keeping nothing).
    /// The entry of `key`, if this node holds one.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.lock().get(key).cloned()
    }

    pub fn entry(&self, key: &str, params: Params) -> Option<Arc<Entry>> {
        let mut entries = self.lock();
        if let Some(entry) = entries.get(key) {
            return Some(entry.clone());
        }
        if entries.len() >= self.capacity.load(Ordering::Relaxed) {
            return None;
        }
        let entry = Arc::new(Entry::new(params, Instant::now()));
        entries.insert(key.to_owned(), entry.clone());
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Collects every expired batch to give back, and drops the keys nothing is held for (and that
    /// no request is using right now: its `Arc` is then only the table's).
    pub fn sweep(&self, now: Instant) -> Vec<(String, Vec<Batch>)> {
        let mut out = Vec::new();
        self.lock().retain(|key, entry| {
            let mut settle = Vec::new();
            let idle = entry.sweep(now, &mut settle);
            if !settle.is_empty() {
                out.push((key.clone(), settle));
            }
            !(idle && Arc::strong_count(entry) == 1)
        });
        out
    }

    /// Empties the table, returning every batch held (shutdown).
    pub fn drain(&self) -> Vec<(String, Vec<Batch>)> {
        let entries: Vec<_> = self.lock().drain().collect();
        entries
            .into_iter()
            .filter_map(|(key, entry)| {
                let mut settle = Vec::new();
                entry.drain(&mut settle);
                (!settle.is_empty()).then_some((key, settle))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnStorageError;

    fn params(rate: u32, per_ms: u64, quota: Option<u64>) -> Params {
        Params::new(
            Some(&RateLimit {
                rate,
                per: Duration::from_millis(per_ms),
                on_storage_error: OnStorageError::Local,
                exact: false,
            }),
            quota
                .map(|max| Quota {
                    max,
                    period: Duration::from_secs(3600),
                })
                .as_ref(),
        )
    }

    #[test]
    fn lease_sizes_follow_the_promised_bound() {
        // 500/s: a lifetime of 100 ms, so 50 tokens a lease (what the rate allows in a lifetime).
        let p = params(500, 1000, None);
        assert_eq!(p.lifetime(), Duration::from_millis(100));
        assert_eq!(p.lease_tokens(), 50);
        // Slow limits: the lifetime is capped at 1 s and a lease is never below one token.
        let slow = params(1000, 86_400_000, None);
        assert_eq!(slow.lifetime(), MAX_LIFETIME);
        assert_eq!(slow.lease_tokens(), 1);
        // Quota blocks shrink with what is left, down to one unit.
        let q = params(500, 1000, Some(10_000));
        assert_eq!(q.block_units(0), 100);
        assert_eq!(q.block_units(9_990), 1);
        assert_eq!(params(5, 1000, Some(100)).block_units(0), 2);
    }

    fn granted(tokens: u64, units: u64) -> Grant {
        Grant::Granted {
            tokens,
            units,
            rate_remaining: 0,
            used: units,
            window: Duration::from_secs(3600),
            window_end_ms: 1,
        }
    }

    #[test]
    fn tokens_are_spent_locally_renewed_at_half_and_given_back_at_expiry() {
        let p = params(500, 1000, None);
        let entry = Entry::new(p, Instant::now());
        let mut settle = Vec::new();
        let asked = Instant::now();
        assert!(matches!(
            entry.step(p, asked, &mut settle),
            Step::Ask(Want {
                tokens: 50,
                units: 0
            })
        ));
        let first = entry.apply(p, granted(50, 0), asked, true).unwrap();
        assert_eq!(first.refused, None);
        // 49 held: spent locally until half a lease is left, then one renewal is asked for.
        let mut renewals = Vec::new();
        for _ in 0..30 {
            match entry.step(p, Instant::now(), &mut settle) {
                Step::Done { decision, renew } => {
                    assert_eq!(decision.refused, None);
                    renewals.extend(renew);
                }
                Step::Ask(want) => panic!("asked for {want:?} with tokens held"),
            }
        }
        assert_eq!(
            renewals,
            vec![Want {
                tokens: 50,
                units: 0
            }]
        );
        // The 19 left are given back once the lifetime is over, and never spent after it.
        assert!(matches!(
            entry.step(p, asked + p.lifetime(), &mut settle),
            Step::Ask(_)
        ));
        assert_eq!(settle.len(), 1);
        assert_eq!(settle[0].tokens, 19);
    }

    #[test]
    fn a_refusal_is_remembered_until_the_retry_or_one_lifetime() {
        let p = params(5, 1000, Some(100));
        let entry = Entry::new(p, Instant::now());
        let mut settle = Vec::new();
        let now = Instant::now();
        let refused = entry
            .apply(
                p,
                Grant::RateRefused {
                    retry: Duration::from_secs(3),
                },
                now,
                true,
            )
            .unwrap();
        assert_eq!(
            refused.refused,
            Some(Refused::RateLimit {
                retry_after_secs: 3
            })
        );
        // Asked again only after one lifetime (100 ms), not on every refused request.
        for _ in 0..10 {
            assert!(matches!(
                entry.step(p, Instant::now(), &mut settle),
                Step::Done {
                    decision: Decision {
                        refused: Some(Refused::RateLimit { .. }),
                        ..
                    },
                    ..
                }
            ));
        }
        assert!(matches!(
            entry.step(p, Instant::now() + p.lifetime(), &mut settle),
            Step::Ask(_)
        ));
    }

    #[test]
    fn changed_limits_give_back_what_was_held() {
        let p = params(500, 1000, Some(10_000));
        let entry = Entry::new(p, Instant::now());
        let mut settle = Vec::new();
        entry
            .apply(p, granted(50, 100), Instant::now(), true)
            .unwrap();
        let raised = params(1000, 1000, Some(10_000));
        assert!(matches!(
            entry.step(raised, Instant::now(), &mut settle),
            Step::Ask(_)
        ));
        assert_eq!(settle.len(), 1);
        assert_eq!((settle[0].tokens, settle[0].units), (49, 99));
    }

    #[test]
    fn the_table_is_capped_and_swept() {
        let table = Table::default();
        table.set_capacity(3);
        let p = params(5, 1000, None);
        let held: Vec<_> = (0..3)
            .map(|i| table.entry(&format!("session:{i}"), p).unwrap())
            .collect();
        assert!(
            table.entry("session:new", p).is_none(),
            "full: counted exactly"
        );
        assert!(
            table.entry("session:1", p).is_some(),
            "known keys still found"
        );
        held[0].apply(p, granted(1, 0), Instant::now(), false);
        drop(held);
        // Idle keys go at once; the one holding a batch stays until its lifetime is over and is
        // handed back then.
        assert!(table.sweep(Instant::now()).is_empty());
        assert_eq!(table.len(), 1);
        let settled = table.sweep(Instant::now() + p.lifetime());
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].0, "session:0");
        assert!(table.is_empty());
    }
}
