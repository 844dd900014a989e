//! The Redis store: several gateway nodes share codes, sessions, refresh tokens, revocations, dynamic
//! clients, stored policies and login failures through one Redis (or Redis Cluster). The key layout, every key's TTL and
//! the script that writes it are documented in `docs/redis.md`; keep the two in step.
//!
//! # Connections
//!
//! One [`ConnectionManager`] (a multiplexed connection that reconnects by itself) for a single Redis,
//! or the crate's async cluster client when `storage.redis.cluster` is set, behind [`Conn`]. Every call
//! is bounded by `storage.redis.timeout` and answers [`StoreError::Unavailable`] on timeout or on any
//! connection error, so callers answer 503 instead of hanging. If calls keep timing out without any
//! error (a half-open TCP connection: the peer vanished without a reset), the single-node connection
//! is replaced by a fresh one.
//!
//! # Atomicity
//!
//! Every operation that must be atomic is one Lua script (`EVALSHA` through [`redis::Script`]) or one
//! command: taking a code, rotating a refresh token with reuse detection, revoking a session, storing
//! a session or refresh token unless its session was revoked, reserving a guess at a secret. The scripts
//! compare expiries with the caller's `now` (the contract's clock) and use TTLs only to let Redis
//! forget what has expired anyway.
//!
//! Refresh tokens, sessions and revocations are read and written together by the scripts, so in a
//! cluster they must live in one hash slot: their keys share the hash tag `{tokens}`. The two counters
//! of a guess share a hash tag of their own (scope and address). Codes, failure counters of different
//! addresses, clients and rate-limit counters are independent keys and spread over the cluster.
//!
//! # Revocations without I/O
//!
//! `is_revoked` runs on every proxied request and must not wait for Redis. Each node keeps a local map
//! (session id / jti → revoked until), fed by a subscription to `<prefix>revocations` (every revoking
//! script publishes there), and reloaded from Redis when the subscription is established and on every
//! reconnect, so a message missed while disconnected is recovered. Local revocations update the map at
//! once. The subscription is owned by a background task that reconnects with backoff and pings the
//! connection regularly to notice a dead one.
//!
//! The same channel carries invalidations of dynamic clients and of stored policies (every write
//! publishes one in the same script). Policies are not cached here: the store keeps a *policy epoch*
//! that every policy message, every own write and every loss or return of the subscription bumps, and
//! the proxy's cache (`policy::StoredPolicies`) is valid only while the epoch is unchanged. While
//! the subscription is down the epoch is `None`, so nothing cached is trusted and policies are read from
//! Redis; when it returns, the bump makes every node reload what it reads next.
//!
//! # Start
//!
//! [`RedisStore::connect`] fails fast: if Redis cannot be reached, or the revocation set cannot be
//! loaded, at start, it returns an error (the gateway refuses to start) rather than serving with an
//! unknown revocation state. Once running, the node rides out Redis outages by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Client, Value};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::memory::{
    Cutoff, ROTATED_NEVER_EXPIRING_KEEP_SECS, insert_cutoff, live_cutoff, prune_cutoffs,
};
use super::{
    Admission, Attempt, AuthCode, CodeTake, Guess, LoginSession, PolicyWrite, RefreshToken,
    Release, Rotation, Session, StatelessCount, StatelessIssue, Store, StoreError, StoreResult,
    StoredClient, StoredPolicy,
};
use crate::config::RedisConfig;
use crate::redis::Backend;
use crate::token::AccessClaims;

mod clients;
mod failures;
mod keys;
/// Login sessions of the builtin login page (OpenID Connect).
mod login_sessions;
mod policies;
mod revocation;
mod scripts;
mod sessions;

use crate::redis::pubsub::{self, Subscription};
use keys::{Keys, RevocationKind};
use revocation::*;
use scripts::Scripts;

/// How long a live refresh token that never expires (`refresh_token.ttl: never`) is kept: ten years,
/// the same bound the token endpoint gives such a session.
pub const NEVER_EXPIRING_REFRESH_KEEP_SECS: u64 = 10 * 365 * 24 * 3600;

