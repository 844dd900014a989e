//! Which policy applies to a token: the policy of the client that the token was issued to.
//!
//! Policies come from two sources: policies.yaml (read-only, part of the running configuration) and
//! the store (created through the admin API). Ids are unique across both, since the admin API refuses
//! an id the file has; should a reload bring a file policy with a stored one's id, the file one wins
//! (it is the one an operator can see in the file). A client that names a policy found in neither
//! (a policy deleted with `?force=true`, or a race with such a delete) is on the API's own defaults:
//! no policy limits, scopes or access, never an error.
//!
//! The policy is resolved on every request, so a change applies to existing sessions at once: a reload
//! replaces the file policies; stored ones are read through [`StoredPolicies`], a local cache that is
//! dropped whenever the store's policy epoch moves (this node's own writes at once, other nodes' through
//! Redis pub/sub), so the proxy path costs no storage round trip while the policy is cached.
//!
//! Static clients come from the API definitions; dynamic clients live in the store (see
//! [`client_policy_id`]).
//!
//! May import: `store`, `token` (claims), `config`. Used by `auth`, `oauth` and `admin`; imports none of them.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::{OnStorageError, Policy, Quota, RateLimit, RuntimeConfig};
use crate::store::{Store, StoreError, StoreResult, StoredPolicy, StoredQuota, StoredRateLimit};
use crate::token::jwt::AccessClaims;

/// The policy id of `(api_id, client_id)`, if the client has one: static clients from the API
/// definitions, dynamic ones from the store. No cache of its own: the Redis store already keeps clients
/// locally with pub/sub invalidation (so a client's new policy is seen on every node at once), and the
/// memory store is a map lookup.
pub async fn client_policy_id(
    config: &RuntimeConfig,
    store: &dyn Store,
    api_id: &str,
    client_id: &str,
) -> StoreResult<Option<String>> {
    let issuing = config.apis.iter().find(|a| a.id == api_id);
    if let Some(client) = issuing
        .and_then(|a| a.oauth.as_ref())
        .and_then(|o| o.clients.iter().find(|c| c.client_id == client_id))
    {
        return Ok(client.policy.clone());
    }
    Ok(store
        .get_client(api_id, client_id)
        .await?
        .and_then(|c| c.policy))
}

/// How long a stored policy (or its absence) is trusted at most, even while the epoch stands still: a
/// bound in case an invalidation is ever lost, not the mechanism that makes changes visible.
const STORED_TTL: Duration = Duration::from_secs(60);
/// The cache is cleared rather than grown beyond this many ids (ids come from clients' `policy`
/// fields, so this is far more than any real deployment has).
const STORED_MAX: usize = 10_000;

/// The stored policies this node has read, valid for one policy epoch of the store.
#[derive(Default)]
struct Cached {
    epoch: u64,
    /// id → the policy, or `None` when the store has none (cached too: a client whose policy was
    /// deleted must not cost a round trip per request).
    entries: HashMap<String, (Option<Arc<Policy>>, Instant)>,
}

/// Stored policies through a local cache keyed by [`Store::policy_epoch`].
pub struct StoredPolicies {
    store: Arc<dyn Store>,
    cache: RwLock<Cached>,
}

impl StoredPolicies {
    pub fn new(store: Arc<dyn Store>) -> StoredPolicies {
        StoredPolicies {
            store,
            cache: RwLock::new(Cached::default()),
        }
    }

    /// The stored policy `id`, from the cache while the store's epoch has not moved since it was read.
    pub async fn get(&self, id: &str) -> StoreResult<Option<Arc<Policy>>> {
        // Read before the store is asked: a change made after this point moves the epoch, so an
        // answer that predates it is never used under the new epoch (see `fill`).
        let epoch = self.store.policy_epoch();
        if let Some(epoch) = epoch
            && let Some(hit) = self.cached(id, epoch)
        {
            return Ok(hit);
        }
        let policy = match self.store.get_policy(id).await? {
            Some(stored) => Some(Arc::new(from_stored(&stored)?)),
            None => None,
        };
        if let Some(epoch) = epoch {
            self.fill(id, epoch, policy.clone());
        }
        Ok(policy)
    }

    fn cached(&self, id: &str, epoch: u64) -> Option<Option<Arc<Policy>>> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        if cache.epoch != epoch {
            return None;
        }
        cache
            .entries
            .get(id)
            .filter(|(_, at)| at.elapsed() < STORED_TTL)
            .map(|(policy, _)| policy.clone())
    }

    /// Remembers what was read under `epoch`. An older epoch than the cache's is dropped (the answer
    /// may predate a change); a newer one starts the cache afresh.
    fn fill(&self, id: &str, epoch: u64, policy: Option<Arc<Policy>>) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if epoch < cache.epoch {
            return;
        }
        if epoch > cache.epoch || cache.entries.len() >= STORED_MAX {
            cache.entries.clear();
            cache.epoch = epoch;
        }
        cache
            .entries
            .insert(id.to_string(), (policy, Instant::now()));
    }
}

