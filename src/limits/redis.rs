//! Rate limits and quotas counted in Redis, so that every gateway node draws on the same budget.
//!
//! Two ways to count (docs/design.md §9e, docs/redis.md):
//! - **Leases** (the default): a node takes a batch of GCRA tokens and quota units from Redis in one
//!   script call and spends them locally ([`super::lease`]), renewing in the background and giving
//!   back what is unused when a batch expires and at shutdown. A busy key costs a few calls a second
//!   per node instead of one per request; the price is a bounded over-admission of the rate limit.
//! - **Exact** (`rate_limit.exact: true`): one Lua script per request (one `EVALSHA` round trip) does
//!   both: GCRA for the rate limit, then a fixed-window counter for the quota.
//!
//! Both use Redis's own clock (`TIME`), so nodes whose clocks disagree still agree on the counts, and
//! the same keys, so nodes may mix the two. A refused request consumes nothing: the GCRA's
//! theoretical arrival time (TAT) is only written when the request passes the rate limit *and* the
//! quota, and the quota is only incremented then.
//!
//! When Redis cannot be reached, the rate limit's `on_storage_error` decides: `local` (the default)
//! counts on this node's own [`MemoryLimiter`], `allow` lets the request through uncounted, `deny`
//! returns the storage error (the proxy answers 503). Every such request is counted in
//! [`Limiter::storage_errors`] (`tollgate_limiter_storage_errors_total` in `/metrics`). A lease held
//! when Redis goes away is still spent: those requests were counted when it was granted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::lease::{self, Batch, Entry, Grant, Params, Step, Want};
use super::memory::MemoryLimiter;
use super::{Decision, Headroom, Limiter, Refused};
use crate::config::{OnStorageError, Quota, RateLimit};
use crate::redis::Backend;
use crate::store::StoreResult;
use tokio::time::Instant;

/// KEYS: TAT, quota counter. ARGV: 'check' | 'peek', rate (0: none), period of the rate in µs,
/// quota max (-1: none), quota period in ms.
/// Returns {refused (0 no, 1 rate, 2 quota), rate remaining, µs until the rate is fully available,
/// µs until a refused request may retry, quota used, ms until the quota window ends}.
const LUA_LIMIT: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local peek = ARGV[1] == 'peek'
local rate, per = tonumber(ARGV[2]), tonumber(ARGV[3])
local qmax, period = tonumber(ARGV[4]), tonumber(ARGV[5])
local tat, after, interval = now, now, 0
local function remaining(at)
  if rate <= 0 then return 0 end
  local r = math.floor((per - (at - now)) / interval + 1e-6)
  if r < 0 then r = 0 end
  if r > rate then r = rate end
  return r
end
if rate > 0 then
  interval = per / rate
  tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if tat < now then tat = now end
  after = tat
  if not peek then
    after = tat + interval
    -- Allowed while the new TAT is at most one full period (the burst) ahead of now.
    if after - now > per + 1 then
      return {1, 0, 0, math.ceil(after - now - per), 0, 0}
    end
  end
end
local used, window = 0, 0
if qmax >= 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  window = redis.call('PTTL', KEYS[2])
  if window < 0 then window = period end
  if used >= qmax then
    if not peek then
      -- Refused by the quota: the rate limit is not charged either.
      return {2, remaining(tat), math.ceil(tat - now), window, used, window}
    end
  elseif not peek then
    used = redis.call('INCR', KEYS[2])
    if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], period) end
  end
end
if rate > 0 and not peek then
  redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.max(1, math.ceil((after - now) / 1000)))
end
return {0, remaining(after), math.ceil(after - now), 0, used, window}
"#;

/// A lease (docs/design.md §9e). KEYS: TAT, quota counter. ARGV: 'lease', rate (0: none), period of the
/// rate in µs, tokens wanted, quota max (-1: none), quota period in ms, units wanted.
/// Grants up to the tokens and units wanted (at least one of each wanted, else refuses), with the
/// same checks in the same order as `LUA_LIMIT`: the quota first, then the rate; nothing written on a
/// refusal. Returns {refused (0 no, 1 rate, 2 quota), tokens granted, rate remaining after,
/// µs until a refused request may retry, units granted, quota used after, ms until the quota window
/// ends, Redis's clock in ms}.
const LUA_LEASE: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local rate, per, want = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local qmax, period, qwant = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local used, window, units = 0, 0, 0
if qmax >= 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  window = redis.call('PTTL', KEYS[2])
  if window < 0 then window = period end
  if qwant > 0 then
    if used >= qmax then return {2, 0, 0, 0, 0, used, window, now_ms} end
    units = math.min(qwant, qmax - used)
  end
