//! Clients as the flows see them (static from YAML or dynamic from the store), and client authentication.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{ApiDef, ClientDef, GrantType};
use crate::store::StoredClient;

use super::secrets;

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    pub policy: Option<String>,
    pub claims: BTreeMap<String, serde_json::Value>,
    /// Created through the admin API (lives in the store) rather than in the API definition.
    pub dynamic: bool,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

impl From<&ClientDef> for Client {
    fn from(def: &ClientDef) -> Client {
        Client {
            client_id: def.client_id.clone(),
            secret_hash: def.secret_hash.clone(),
            redirect_uris: def.redirect_uris.clone(),
            grant_types: def.grant_types.clone(),
            scopes: def.scopes.clone(),
            policy: def.policy.clone(),
            claims: def.claims.clone(),
            dynamic: false,
        }
    }
}

impl From<StoredClient> for Client {
    fn from(stored: StoredClient) -> Client {
        Client {
            client_id: stored.client_id,
            secret_hash: stored.secret_hash,
            redirect_uris: stored.redirect_uris,
            grant_types: stored
                .grant_types
                .iter()
                .filter_map(|g| GrantType::parse(g))
                .collect(),
            scopes: stored.scopes,
            policy: stored.policy,
            claims: stored.claims,
            dynamic: true,
        }
    }
}

/// The static client of `api` named `client_id`, if any.
pub fn static_client(api: &ApiDef, client_id: &str) -> Option<Client> {
    api.oauth
        .as_ref()?
        .clients
        .iter()
        .find(|c| c.client_id == client_id)
        .map(Client::from)
}

/// Credentials as presented at the token, revoke or introspect endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuth {
    pub client_id: Option<String>,
    pub secret: Option<String>,
    /// Sent with HTTP Basic: a failure is answered with `WWW-Authenticate: Basic`.
    pub via_basic: bool,
}

/// Remembers secrets that verified recently, so a client_credentials client does not pay for argon2
/// on every token request.
///
/// Entries are keyed by an HMAC (with a per-process random key) over the API, the client, the stored
/// hash and the presented secret: the cache never holds a secret or anything that can be checked
/// offline against one, and rotating a secret changes the stored hash, so the old secret's entry can
/// never match again.
pub struct SecretCache {
    key: [u8; 32],
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl SecretCache {
    pub fn new(ttl: Duration, max_entries: usize) -> SecretCache {
        let mut key = [0u8; 32];
        key.copy_from_slice(&secrets::random_bytes(32));
        SecretCache {
            key,
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entry_key(&self, api_id: &str, client_id: &str, phc: &str, secret: &str) -> [u8; 32] {
        let mut message =
            Vec::with_capacity(api_id.len() + client_id.len() + phc.len() + secret.len() + 3);
        for part in [api_id, client_id, phc, secret] {
            message.extend_from_slice(part.as_bytes());
            message.push(0);
        }
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.key),
            &message,
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `secret` verified against the client's argon2id hash recently. The caller reserves a
    /// guessing attempt first: a hit answers "right secret", so it is as much a verification as argon2.
    pub fn verified_recently(
        &self,
        api_id: &str,
        client_id: &str,
        phc: &str,
        secret: &str,
    ) -> bool {
        let key = self.entry_key(api_id, client_id, phc, secret);
        let now = Instant::now();
        self.entries
            .lock()
            .is_ok_and(|entries| entries.get(&key).is_some_and(|until| *until > now))
    }

    /// Remembers that `secret` verified (argon2 ran elsewhere, under the verification pool).
    pub fn remember(&self, api_id: &str, client_id: &str, phc: &str, secret: &str) {
        let key = self.entry_key(api_id, client_id, phc, secret);
        let now = Instant::now();
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.max_entries {
                entries.retain(|_, until| *until > now);
                if entries.len() >= self.max_entries {
                    entries.clear();
                }
            }
            entries.insert(key, now + self.ttl);
        }
    }
}
