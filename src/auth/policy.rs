//! Which policy applies to a token: the policy of the client that the token was issued to.
//!
//! The policy is looked up on every request from the running configuration (so a policy changed by a
//! reload applies to existing tokens at once). Static clients come from the API definitions; dynamic
//! clients live in the store, so their policy id is cached here for a few seconds to keep the store off
//! the hot path.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::config::{Policy, RuntimeConfig};
use crate::oauth::tokens::AccessClaims;
use crate::store::{Store, StoreResult};

const DYNAMIC_TTL: Duration = Duration::from_secs(5);

/// (api id, client id) → (policy id, when it was read from the store).
type DynamicPolicies = HashMap<(String, String), (Option<String>, Instant)>;

#[derive(Default)]
pub struct ClientPolicies {
    dynamic: RwLock<DynamicPolicies>,
}

impl ClientPolicies {
    pub fn new() -> ClientPolicies {
        ClientPolicies::default()
    }

    /// The policy id of `(api_id, client_id)`, if the client has one.
    pub async fn policy_id(
        &self,
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
        let key = (api_id.to_string(), client_id.to_string());
        if let Ok(cache) = self.dynamic.read()
            && let Some((policy, at)) = cache.get(&key)
            && at.elapsed() < DYNAMIC_TTL
        {
            return Ok(policy.clone());
        }
        let policy = store
            .get_client(api_id, client_id)
            .await?
            .and_then(|c| c.policy);
        if let Ok(mut cache) = self.dynamic.write() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(key, (policy.clone(), Instant::now()));
        }
        Ok(policy)
    }

    /// Forgets a dynamic client's cached policy (after an admin change on this node).
    pub fn forget(&self, api_id: &str, client_id: &str) {
        if let Ok(mut cache) = self.dynamic.write() {
            cache.remove(&(api_id.to_string(), client_id.to_string()));
        }
    }
}

/// The policy object of a token, from the running configuration.
pub fn find<'a>(config: &'a RuntimeConfig, id: Option<&str>) -> Option<&'a Policy> {
    let id = id?;
    config.policies.iter().find(|p| p.id == id)
}

/// Whether the token's policy grants access to `api_id` (Tyk's multi-API access).
pub fn grants(policy: Option<&Policy>, api_id: &str, _claims: &AccessClaims) -> bool {
    policy.is_some_and(|p| p.access.iter().any(|a| a == api_id))
}
