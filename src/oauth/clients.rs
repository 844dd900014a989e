//! Clients as the flows see them (static from YAML or dynamic from the store), and client authentication.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::config::{ApiDef, ClientDef, GrantType};
use crate::store::StoredClient;

use crate::secrets;

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    pub policy: Option<String>,
    pub claims: BTreeMap<String, serde_json::Value>,
    /// RP-initiated logout may redirect only to these (OIDC RP-Initiated Logout §3, exact match).
    pub post_logout_redirect_uris: Vec<String>,
    /// A browser with a login session gets a code without the consent page.
    pub skip_consent: bool,
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
            post_logout_redirect_uris: def.post_logout_redirect_uris.clone(),
            skip_consent: def.skip_consent,
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
            post_logout_redirect_uris: Vec::new(),
            skip_consent: false,
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
    /// A random per-process HMAC key, made once: `hmac::Key::new` hashes the key's inner and outer
    /// pads, which cost as much as the tag itself when it was made for every token request.
    key: aws_lc_rs::hmac::Key,
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl SecretCache {
    pub fn new(ttl: Duration, max_entries: usize) -> SecretCache {
        let key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secrets::random_bytes(32));
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
        let tag = aws_lc_rs::hmac::sign(&self.key, &message);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `secret` verified against the client's argon2id hash recently. A hit answers "right
    /// secret", so it is as much a verification as argon2: the caller answers nothing before the
    /// guessing throttle has admitted the attempt (`Store::admit_attempt`).
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

/// Authentications in flight, by credential: identical concurrent ones (the same API, client,
/// presented secret and caller address) wait for the first and share its answer. A service that sends
/// ten token requests at once then spends one guessing attempt and at most one argon2 verification,
/// and its own burst never trips the guessing throttle (which counts attempts in progress). Distinct
/// secrets share nothing: each guess still reserves its own attempt, and repeating one guess in
/// parallel learns nothing that sending it once would not.
///
/// An entry lives while someone waits on it: the map holds at most one entry per credential in flight,
/// so it is bounded by the requests in flight. Keys are HMACs under a per-process random key, like the
/// secret cache's.
pub struct SharedFlights<T> {
    /// Made once (see `SecretCache::key`).
    key: aws_lc_rs::hmac::Key,
    flights: Mutex<HashMap<[u8; 32], Arc<OnceCell<T>>>>,
}

impl<T: Clone> SharedFlights<T> {
    pub fn new() -> SharedFlights<T> {
        SharedFlights {
            key: aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                &secrets::random_bytes(32),
            ),
            flights: Mutex::new(HashMap::new()),
        }
    }

    fn flight_key(&self, parts: &[&str]) -> [u8; 32] {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.key);
        for part in parts {
            // Length-prefixed, so that no two different lists of parts give the same message.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// Runs `work` unless an identical flight (same `parts`) is under way, in which case its answer is
    /// shared. If the caller running `work` goes away (its client disconnected), a waiting caller
    /// runs `work` itself.
    pub async fn run<F, Fut>(&self, parts: &[&str], work: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let key = self.flight_key(parts);
        let cell = match self.flights.lock() {
            Ok(mut flights) => flights.entry(key).or_default().clone(),
            // A poisoned map only costs the sharing: run alone.
            Err(_) => Arc::new(OnceCell::new()),
        };
        let _leave = Leave {
            flights: self,
            key,
            cell: cell.clone(),
        };
        cell.get_or_init(work).await.clone()
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Callers inside `run`, over every flight (each holds one reference besides the map's).
    #[cfg(test)]
    fn callers(&self) -> usize {
        self.flights
            .lock()
            .map(|f| f.values().map(|cell| Arc::strong_count(cell) - 1).sum())
            .unwrap_or(0)
    }
}

impl<T: Clone> Default for SharedFlights<T> {
    fn default() -> Self {
        SharedFlights::new()
    }
}

/// Takes a flight's entry out of the map once it has an answer (later callers start a new flight) or
/// once its last caller is gone, answered or not.
struct Leave<'a, T> {
    flights: &'a SharedFlights<T>,
    key: [u8; 32],
    cell: Arc<OnceCell<T>>,
}

impl<T> Drop for Leave<'_, T> {
    fn drop(&mut self) {
        let Ok(mut flights) = self.flights.flights.lock() else {
            return;
        };
        // Under the lock no one can take a new reference, so the count is exact: the map's and ours.
        let ours = flights
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.cell));
        if ours && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2) {
            flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn identical_flights_share_one_run_and_leave_nothing_behind() {
        let flights = Arc::new(SharedFlights::<u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (flights, runs, mut gate) = (flights.clone(), runs.clone(), gate.clone());
            callers.spawn(async move {
                flights
                    .run(&["api", "client", "secret", "10.0.0.1"], || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        7
                    })
                    .await
            });
        }
        // Every caller is waiting on the one flight before it is let go.
        while flights.callers() < 10 {
            tokio::task::yield_now().await;
        }
        let _ = release.send(true);
        while let Some(answer) = callers.join_next().await {
            assert_eq!(answer.expect("caller"), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn different_credentials_never_share() {
        let flights = SharedFlights::<String>::new();
        let a = flights.run(&["api", "client", "secret-a"], || async { "a".to_owned() });
        let b = flights.run(&["api", "client", "secret-b"], || async { "b".to_owned() });
        // Parts are length-prefixed: these two lists differ although their concatenations are equal.
        let c = flights.run(&["api", "clients", "ecret-a"], || async { "c".to_owned() });
        assert_eq!(tokio::join!(a, b, c), ("a".into(), "b".into(), "c".into()));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_first_caller_goes_away() {
        let flights = Arc::new(SharedFlights::<u32>::new());
        let first = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(&["k"], std::future::pending::<u32>).await })
        };
        while flights.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(&["k"], || async { 2 }).await })
        };
        tokio::task::yield_now().await;
        first.abort();
        assert_eq!(second.await.expect("second caller"), 2);
        assert_eq!(flights.in_flight(), 0);
    }
}