/// Latest absolute time written to Redis (year 2286): keeps every number a Lua script handles exact.
const MAX_TIME: u64 = 9_999_999_999;
/// How long an API's stateless-token counts are kept after its latest token (every key has a TTL).
const STATELESS_COUNT_KEEP_SECS: i64 = 30 * 24 * 3600;

/// The subscriber pings its connection this often to notice a dead one.
const SUBSCRIBER_PING_EVERY: Duration = Duration::from_secs(5);
const SUBSCRIBER_MIN_BACKOFF: Duration = Duration::from_millis(50);
const SUBSCRIBER_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Revocations loaded per round trip when (re)loading the set.
const RELOAD_PAGE: usize = 1000;

/// Dynamic clients are cached this long at most (invalidation by pub/sub makes it exact while the
/// subscription is up; the cache is bypassed while it is down).
const CLIENT_CACHE_TTL: Duration = Duration::from_secs(60);
const CLIENT_CACHE_MAX: usize = 10_000;

fn now_secs() -> u64 {
    crate::clock::now()
}

fn clamp_time(t: u64) -> u64 {
    t.clamp(1, MAX_TIME)
}

// ------------------------------------------------------------------------------------------------

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

// ------------------------------------------------------------------------------------------------
// The store

/// The Redis [`Store`]; see the module documentation. Create it with [`RedisStore::connect`].
pub struct RedisStore {
    backend: Arc<Backend>,
    keys: Keys,
    scripts: Scripts,
    shared: Arc<Shared>,
    subscriber: JoinHandle<()>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let revoked = self.shared.revoked_read();
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.keys.prefix)
            .field("timeout", &self.backend.timeout())
            .field(
                "subscribed",
                &self.shared.subscribed.load(Ordering::Relaxed),
            )
            .field("revoked_sessions", &revoked.sids.len())
            .field("revoked_tokens", &revoked.jtis.len())
            .finish()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisStore {
    /// Revokes a session id or a token id until `until`: written to Redis and published, then applied
    /// to this node's own set at once (with the later expiry if it was revoked before).
    async fn revoke(&self, kind: RevocationKind, id: &str, until: u64) -> StoreResult<()> {
        if id.is_empty() {
            return Ok(());
        }
        let script = match kind {
            RevocationKind::Sid => &self.scripts.revoke_session,
            RevocationKind::Jti => &self.scripts.revoke_jti,
        };
        let mut conn = self.backend.conn();
        let kept: String = self
            .backend
            .bounded(
                script
                    .key(self.keys.revoked(kind))
                    .arg(&self.keys.tokens)
                    .arg(&self.keys.channel)
                    .arg(id)
                    .arg(clamp_time(until))
                    .invoke_async(&mut conn),
            )
            .await?;
        let kept = kept.parse::<u64>().unwrap_or(until);
        self.shared.revoke_locally(kind, id, kept);
        Ok(())
    }

    /// Connects to Redis (or the cluster), subscribes to the revocation channel and loads the
    /// revocation set. Fails (with the reason) if any of that does not succeed within a few times
    /// `storage.redis.timeout` (at least 3 s): a node does not start with an unknown revocation state.
    pub async fn connect(cfg: &RedisConfig) -> Result<Arc<RedisStore>, StoreError> {
        let startup = (cfg.timeout * 4).max(Duration::from_secs(3));
        let (backend, subscriber_clients) = Backend::connect(cfg, startup).await?;
        let keys = Keys::new(&cfg.key_prefix);
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = tokio::spawn(subscriber(
            shared.clone(),
            backend.clone(),
            subscriber_clients,
            keys.clone(),
            ready_tx,
        ));
        let store = RedisStore {
            backend,
            keys,
            scripts: Scripts::new(),
            shared,
            subscriber,
        };
        match tokio::time::timeout(startup, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Arc::new(store)),
            Ok(Ok(Err(err))) => Err(StoreError::Unavailable(format!("redis: {err}"))),
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "redis: the subscriber task ended".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: revocation subscription not established within {startup:?}"
            ))),
        }
    }

    /// The connection, for the rate limiter that counts in the same Redis (`limits::redis`, built
    /// where the gateway is wired).
    pub fn backend(&self) -> Arc<Backend> {
        self.backend.clone()
    }

    /// `storage.redis.key_prefix`: the limiter's keys start with it too.
    pub fn key_prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Whether the revocation subscription is currently up.
    pub fn subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    fn parse_session(raw: &str) -> StoreResult<Session> {
        serde_json::from_str(raw).map_err(|e| corrupt("session", e))
    }

    fn parse_client(raw: &str) -> StoreResult<StoredClient> {
        serde_json::from_str(raw).map_err(|e| corrupt("client", e))
    }

    fn parse_policy(raw: &str) -> StoreResult<StoredPolicy> {
        serde_json::from_str(raw).map_err(|e| corrupt("policy", e))
    }

    /// Runs the policy script; the node's epoch is bumped whatever the outcome (a timed-out call may
    /// still have written), so this node never keeps serving what it replaced.
    async fn write_policy(&self, mode: &str, id: &str, json: &str) -> StoreResult<bool> {
        let mut conn = self.backend.conn();
        let written: StoreResult<i64> = self
            .backend
            .bounded(
                self.scripts
                    .policy
                    .key(self.keys.policies())
                    .arg(mode)
                    .arg(id)
                    .arg(json)
                    .arg(&self.keys.channel)
                    .arg(policy_event(id))
                    .invoke_async(&mut conn),
            )
            .await;
        self.shared.policies_changed();
        Ok(written? == 1)
    }

    fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
        serde_json::to_string(value).map_err(|e| corrupt("encoding a record", e))
    }
}