/// A policy as resolved for one request: borrowed from the running configuration or shared from the
/// stored-policy cache. Derefs to the policy.
#[derive(Debug, Clone)]
pub enum Resolved<'a> {
    File(&'a Policy),
    Stored(Arc<Policy>),
}

impl Deref for Resolved<'_> {
    type Target = Policy;

    fn deref(&self) -> &Policy {
        match self {
            Resolved::File(policy) => policy,
            Resolved::Stored(policy) => policy,
        }
    }
}

impl Resolved<'_> {
    /// `file` (policies.yaml) or `store` (created through the admin API), as the admin API says it.
    pub fn source(&self) -> &'static str {
        match self {
            Resolved::File(_) => "file",
            Resolved::Stored(_) => "store",
        }
    }
}

/// The policy named `id`: policies.yaml first, then the store. `None` when `id` is `None` or names
/// no policy in either (the caller then applies the API's defaults).
pub async fn resolve<'a>(
    file: &'a [Policy],
    stored: &StoredPolicies,
    id: Option<&str>,
) -> StoreResult<Option<Resolved<'a>>> {
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    if let Some(policy) = file.iter().find(|p| p.id == id) {
        return Ok(Some(Resolved::File(policy)));
    }
    let found = stored.get(id).await?;
    if found.is_none() {
        tracing::debug!(policy = %id, "a client names a policy that does not exist; API defaults apply");
    }
    Ok(found.map(Resolved::Stored))
}

/// Whether the token's policy grants access to `api_id` (Tyk's multi-API access).
pub fn grants(policy: Option<&Policy>, api_id: &str, _claims: &AccessClaims) -> bool {
    policy.is_some_and(|p| p.access.iter().any(|a| a == api_id))
}

/// The token's scope as it applies now: narrowed to the policy's `scopes` when the policy sets them.
/// Tokens are issued narrowed already; this makes a policy narrowed later apply to existing tokens at
/// once. `None`: nothing to narrow (the token's own scope applies). A policy can never widen a token.
pub fn narrowed_scope(scope: &str, policy: Option<&Policy>) -> Option<String> {
    let allowed = policy?.scopes.as_ref()?;
    let kept: Vec<&str> = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .filter(|s| allowed.iter().any(|a| a == s))
        .collect();
    let kept = kept.join(" ");
    (kept != scope).then_some(kept)
}

/// The validated model of a stored policy. The admin API validated it before storing it; a record
/// that fails here was written by something else and is `Corrupt` (the caller answers 503/500, never
/// applies half a policy).
pub fn from_stored(stored: &StoredPolicy) -> StoreResult<Policy> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("policy `{}`: {what}", stored.id));
    let rate_limit = match &stored.rate_limit {
        Some(r) => {
            if r.rate == 0 || r.per_ms == 0 {
                return Err(corrupt("rate_limit must be positive"));
            }
            Some(RateLimit {
                rate: r.rate,
                per: Duration::from_millis(r.per_ms),
                on_storage_error: OnStorageError::parse(&r.on_storage_error)
                    .ok_or_else(|| corrupt("unknown rate_limit.on_storage_error"))?,
                exact: r.exact,
            })
        }
        None => None,
    };
    let quota = match &stored.quota {
        Some(q) => {
            if q.max == 0 || q.period_ms == 0 {
                return Err(corrupt("quota must be positive"));
            }
            Some(Quota {
                max: q.max,
                period: Duration::from_millis(q.period_ms),
            })
        }
        None => None,
    };
    Ok(Policy {
        id: stored.id.clone(),
        rate_limit,
        quota,
        scopes: stored.scopes.clone(),
        access: stored.access.clone(),
    })
}