end
local tokens, remaining = 0, 0
if rate > 0 then
  local interval = per / rate
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if tat < now then tat = now end
  -- Tokens available now: the TAT may run at most one full period (the burst) ahead of now.
  local available = math.floor((now + per - tat) / interval + 1e-6)
  if want > 0 then
    if available < 1 then
      return {1, 0, 0, math.ceil(tat + interval - now - per), 0, used, window, now_ms}
    end
    tokens = math.min(want, available)
    tat = tat + tokens * interval
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
  remaining = math.max(0, math.min(rate, available - tokens))
end
if units > 0 then
  used = redis.call('INCRBY', KEYS[2], units)
  if redis.call('PTTL', KEYS[2]) < 0 then
    redis.call('PEXPIRE', KEYS[2], period)
    window = period
  end
end
return {0, tokens, remaining, 0, units, used, window, now_ms}
"#;

/// Gives back what a lease did not spend. KEYS: TAT, quota counter. ARGV: 'return', tokens, the
/// rate's period in µs, the rate, units, the end of the units' window (Redis clock, ms), tolerance
/// in ms. Tokens move the TAT back (never before now: GCRA does not bank idle time); units are taken
/// off the counter only if it is still the same window (its end within the tolerance), so units of
/// an ended window are never credited to the next one.
const LUA_RETURN: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tokens, per, rate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local units, wend, tol = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if tokens > 0 and rate > 0 then
  -- The interval as the lease script computes it (in floating point: under 1 µs for fast limits).
  local interval = per / rate
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if tat > now then
    tat = math.max(now, tat - tokens * interval)
    if tat > now then
      redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    else
      redis.call('DEL', KEYS[1])
    end
  end
end
if units > 0 then
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl > 0 and math.abs(math.floor(now / 1000) + pttl - wend) <= tol then
    local used = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    local back = math.min(units, used)
    if back > 0 then redis.call('DECRBY', KEYS[2], back) end
  end
end
return 0
"#;

/// The Redis [`Limiter`]; get one from [`crate::store::redis::RedisStore::limiter`] (it shares the
/// store's connection and key prefix).
pub struct RedisLimiter {
    /// Shared with the background renewals and the sweeper (which holds it weakly, so it ends
    /// when the limiter is dropped).
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<Backend>,
    prefix: String,
    script: Script,
    lease_script: Script,
    return_script: Script,
    fallback: MemoryLimiter,
    /// Requests that could not be counted in Redis, by what `on_storage_error` did with them:
    /// local, allow, deny.
    storage_errors: [AtomicU64; 3],
    degraded: AtomicBool,
    leases: lease::Table,
    sweeper: std::sync::Once,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("key_prefix", &self.inner.prefix)
            .field("storage_errors", &Limiter::storage_errors(self))
            .field("leased_keys", &self.inner.leases.len())
            .finish()
    }
}

fn ceil_div(value: i64, unit: i64) -> u64 {
    u64::try_from(value.max(0))
        .unwrap_or(0)
        .div_ceil(unit as u64)
}

impl RedisLimiter {
    pub(crate) fn new(backend: Arc<Backend>, prefix: &str) -> RedisLimiter {
        RedisLimiter {
            inner: Arc::new(Inner {
                backend,
                prefix: prefix.to_string(),
                script: Script::new(LUA_LIMIT),
                lease_script: Script::new(LUA_LEASE),
                return_script: Script::new(LUA_RETURN),
                fallback: MemoryLimiter::new(),
                storage_errors: Default::default(),
                degraded: AtomicBool::new(false),
                leases: lease::Table::default(),
                sweeper: std::sync::Once::new(),
            }),
        }
    }

    /// The keys this node holds leases for right now.
    pub fn leased_keys(&self) -> usize {
        self.inner.leases.len()
    }

