//! What each node keeps locally so that `is_revoked` never waits for Redis: revoked sessions and
//! tokens, per-client cutoffs and the dynamic-client cache, fed by the subscription to
//! `<prefix>revocations` and reloaded whenever the subscription is (re)established.

use super::*;

#[derive(Default)]
pub(super) struct Revoked {
    pub(super) sids: HashMap<String, u64>,
    pub(super) jtis: HashMap<String, u64>,
    /// api_id → client_id → per-client cutoff (see `Store::revoke_client_tokens`).
    pub(super) clients: HashMap<String, HashMap<String, Cutoff>>,
    pub(super) inserts_since_prune: usize,
}

impl Revoked {
    pub(super) fn insert(&mut self, kind: RevocationKind, id: &str, until: u64, now: u64) {
        if id.is_empty() {
            return;
        }
        let map = match kind {
            RevocationKind::Sid => &mut self.sids,
            RevocationKind::Jti => &mut self.jtis,
        };
        let entry = map.entry(id.to_string()).or_insert(0);
        *entry = (*entry).max(until);
        self.inserts_since_prune += 1;
        if self.inserts_since_prune >= (self.sids.len() + self.jtis.len()).max(1024) {
            self.prune(now);
        }
    }

    pub(super) fn prune(&mut self, now: u64) {
        self.inserts_since_prune = 0;
        self.sids.retain(|_, until| now < *until);
        self.jtis.retain(|_, until| now < *until);
        prune_cutoffs(&mut self.clients, now);
    }

    /// A cutoff from this node, a message or a reload. Their number is bounded by the number of
    /// clients, so they are only pruned with the rest.
    pub(super) fn insert_cutoff(&mut self, api_id: &str, client_id: &str, cutoff: Cutoff) {
        if api_id.is_empty() || client_id.is_empty() {
            return;
        }
        insert_cutoff(&mut self.clients, api_id, client_id, cutoff);
    }
}

/// What the store and its subscriber task share.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) revoked: RwLock<Revoked>,
    /// Whether the subscription is up (the client cache is only used while it is).
    pub(super) subscribed: AtomicBool,
    /// Bumped by every client invalidation: a read that began before one must not fill the cache.
    pub(super) client_generation: AtomicU64,
    pub(super) clients: RwLock<HashMap<(String, String), (StoredClient, Instant)>>,
    /// Bumped whenever this node learns that a stored policy changed (see the module documentation).
    pub(super) policy_epoch: AtomicU64,
}

impl Shared {
    pub(super) fn revoked_read(&self) -> RwLockReadGuard<'_, Revoked> {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn revoked_write(&self) -> RwLockWriteGuard<'_, Revoked> {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn revoke_locally(&self, kind: RevocationKind, id: &str, until: u64) {
        self.revoked_write().insert(kind, id, until, now_secs());
    }

    pub(super) fn sid_revoked(&self, sid: &str, now: u64) -> bool {
        !sid.is_empty()
            && self
                .revoked_read()
                .sids
                .get(sid)
                .is_some_and(|&until| now < until)
    }

    pub(super) fn cached_client(&self, api_id: &str, client_id: &str) -> Option<StoredClient> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients
            .get(&(api_id.to_string(), client_id.to_string()))
            .filter(|(_, at)| at.elapsed() < CLIENT_CACHE_TTL)
            .map(|(client, _)| client.clone())
    }

    pub(super) fn cache_client(&self, generation_before: u64, client: &StoredClient) {
        if !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        // Checked under the write lock, which every invalidation also takes after bumping.
        if self.client_generation.load(Ordering::Acquire) != generation_before {
            return;
        }
        if clients.len() >= CLIENT_CACHE_MAX {
            clients.clear();
        }
        clients.insert(
            (client.api_id.clone(), client.client_id.clone()),
            (client.clone(), Instant::now()),
        );
    }