/// The stored form of a validated policy.
pub fn to_stored(policy: &Policy, created_at: u64, updated_at: u64) -> StoredPolicy {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    StoredPolicy {
        id: policy.id.clone(),
        rate_limit: policy.rate_limit.map(|r| StoredRateLimit {
            rate: r.rate,
            per_ms: millis(r.per),
            on_storage_error: r.on_storage_error.as_str().to_string(),
            exact: r.exact,
        }),
        quota: policy.quota.map(|q| StoredQuota {
            max: q.max,
            period_ms: millis(q.period),
        }),
        scopes: policy.scopes.clone(),
        access: policy.access.clone(),
        created_at,
        updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PolicyWrite;
    use crate::store::memory::MemoryStore;

    fn gold(rate: u32) -> Policy {
        Policy {
            id: "gold".into(),
            rate_limit: Some(RateLimit {
                rate,
                per: Duration::from_millis(1500),
                on_storage_error: OnStorageError::Deny,
                exact: false,
            }),
            quota: Some(Quota {
                max: 7,
                period: Duration::from_secs(86_400),
            }),
            scopes: Some(vec!["read".into()]),
            access: vec!["books".into()],
        }
    }

    #[test]
    fn stored_form_round_trips() {
        let policy = gold(5);
        let stored = to_stored(&policy, 10, 20);
        assert_eq!(stored.rate_limit.as_ref().unwrap().per_ms, 1500);
        assert_eq!(stored.rate_limit.as_ref().unwrap().on_storage_error, "deny");
        assert_eq!(from_stored(&stored).unwrap(), policy);
    }

    #[test]
    fn corrupt_stored_policies_are_refused_not_half_applied() {
        let mut stored = to_stored(&gold(5), 0, 0);
        stored.rate_limit.as_mut().unwrap().rate = 0;
        assert!(matches!(from_stored(&stored), Err(StoreError::Corrupt(_))));
        let mut stored = to_stored(&gold(5), 0, 0);
        stored.rate_limit.as_mut().unwrap().on_storage_error = "maybe".into();
        assert!(matches!(from_stored(&stored), Err(StoreError::Corrupt(_))));
        let mut stored = to_stored(&gold(5), 0, 0);
        stored.quota.as_mut().unwrap().period_ms = 0;
        assert!(matches!(from_stored(&stored), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_policy_narrows_a_token_scope_but_never_widens_it() {
        let policy = gold(5);
        assert_eq!(
            narrowed_scope("read write", Some(&policy)).as_deref(),
            Some("read")
        );
        assert_eq!(narrowed_scope("read", Some(&policy)), None);
        assert_eq!(narrowed_scope("write", Some(&policy)).as_deref(), Some(""));
        let unrestricted = Policy {
            scopes: None,
            ..gold(5)
        };
        assert_eq!(narrowed_scope("read write", Some(&unrestricted)), None);
        assert_eq!(narrowed_scope("read write", None), None);
    }

    /// A file policy wins over a stored one with the same id; a missing one resolves to nothing.
    #[tokio::test]
    async fn file_policies_first_then_the_store_then_nothing() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let stored = StoredPolicies::new(store.clone());
        let mut silver = gold(3);
        silver.id = "silver".into();
        store
            .put_policy(&to_stored(&silver, 0, 0), PolicyWrite::Create)
            .await
            .unwrap();
        store
            .put_policy(&to_stored(&gold(99), 0, 0), PolicyWrite::Create)
            .await
            .unwrap();
        let file = [gold(5)];

        let found = resolve(&file, &stored, Some("gold"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.source(), found.rate_limit.unwrap().rate),
            ("file", 5)
        );
        let found = resolve(&file, &stored, Some("silver"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.source(), found.rate_limit.unwrap().rate),
            ("store", 3)
        );
        assert!(
            resolve(&file, &stored, Some("bronze"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(resolve(&file, &stored, Some("")).await.unwrap().is_none());
        assert!(resolve(&file, &stored, None).await.unwrap().is_none());
    }

    /// Every change made through the store is seen on the next lookup, although lookups are cached:
    /// a replaced, deleted and re-created policy, and a policy created after a miss was cached.
    #[tokio::test]
    async fn the_cache_never_outlives_a_change() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let stored = StoredPolicies::new(store.clone());
        let rate = |p: Option<Arc<Policy>>| p.map(|p| p.rate_limit.unwrap().rate);

        assert_eq!(rate(stored.get("gold").await.unwrap()), None);
        store
            .put_policy(&to_stored(&gold(1), 0, 0), PolicyWrite::Create)
            .await
            .unwrap();
        assert_eq!(rate(stored.get("gold").await.unwrap()), Some(1));
        assert_eq!(rate(stored.get("gold").await.unwrap()), Some(1));
        store
            .put_policy(&to_stored(&gold(2), 0, 0), PolicyWrite::Replace)
            .await
            .unwrap();
        assert_eq!(rate(stored.get("gold").await.unwrap()), Some(2));
        store.delete_policy("gold").await.unwrap();
        assert_eq!(rate(stored.get("gold").await.unwrap()), None);
    }

    /// A cached policy is served without asking the store while the epoch stands still.
    #[tokio::test]
    async fn cached_policies_cost_no_store_call() {
        let store = Arc::new(MemoryStore::new());
        let stored = StoredPolicies::new(store.clone());
        store
            .put_policy(&to_stored(&gold(1), 0, 0), PolicyWrite::Create)
            .await
            .unwrap();
        assert!(stored.get("gold").await.unwrap().is_some());
        // Changed behind the epoch's back (as if an invalidation had been lost): the cache answers.
        store.remove_policy_without_epoch("gold");
        assert!(stored.get("gold").await.unwrap().is_some());
    }
}