    /// Caps the keys held (default [`lease::DEFAULT_CAPACITY`]); keys beyond it are counted exactly.
    pub fn set_lease_capacity(&self, capacity: usize) {
        self.inner.leases.set_capacity(capacity);
    }
}

impl Inner {
    /// The TAT key of one rate limit of one limiter key: the limit's parameters are part of the key,
    /// like the memory limiter keeps one GCRA state per (rate, per).
    fn rate_key(&self, key: &str, rate: &RateLimit) -> String {
        self.rate_key_of(key, rate.rate, rate.per)
    }

    fn rate_key_of(&self, key: &str, rate: u32, per: Duration) -> String {
        format!(
            "{}rl:{{{key}}}:rate:{}:{}",
            self.prefix,
            rate,
            per.as_millis()
        )
    }

    fn any_rate_key(&self, key: &str, params: &Params) -> String {
        match params.rate {
            Some((rate, per)) => self.rate_key_of(key, rate, per),
            None => format!("{}rl:{{{key}}}:rate", self.prefix),
        }
    }

    /// The quota counter of one limiter key. The `{key}` hash tag keeps both keys in one cluster slot.
    fn quota_key(&self, key: &str) -> String {
        format!("{}rl:{{{key}}}:quota", self.prefix)
    }

    async fn run(
        &self,
        mode: &str,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
    ) -> StoreResult<Decision> {
        // A rate of 0 or over 0 s is no limit (as in the memory limiter).
        let counted_rate = rate.filter(|r| r.rate > 0 && !r.per.is_zero());
        let rate_key = match counted_rate {
            Some(r) => self.rate_key(key, r),
            None => format!("{}rl:{{{key}}}:rate", self.prefix),
        };
        let mut conn = self.backend.conn();
        let reply: Vec<i64> = self
            .backend
            .bounded(
                self.script
                    .key(rate_key)
                    .key(self.quota_key(key))
                    .arg(mode)
                    .arg(counted_rate.map_or(0, |r| r.rate))
                    .arg(
                        counted_rate
                            .map_or(0, |r| u64::try_from(r.per.as_micros()).unwrap_or(u64::MAX)),
                    )
                    .arg(quota.map_or(-1, |q| i64::try_from(q.max).unwrap_or(i64::MAX)))
                    .arg(quota.map_or(0, |q| {
                        u64::try_from(q.period.as_millis().max(1)).unwrap_or(u64::MAX)
                    }))
                    .invoke_async(&mut conn),
            )
            .await?;
        let [
            refused,
            rate_remaining,
            rate_reset_us,
            retry_us,
            used,
            window_ms,
        ] = reply[..]
        else {
            return Err(crate::store::StoreError::Corrupt(
                "unexpected reply from the rate-limit script".into(),
            ));
        };
        let mut decision = Decision::default();
        if let Some(rate) = rate {
            let limit = u64::from(rate.rate);
            decision.rate = Some(if counted_rate.is_none() {
                Headroom {
                    limit,
                    remaining: limit,
                    reset_secs: 0,
                }
            } else if refused == 1 {
                let retry_after_secs = ceil_div(retry_us, 1_000_000).max(1);
                decision.refused = Some(Refused::RateLimit { retry_after_secs });
                Headroom {
                    limit,
                    remaining: 0,
                    reset_secs: retry_after_secs,
                }
            } else {
                Headroom {
                    limit,
                    remaining: u64::try_from(rate_remaining.max(0)).unwrap_or(0),
                    reset_secs: ceil_div(rate_reset_us, 1_000_000),
                }
            });
        }
        if refused == 1 {
            return Ok(decision);
        }
        if let Some(quota) = quota {
            let reset_secs = ceil_div(window_ms, 1000);
            let used = u64::try_from(used.max(0)).unwrap_or(0);
            if refused == 2 {
                decision.refused = Some(Refused::Quota {
                    retry_after_secs: reset_secs.max(1),
                });
            }
            decision.quota = Some(Headroom {
                limit: quota.max,
                remaining: quota.max.saturating_sub(used),
                reset_secs: if refused == 2 {
                    reset_secs.max(1)
                } else {
                    reset_secs
                },
            });
        }
        Ok(decision)
    }