    pub(super) fn invalidate_client(&self, api_id: &str, client_id: &str) {
        self.client_generation.fetch_add(1, Ordering::AcqRel);
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(api_id.to_string(), client_id.to_string()));
    }

    pub(super) fn invalidate_all_clients(&self) {
        self.client_generation.fetch_add(1, Ordering::AcqRel);
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(super) fn policies_changed(&self) {
        self.policy_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// `None` while the subscription is down: changes made meanwhile would not be heard.
    pub(super) fn policy_epoch(&self) -> Option<u64> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        Some(self.policy_epoch.load(Ordering::Acquire))
    }

    pub(super) fn set_subscribed(&self, up: bool) {
        if !up {
            self.subscribed.store(false, Ordering::Release);
        }
        // Whatever happened while the subscription was down was not heard: start the caches afresh.
        self.invalidate_all_clients();
        self.policies_changed();
        if up {
            self.subscribed.store(true, Ordering::Release);
        }
    }

    /// Applies one message of the revocation channel.
    pub(super) fn apply(&self, payload: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Event>(payload) else {
            tracing::warn!("redis: ignored a malformed message on the revocation channel");
            return;
        };
        match event.kind.as_str() {
            "sid" => self.revoke_locally(RevocationKind::Sid, &event.id, event.until_secs()),
            "jti" => self.revoke_locally(RevocationKind::Jti, &event.id, event.until_secs()),
            "client" => self.invalidate_client(&event.api, &event.id),
            "client_cutoff" => self.revoked_write().insert_cutoff(
                &event.api,
                &event.id,
                Cutoff {
                    at: secs(event.at),
                    until: event.until_secs(),
                },
            ),
            "policy" => self.policies_changed(),
            _ => {}
        }
    }
}

/// A message on `<prefix>revocations`.
#[derive(Debug, Deserialize)]
pub(super) struct Event {
    pub(super) kind: String,
    pub(super) id: String,
    /// Revocations: revoked while `now < until` (a JSON number; Lua may write it as a float).
    #[serde(default, rename = "until")]
    pub(super) until: f64,
    /// Client invalidations and cutoffs: the client's API.
    #[serde(default)]
    pub(super) api: String,
    /// Client cutoffs: tokens issued at or before this time are revoked.
    #[serde(default)]
    pub(super) at: f64,
}

impl Event {
    pub(super) fn until_secs(&self) -> u64 {
        secs(self.until)
    }
}

/// A time from a JSON number (Lua may write an integer as a float); anything unusable is 0.
pub(super) fn secs(t: f64) -> u64 {
    if t.is_finite() && t > 0.0 {
        (t as u64).min(MAX_TIME)
    } else {
        0
    }
}

pub(super) fn client_event(api_id: &str, client_id: &str) -> String {
    serde_json::json!({ "kind": "client", "api": api_id, "id": client_id }).to_string()
}

pub(super) fn policy_event(id: &str) -> String {
    serde_json::json!({ "kind": "policy", "id": id }).to_string()
}

// ------------------------------------------------------------------------------------------------
// The subscriber task

/// Loads every unexpired revocation of one kind from Redis into the local map.
pub(super) async fn load_revocations(
    shared: &Shared,
    backend: &Backend,
    keys: &Keys,
    kind: RevocationKind,
) -> StoreResult<usize> {
    let key = keys.revoked(kind);
    let now = now_secs();
    let mut offset = 0usize;
    loop {
        let mut conn = backend.conn();
        let page: Vec<(String, f64)> = backend
            .bounded(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(RELOAD_PAGE)
                    .query_async(&mut conn),
            )
            .await?;
        {
            let mut revoked = shared.revoked_write();
            for (id, until) in &page {
                if until.is_finite() && *until > 0.0 {
                    revoked.insert(kind, id, (*until as u64).min(MAX_TIME), now);
                }
            }
        }
        offset += page.len();
        if page.len() < RELOAD_PAGE {
            return Ok(offset);
        }
    }
}

