//! Rate limits (GCRA) and quotas, behind a small trait so that the Redis backend can count across
//! nodes with the same semantics.
//!
//! One call checks the rate limit and the quota of one key, so the Redis implementation needs at most
//! one round trip per request (with `exact: true`), and with leases (docs/design.md §9e, [`lease`]) a few a
//! second per busy key. A refused request consumes nothing: an exhausted quota is refused before the
//! rate limiter counts, GCRA only advances on success, and the quota is only counted once the rate
//! limit has let the request through (Tyk #1876: a limiter that counts rejections never recovers under
//! overload).
//!
//! May import: `redis` (the connection, for `limits::redis`), `store` (its error type), `config`.
//! Never `store::redis`: the Redis limiter is given the store's connection where the gateway is wired.

pub mod lease;
pub mod memory;
pub mod redis;

#[cfg(test)]
pub mod contract;

use async_trait::async_trait;

use crate::config::{ApiDef, Policy, Quota, RateLimit};
use crate::store::StoreResult;

/// What is left of one limit after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the limit is fully available again.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    RateLimit { retry_after_secs: u64 },
    Quota { retry_after_secs: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub rate: Option<Headroom>,
    pub quota: Option<Headroom>,
    pub refused: Option<Refused>,
}

impl Decision {
    /// The headroom reported in `X-RateLimit-*`: the tighter of the two limits that apply.
    pub fn headline(&self) -> Option<Headroom> {
        match (self.rate, self.quota) {
            (Some(r), Some(q)) => Some(if q.remaining < r.remaining { q } else { r }),
            (r, q) => r.or(q),
        }
    }
}

/// The limits of one session at one API, and the counter key they are counted under.
///
/// A client's policy overrides the API's `rate_limit` and `quota`. Limits that come from the policy are
/// counted per session across every API the policy grants (one plan, one budget, as in Tyk); an API's
/// own limits are counted per session and API.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionLimits {
    pub key: String,
    pub rate: Option<RateLimit>,
    pub quota: Option<Quota>,
}

impl SessionLimits {
    pub fn resolve(policy: Option<&Policy>, api: &ApiDef, sid: &str) -> SessionLimits {
        let from_policy = policy.is_some_and(|p| p.rate_limit.is_some() || p.quota.is_some());
        let rate = policy.and_then(|p| p.rate_limit).or(api.rate_limit);
        let quota = policy.and_then(|p| p.quota).or(api.quota);
        // Pushed, not `format!`ed: this runs on every limited request (≈ 700 instructions less).
        let mut key = String::with_capacity("session::api:".len() + sid.len() + api.id.len());
        key.push_str("session:");
        key.push_str(sid);
        if !from_policy {
            key.push_str(":api:");
            key.push_str(&api.id);
        }
        SessionLimits { key, rate, quota }
    }
}

#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Counts one request for `key` against `rate` and then `quota` (either may be absent).
    async fn check(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        now_secs: u64,
    ) -> StoreResult<Decision>;

    /// Reads what is left for `key` without counting (for the admin session view).
    async fn peek(
        &self,
        key: &str,
        rate: Option<&RateLimit>,
        quota: Option<&Quota>,
        now_secs: u64,
    ) -> StoreResult<Decision>;

    /// Gives back what this node holds but has not spent (Redis leases) before the process ends.
    async fn release(&self) {}

    /// Requests this limiter could not count in its storage, by the `on_storage_error` choice that
    /// handled them (`local`, `allow`, `deny`); empty for limiters without remote storage.
    fn storage_errors(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