    fn note_success(&self) {
        // Read first: a write to this shared line on every request would bounce it between cores.
        if self.degraded.load(Ordering::Relaxed) && self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("redis limiter: counting in redis again");
        }
    }

    fn note_error(&self, err: &crate::store::StoreError, choice: OnStorageError) {
        let slot = match choice {
            OnStorageError::Local => 0,
            OnStorageError::Allow => 1,
            OnStorageError::Deny => 2,
        };
        self.storage_errors[slot].fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, on_storage_error = ?choice, "redis limiter: cannot count in redis");
        }
    }
}

impl Inner {
    /// Counts one request from this node's leases, asking Redis only when they do not hold what it
    /// needs (see [`lease`]). An error is a failed call to Redis: the caller applies
    /// `on_storage_error`.
    async fn leased(
        self: &Arc<Self>,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
    ) -> StoreResult<Decision> {
        let params = Params::new(rate, quota);
        if params.rate.is_none() && params.quota.is_none() {
            return self.run("check", key, rate, quota).await;
        }
        // Full table (a flood of new sessions): this key is counted exactly, nothing is kept.
        let Some(entry) = self.leases.entry(key, params) else {
            return self.run("check", key, rate, quota).await;
        };
        self.start_sweeper();
        // Limits changed (a policy edited): what was held under the old ones goes back first, so
        // that the counts are right before anything is asked under the new ones. Rare; one call.
        let old = entry.take_if_changed(params);
        if !old.is_empty() {
            self.give_back(key, &old).await;
        }
        // Twice at most: a grant can miss only when another request changed the limits meanwhile.
        for _ in 0..2 {
            let mut settle = Vec::new();
            let step = entry.step(params, Instant::now(), &mut settle);
            self.settle_later(key, settle);
            match step {
                Step::Done { decision, renew } => {
                    if let Some(want) = renew {
                        self.renew_later(key, params, entry.clone(), want);
                    }
                    return Ok(decision);
                }
                Step::Ask(_) => {}
            }
            // One call for every request that found the batches empty: the others wait for it and
            // then spend from it. The wait is bounded like a call of our own: while Redis hangs,
            // waiters must not queue up behind one timeout after another.
            let Ok(_refill) =
                tokio::time::timeout(self.backend.timeout(), entry.refill.lock()).await
            else {
                return Err(crate::store::StoreError::Unavailable(
                    "redis limiter: the lease call for this key did not finish in time".into(),
                ));
            };
            let mut settle = Vec::new();
            let asked = Instant::now();
            let step = entry.step(params, asked, &mut settle);
            self.settle_later(key, settle);
            let want = match step {
                Step::Done { decision, renew } => {
                    if let Some(want) = renew {
                        self.renew_later(key, params, entry.clone(), want);
                    }
                    return Ok(decision);
                }
                Step::Ask(want) => want,
            };
            let grant = self.lease(key, &params, want).await?;
            if let Some(decision) = entry.apply(params, grant, asked, true) {
                return Ok(decision);
            }
        }
        self.run("check", key, rate, quota).await
    }

    /// One lease call.
    async fn lease(&self, key: &str, params: &Params, want: Want) -> StoreResult<Grant> {
        let mut conn = self.backend.conn();
        let reply: Vec<i64> = self
            .backend
            .bounded(
                self.lease_script
                    .key(self.any_rate_key(key, params))
                    .key(self.quota_key(key))
                    .arg("lease")
                    .arg(params.rate.map_or(0, |(rate, _)| rate))
                    .arg(params.rate.map_or(0, |(_, per)| {
                        u64::try_from(per.as_micros()).unwrap_or(u64::MAX)
                    }))
                    .arg(want.tokens)
                    .arg(
                        params
                            .quota
                            .map_or(-1, |(max, _)| i64::try_from(max).unwrap_or(i64::MAX)),
                    )
                    .arg(params.quota.map_or(0, |(_, period)| {
                        u64::try_from(period.as_millis().max(1)).unwrap_or(u64::MAX)
                    }))
                    .arg(want.units)
                    .invoke_async(&mut conn),
            )
            .await?;
        let [
            refused,
            tokens,
            remaining,
            retry_us,
            units,
            used,
            window_ms,
            now_ms,
        ] = reply[..]
        else {
            return Err(crate::store::StoreError::Corrupt(
                "unexpected reply from the lease script".into(),
            ));
        };
        let positive = |n: i64| u64::try_from(n).unwrap_or(0);
        let window = Duration::from_millis(positive(window_ms));
        Ok(match refused {
            1 => Grant::RateRefused {
                retry: Duration::from_micros(positive(retry_us)),
            },
            2 => Grant::QuotaRefused { window },
            _ => Grant::Granted {
                tokens: positive(tokens),
                units: positive(units),
                rate_remaining: positive(remaining),
                used: positive(used),
                window,
                window_end_ms: now_ms.saturating_add(window_ms.max(0)),
            },
        })
    }