/// Subscribes on `client`, then (re)loads the revocation set; messages that arrive meanwhile wait in
/// the channel and are applied after (revocations only ever grow, so the order does not matter).
pub(super) async fn subscribe_and_load(
    shared: &Shared,
    backend: &Backend,
    client: &Client,
    keys: &Keys,
) -> Result<Subscription, String> {
    let timeout = backend.timeout().max(Duration::from_secs(1));
    let subscription = pubsub::subscribe(client, &keys.channel, timeout).await?;
    for kind in [RevocationKind::Sid, RevocationKind::Jti] {
        load_revocations(shared, backend, keys, kind)
            .await
            .map_err(|e| format!("loading revocations: {e}"))?;
    }
    load_cutoffs(shared, backend, keys)
        .await
        .map_err(|e| format!("loading client cutoffs: {e}"))?;
    shared.revoked_write().prune(now_secs());
    Ok(subscription)
}

/// Loads every per-client cutoff (a hash bounded by the number of clients) into the local map.
pub(super) async fn load_cutoffs(
    shared: &Shared,
    backend: &Backend,
    keys: &Keys,
) -> StoreResult<()> {
    let mut conn = backend.conn();
    let records: Vec<String> = backend
        .bounded(
            redis::cmd("HVALS")
                .arg(keys.client_cutoffs())
                .query_async(&mut conn),
        )
        .await?;
    let mut revoked = shared.revoked_write();
    for raw in records {
        match serde_json::from_str::<Event>(&raw) {
            Ok(event) => revoked.insert_cutoff(
                &event.api,
                &event.id,
                Cutoff {
                    at: secs(event.at),
                    until: event.until_secs(),
                },
            ),
            Err(_) => tracing::warn!("redis: ignored a malformed client cutoff record"),
        }
    }
    Ok(())
}

/// Owns the subscription for the store's lifetime (aborted when the store is dropped). Reports the
/// outcome of the first subscription on `ready`: at start, every node is tried once and the task ends
/// if none works.
pub(super) async fn subscriber(
    shared: Arc<Shared>,
    backend: Arc<Backend>,
    clients: Vec<Client>,
    keys: Keys,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = SUBSCRIBER_MIN_BACKOFF;
    let mut next = 0usize;
    let mut failures_at_start = 0usize;
    loop {
        let client = &clients[next % clients.len()];
        next = next.wrapping_add(1);
        match subscribe_and_load(&shared, &backend, client, &keys).await {
            Ok(subscription) => {
                shared.set_subscribed(true);
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Ok(()));
                    }
                    None => tracing::info!(
                        "redis: revocation subscription restored and revocations reloaded"
                    ),
                }
                backoff = SUBSCRIBER_MIN_BACKOFF;
                subscription
                    .listen(SUBSCRIBER_PING_EVERY, |payload| shared.apply(payload))
                    .await;
                shared.set_subscribed(false);
                tracing::warn!("redis: revocation subscription lost; reconnecting");
            }
            Err(err) => {
                if ready.is_some() {
                    failures_at_start += 1;
                    if failures_at_start >= clients.len() {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(err));
                        }
                        return;
                    }
                    continue;
                }
                tracing::debug!(error = %err, "redis: revocation subscription not restored yet");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(SUBSCRIBER_MAX_BACKOFF);
    }
}

pub(super) async fn revoke_client_tokens(
    store: &RedisStore,
    api_id: &str,
    client_id: &str,
    issued_up_to: u64,
    until: u64,
) -> StoreResult<()> {
    let mut conn = store.backend.conn();
    let (at, kept_until): (u64, u64) = store
        .backend
        .bounded(
            store
                .scripts
                .revoke_client
                .key(store.keys.client_cutoffs())
                .arg(&store.keys.channel)
                .arg(api_id)
                .arg(client_id)
                .arg(clamp_time(issued_up_to))
                .arg(clamp_time(until))
                .invoke_async(&mut conn),
        )
        .await?;
    store.shared.revoked_write().insert_cutoff(
        api_id,
        client_id,
        Cutoff {
            at,
            until: kept_until,
        },
    );
    Ok(())
}
