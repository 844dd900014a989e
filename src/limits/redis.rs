//! Rate limits and quotas counted in Redis, so that every gateway node draws on the same budget.
//!
//! One Lua script per request (one `EVALSHA` round trip) does both: GCRA for the rate limit, then a
//! fixed-window counter for the quota. Both use Redis's own clock (`TIME`), so nodes whose clocks
//! disagree still agree on the counts. A refused request consumes nothing: the GCRA's theoretical
//! arrival time (TAT) is only written when the request passes the rate limit *and* the quota, and the
//! quota is only incremented then.
//!
//! When Redis cannot be reached, the rate limit's `on_storage_error` decides: `local` (the default)
//! counts on this node's own [`MemoryLimiter`], `allow` lets the request through uncounted, `deny`
//! returns the storage error (the proxy answers 503). Every such request is counted in
//! [`Limiter::storage_errors`] (`tollgate_limiter_storage_errors_total` in `/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use redis::Script;

use super::memory::MemoryLimiter;
use super::{Decision, Headroom, Limiter, Refused};
use crate::config::{OnStorageError, Quota, RateLimit};
use crate::store::StoreResult;
use crate::store::redis::Backend;

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

/// The Redis [`Limiter`]; get one from [`crate::store::redis::RedisStore::limiter`] (it shares the
/// store's connection and key prefix).
pub struct RedisLimiter {
    backend: Arc<Backend>,
    prefix: String,
    script: Script,
    fallback: MemoryLimiter,
    /// Requests that could not be counted in Redis, by what `on_storage_error` did with them:
    /// local, allow, deny.
    storage_errors: [AtomicU64; 3],
    degraded: AtomicBool,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("key_prefix", &self.prefix)
            .field("storage_errors", &Limiter::storage_errors(self))
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
            backend,
            prefix: prefix.to_string(),
            script: Script::new(LUA_LIMIT),
            fallback: MemoryLimiter::new(),
            storage_errors: Default::default(),
            degraded: AtomicBool::new(false),
        }
    }

    /// The TAT key of one rate limit of one limiter key: the limit's parameters are part of the key,
    /// like the memory limiter keeps one GCRA state per (rate, per).
    fn rate_key(&self, key: &str, rate: &RateLimit) -> String {
        format!(
            "{}rl:{{{key}}}:rate:{}:{}",
            self.prefix,
            rate.rate,
            rate.per.as_millis()
        )
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
        if self.degraded.swap(false, Ordering::Relaxed) {
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

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        now_secs: u64,
    ) -> StoreResult<Decision> {
        match self.run("check", key, rate, quota).await {
            Ok(decision) => {
                self.note_success();
                Ok(decision)
            }
            Err(err) => {
                let choice = rate.map_or(OnStorageError::Local, |r| r.on_storage_error);
                self.note_error(&err, choice);
                match choice {
                    OnStorageError::Local => self.fallback.check(key, rate, quota, now_secs).await,
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
        self.run("peek", key, rate, quota).await
    }

    fn storage_errors(&self) -> Vec<(&'static str, u64)> {
        ["local", "allow", "deny"]
            .into_iter()
            .zip(&self.storage_errors)
            .map(|(choice, n)| (choice, n.load(Ordering::Relaxed)))
            .collect()
    }
}