/// A stored refresh-token record: the token, or `None` for a rotation tombstone.
fn parse_refresh(raw: &str) -> StoreResult<Option<RefreshToken>> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| corrupt("refresh token", e))?;
    if value.get("rotated").is_some() {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| corrupt("refresh token", e))
}

fn optional_time(t: Option<u64>) -> String {
    t.map(|t| clamp_time(t).to_string()).unwrap_or_default()
}

#[async_trait]
impl Store for RedisStore {
    async fn put_code(&self, code_hash: &str, code: &AuthCode) -> StoreResult<()> {
        sessions::put_code(self, code_hash, code).await
    }

    async fn take_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeTake> {
        sessions::take_code(self, code_hash, now).await
    }

    async fn put_session(&self, session: &Session, max_per_user: u32) -> StoreResult<Vec<String>> {
        sessions::put_session(self, session, max_per_user).await
    }

    async fn get_session(&self, sid: &str) -> StoreResult<Option<Session>> {
        sessions::get_session(self, sid).await
    }

    async fn client_sessions(
        &self,
        api_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<Vec<Session>> {
        sessions::client_sessions(self, api_id, client_id, now).await
    }

    async fn put_refresh(&self, token_hash: &str, token: &RefreshToken) -> StoreResult<()> {
        sessions::put_refresh(self, token_hash, token).await
    }

    async fn get_refresh(&self, token_hash: &str, now: u64) -> StoreResult<Option<RefreshToken>> {
        sessions::get_refresh(self, token_hash, now).await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        now: u64,
    ) -> StoreResult<Rotation> {
        sessions::rotate_refresh(self, old_hash, new_hash, new, now).await
    }

    async fn revoke_session(&self, sid: &str, until: u64) -> StoreResult<()> {
        self.revoke(RevocationKind::Sid, sid, until).await
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> StoreResult<()> {
        self.revoke(RevocationKind::Jti, jti, until).await
    }

    fn is_revoked(&self, sid: &str, jti: &str, now: u64) -> bool {
        let revoked = self.shared.revoked_read();
        (!sid.is_empty() && revoked.sids.get(sid).is_some_and(|&until| now < until))
            || (!jti.is_empty() && revoked.jtis.get(jti).is_some_and(|&until| now < until))
    }

    async fn revoke_client_tokens(
        &self,
        api_id: &str,
        client_id: &str,
        issued_up_to: u64,
        until: u64,
    ) -> StoreResult<()> {
        revocation::revoke_client_tokens(self, api_id, client_id, issued_up_to, until).await
    }

    fn client_cutoff(&self, api_id: &str, client_id: &str, now: u64) -> Option<u64> {
        live_cutoff(&self.shared.revoked_read().clients, api_id, client_id, now)
    }

    fn access_revoked(&self, claims: &AccessClaims, now: u64) -> bool {
        let revoked = self.shared.revoked_read();
        let live = |until: &u64| now < *until;
        (!claims.sid.is_empty() && revoked.sids.get(&claims.sid).is_some_and(live))
            || (!claims.jti.is_empty() && revoked.jtis.get(&claims.jti).is_some_and(live))
            || live_cutoff(&revoked.clients, &claims.aud, &claims.client_id, now)
                .is_some_and(|cutoff| claims.iat <= cutoff)
    }

    async fn count_stateless(&self, api_id: &str, client_id: &str, now: u64) -> StoreResult<()> {
        sessions::count_stateless(self, api_id, client_id, now).await
    }

    async fn stateless_count(&self, api_id: &str, client_id: &str) -> StoreResult<StatelessCount> {
        sessions::stateless_count(self, api_id, client_id).await
    }

    async fn put_client(&self, client: &StoredClient) -> StoreResult<()> {
        clients::put_client(self, client).await
    }

    async fn get_client(&self, api_id: &str, client_id: &str) -> StoreResult<Option<StoredClient>> {
        clients::get_client(self, api_id, client_id).await
    }

    async fn list_clients(&self, api_id: &str) -> StoreResult<Vec<StoredClient>> {
        clients::list_clients(self, api_id).await
    }

    async fn delete_client(&self, api_id: &str, client_id: &str) -> StoreResult<bool> {
        clients::delete_client(self, api_id, client_id).await
    }

    async fn put_policy(&self, policy: &StoredPolicy, mode: PolicyWrite) -> StoreResult<bool> {
        policies::put_policy(self, policy, mode).await
    }

    async fn get_policy(&self, id: &str) -> StoreResult<Option<StoredPolicy>> {
        policies::get_policy(self, id).await
    }

    async fn list_policies(&self) -> StoreResult<Vec<StoredPolicy>> {
        policies::list_policies(self).await
    }

    async fn delete_policy(&self, id: &str) -> StoreResult<bool> {
        self.write_policy("delete", id, "").await
    }

    fn policy_epoch(&self) -> Option<u64> {
        self.shared.policy_epoch()
    }

    async fn reserve_attempt(
        &self,
        guess: &Guess<'_>,
        limit: u32,
        window_secs: u64,
        now: u64,
    ) -> StoreResult<Attempt> {
        failures::reserve_attempt(self, guess, limit, window_secs, now).await
    }

    async fn release_attempt(&self, guess: &Guess<'_>, how: Release, now: u64) -> StoreResult<()> {
        failures::release_attempt(self, guess, how, now).await
    }

    async fn admit_attempt(
        &self,
        guess: &Guess<'_>,
        limit: u32,
        window_secs: u64,
        now: u64,
        issued: Option<StatelessIssue<'_>>,
    ) -> StoreResult<Admission> {
        failures::admit_attempt(self, guess, limit, window_secs, now, issued).await
    }

    async fn put_login_session(
        &self,
        id_hash: &str,
        session: &LoginSession,
        max_per_user: u32,
    ) -> StoreResult<()> {
        self.login_put(id_hash, session, max_per_user).await
    }

    async fn get_login_session(
        &self,
        id_hash: &str,
        now: u64,
    ) -> StoreResult<Option<LoginSession>> {
        self.login_get(id_hash, now).await
    }

    async fn end_login_session(&self, id_hash: &str, now: u64) -> StoreResult<bool> {
        self.login_end(id_hash, now).await
    }

    async fn user_login_sessions(
        &self,
        username: &str,
        now: u64,
    ) -> StoreResult<Vec<(String, LoginSession)>> {
        self.login_of_user(username, now).await
    }

    async fn end_user_login_sessions(&self, username: &str, now: u64) -> StoreResult<u64> {
        self.login_end_user(username, now).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.backend.conn();
        let _pong: Value = self
            .backend
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