    /// Gives back the unused part of `batches` (one call each that holds anything). A failure only
    /// leaves the units counted as used (logged; the limits stay on the safe side).
    async fn give_back(&self, key: &str, batches: &[Batch]) {
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            // Back to the keys of the limits it was granted under.
            let params = &batch.params;
            let tolerance_ms = params
                .quota
                .map_or(0, |(_, period)| {
                    u64::try_from(period.as_millis() / 2).unwrap_or(u64::MAX)
                })
                .max(1);
            let (rate, per_us) = params.rate.map_or((0, 0), |(rate, per)| {
                (rate, u64::try_from(per.as_micros()).unwrap_or(u64::MAX))
            });
            let mut conn = self.backend.conn();
            let returned: StoreResult<i64> = self
                .backend
                .bounded(
                    self.return_script
                        .key(self.any_rate_key(key, params))
                        .key(self.quota_key(key))
                        .arg("return")
                        .arg(batch.tokens)
                        .arg(per_us)
                        .arg(rate)
                        .arg(batch.units)
                        .arg(batch.window_end_ms)
                        .arg(tolerance_ms)
                        .invoke_async(&mut conn),
                )
                .await;
            if let Err(err) = returned {
                tracing::debug!(error = %err, tokens = batch.tokens, units = batch.units, "redis limiter: could not give back an unused lease");
            }
        }
    }

    fn settle_later(self: &Arc<Self>, key: &str, batches: Vec<Batch>) {
        if batches.iter().all(Batch::is_empty) {
            return;
        }
        let inner = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move { inner.give_back(&key, &batches).await });
    }

    /// Renews a lease in the background, so that a busy key finds the next batch there in time.
    fn renew_later(self: &Arc<Self>, key: &str, params: Params, entry: Arc<Entry>, want: Want) {
        let inner = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let asked = Instant::now();
            if let Ok(grant) = inner.lease(&key, &params, want).await {
                entry.apply(params, grant, asked, false);
            }
            entry.renewed();
        });
    }

    /// Starts (once) the task that gives back expired batches and drops idle keys. It holds the
    /// limiter weakly and ends with it.
    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper.call_once(|| {
            let weak: Weak<Inner> = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease::SWEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    for (key, batches) in inner.leases.sweep(Instant::now()) {
                        inner.give_back(&key, &batches).await;
                    }
                }
            });
        });
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        now_secs: u64,
    ) -> StoreResult<Decision> {
        let inner = &self.inner;
        let counted = if rate.is_some_and(|r| r.exact) {
            inner.run("check", key, rate, quota).await
        } else {
            inner.leased(key, rate, quota).await
        };
        match counted {
            Ok(decision) => {
                inner.note_success();
                Ok(decision)
            }
            Err(err) => {
                let choice = rate.map_or(OnStorageError::Local, |r| r.on_storage_error);
                inner.note_error(&err, choice);
                match choice {
                    OnStorageError::Local => inner.fallback.check(key, rate, quota, now_secs).await,
                    OnStorageError::Allow => Ok(Decision::default()),
                    OnStorageError::Deny => Err(err),
                }
            }
        }
    }

    async fn peek(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        _now_secs: u64,
    ) -> StoreResult<Decision> {
        let mut decision = self.inner.run("peek", key, rate, quota).await?;
        // Redis counts what this node holds as used; the view is of what is left to spend.
        if let Some(entry) = self.inner.leases.get(key) {
            let (tokens, units) = entry.held(Params::new(rate, quota), Instant::now());
            if let Some(r) = decision.rate.as_mut() {
                r.remaining = r.remaining.saturating_add(tokens).min(r.limit);
            }
            if let Some(q) = decision.quota.as_mut() {
                q.remaining = q.remaining.saturating_add(units).min(q.limit);
            }
        }
        Ok(decision)
    }

    async fn release(&self) {
        let inner = &self.inner;
        for (key, batches) in inner.leases.drain() {
            inner.give_back(&key, &batches).await;
        }
    }

    fn storage_errors(&self) -> Vec<(&'static str, u64)> {
        ["local", "allow", "deny"]
            .into_iter()
            .zip(&self.inner.storage_errors)
            .map(|(choice, n)| (choice, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::RedisConfig;
    use crate::redis::testing::{RedisServer, unique_prefix};

    async fn limiter(server: &RedisServer) -> (RedisLimiter, String) {
        let prefix = unique_prefix();
        let (backend, _) = crate::redis::Backend::connect(
            &RedisConfig {
                url: Some(server.url()),
                cluster: Vec::new(),
                key_prefix: prefix.clone(),
                timeout: Duration::from_secs(2),
            },
            Duration::from_secs(5),
        )
        .await
        .expect("connect to the test redis");
        (RedisLimiter::new(backend, &prefix), prefix)
    }

    fn rate(n: u32, exact: bool) -> RateLimit {
        RateLimit {
            rate: n,
            per: Duration::from_secs(1),
            on_storage_error: OnStorageError::Deny,
            exact,
        }
    }

    async fn scripts_run(server: &RedisServer) -> u64 {
        let mut conn = server.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    async fn quota_used(server: &RedisServer, prefix: &str, key: &str) -> i64 {
        let mut conn = server.connection().await;
        redis::cmd("GET")
            .arg(format!("{prefix}rl:{{{key}}}:quota"))
            .query_async::<Option<i64>>(&mut conn)
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// `exact: true` is one script call per request; leases, a handful for the same requests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_spare_redis_the_calls_that_exact_limits_make() {
        let server = RedisServer::start();
        let (limiter, _) = limiter(&server).await;
        let quota = Quota {
            max: 1_000_000,
            period: Duration::from_secs(3600),
        };
        // The first call of a script also loads it (EVALSHA, NOSCRIPT, EVALSHA): not counted.
        limiter
            .check("warm", Some(&rate(100_000, true)), Some(&quota), 0)
            .await
            .unwrap();
        let before = scripts_run(&server).await;
        for _ in 0..200 {
            let d = limiter
                .check("exact", Some(&rate(100_000, true)), Some(&quota), 0)
                .await
                .unwrap();
            assert_eq!(d.refused, None);
        }
        let exact = scripts_run(&server).await - before;
        assert_eq!(exact, 200);
        for _ in 0..200 {
            let d = limiter
                .check("leased", Some(&rate(100_000, false)), Some(&quota), 0)
                .await
                .unwrap();
            assert_eq!(d.refused, None);
        }
        let leased = scripts_run(&server).await - before - exact;
        assert!(
            leased <= 10,
            "{leased} script calls for 200 leased requests"
        );
    }

    /// A client minting sessions cannot grow the lease table past its cap: keys beyond it are
    /// counted exactly (their quotas still hold), and the sweeper empties the table once the leases
    /// have expired.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lease_table_stays_bounded_under_a_flood_of_sessions() {
        let server = RedisServer::start();
        let (limiter, _) = limiter(&server).await;
        limiter.set_lease_capacity(32);
        let one = Quota {
            max: 1,
            period: Duration::from_secs(3600),
        };
        let limit = rate(10, false);
        for i in 0..300 {
            let key = format!("session:minted-{i}");
            let first = limiter
                .check(&key, Some(&limit), Some(&one), 0)
                .await
                .unwrap();
            assert_eq!(first.refused, None, "{key}");
            let second = limiter
                .check(&key, Some(&limit), Some(&one), 0)
                .await
                .unwrap();
            assert!(
                matches!(second.refused, Some(Refused::Quota { .. })),
                "{key}: {second:?}"
            );
            assert!(limiter.leased_keys() <= 32, "{}", limiter.leased_keys());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while limiter.leased_keys() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} keys still held",
                limiter.leased_keys()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Quota units reserved but not spent go back to Redis when the lease expires, and at once on
    /// release (shutdown): the counter then says exactly what was spent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unspent_units_go_back_at_expiry_and_at_release() {
        let server = RedisServer::start();
        let (limiter, prefix) = limiter(&server).await;
        let quota = Quota {
            max: 10_000,
            period: Duration::from_secs(3600),
        };
        for key in ["expires", "released"] {
            let d = limiter.check(key, None, Some(&quota), 0).await.unwrap();
            assert_eq!(d.quota.unwrap().remaining, 9_999);
        }
        // One block of 10,000 / 16 units reserved per key, one unit spent.
        assert_eq!(quota_used(&server, &prefix, "released").await, 625);
        limiter.release().await;
        assert_eq!(quota_used(&server, &prefix, "released").await, 1);
        assert_eq!(quota_used(&server, &prefix, "expires").await, 1);

        let d = limiter
            .check("expires2", None, Some(&quota), 0)
            .await
            .unwrap();
        assert_eq!(d.refused, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while quota_used(&server, &prefix, "expires2").await != 1 {
            assert!(std::time::Instant::now() < deadline, "never given back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(limiter.leased_keys(), 0);
    }

    /// Unspent tokens go back too: after a release, an exact check on the same limit sees them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unspent_tokens_go_back_at_release() {
        let server = RedisServer::start();
        let (limiter, _) = limiter(&server).await;
        // 36,000 an hour: a lifetime of 1 s (the cap), so leases of 36,000 × 1 s / 3600 s = 10.
        let leased = RateLimit {
            per: Duration::from_secs(3600),
            ..rate(36_000, false)
        };
        let exact = RateLimit {
            exact: true,
            ..leased
        };
        let d = limiter.check("t", Some(&leased), None, 0).await.unwrap();
        assert_eq!(d.refused, None);
        let held = limiter.check("t", Some(&exact), None, 0).await.unwrap();
        assert_eq!(
            held.rate.unwrap().remaining,
            36_000 - 10 - 1,
            "a lease of 10 is out"
        );
        limiter.release().await;
        let back = limiter.check("t", Some(&exact), None, 0).await.unwrap();
        assert_eq!(
            back.rate.unwrap().remaining,
            36_000 - 3,
            "the 9 unspent came back"
        );
    }

    /// A frozen Redis and many requests of one key at once: the one lease call times out, and the
    /// requests waiting for it give up after the same timeout instead of queueing one timeout after
    /// another behind it (40 × 250 ms would be 10 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_for_a_lease_give_up_within_the_timeout_when_redis_hangs() {
        let server = RedisServer::start();
        let prefix = unique_prefix();
        let (backend, _) = crate::redis::Backend::connect(
            &RedisConfig {
                url: Some(server.url()),
                cluster: Vec::new(),
                key_prefix: prefix.clone(),
                timeout: Duration::from_millis(250),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let limiter = Arc::new(RedisLimiter::new(backend, &prefix));
        let frozen = server.freeze();
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter
                        .check("hot", Some(&rate(100, false)), None, 0)
                        .await
                        .is_err()
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap(), "counted without redis");
        }
        let elapsed = started.elapsed();
        drop(frozen);
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    }

    /// Redis goes away while a node holds a lease: what the node already holds is spent (it was
    /// counted when granted); past it, `on_storage_error` decides as it always did.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lease_is_spent_without_redis_then_on_storage_error_decides() {
        let mut server = RedisServer::start();
        let (limiter, _) = limiter(&server).await;
        // 100/s: leases of 10 tokens.
        let deny = rate(100, false);
        let d = limiter.check("k", Some(&deny), None, 0).await.unwrap();
        assert_eq!(d.refused, None);
        server.stop();
        let mut served = 1;
        let err = loop {
            match limiter.check("k", Some(&deny), None, 0).await {
                Ok(d) => {
                    assert_eq!(d.refused, None);
                    served += 1;
                    assert!(served <= 10, "more than the lease was spent");
                }
                Err(err) => break err,
            }
        };
        assert!(
            matches!(err, crate::store::StoreError::Unavailable(_)),
            "{err:?}"
        );
        assert_eq!(
            Limiter::storage_errors(&limiter),
            vec![("local", 0), ("allow", 0), ("deny", 1)]
        );
    }
}
