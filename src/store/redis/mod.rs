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
    Attempt, AuthCode, CodeTake, Guess, PolicyWrite, RefreshToken, Release, Rotation, Session,
    StatelessCount, Store, StoreError, StoreResult, StoredClient, StoredPolicy,
};
use crate::config::RedisConfig;
use crate::redis::Backend;

mod keys;
mod revocation;
mod scripts;

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
        let json = Self::to_json(code)?;
        let mut conn = self.backend.conn();
        self.backend
            .bounded(
                redis::cmd("SET")
                    .arg(self.keys.code(code_hash))
                    .arg(json)
                    .arg("EXAT")
                    .arg(clamp_time(code.expires_at))
                    .exec_async(&mut conn),
            )
            .await
    }

    async fn take_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeTake> {
        let mut conn = self.backend.conn();
        let reply: Vec<String> = self
            .backend
            .bounded(
                self.scripts
                    .take_code
                    .key(self.keys.code(code_hash))
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        match reply.as_slice() {
            [status] if status == "unknown" => Ok(CodeTake::Unknown),
            [status, sid] if status == "used" => Ok(CodeTake::AlreadyUsed { sid: sid.clone() }),
            [status, json] if status == "fresh" => serde_json::from_str(json)
                .map(CodeTake::Fresh)
                .map_err(|e| corrupt("authorization code", e)),
            _ => Err(StoreError::Corrupt(
                "unexpected reply from the take_code script".into(),
            )),
        }
    }

    async fn put_session(&self, session: &Session, max_per_user: u32) -> StoreResult<Vec<String>> {
        let json = Self::to_json(session)?;
        let mut conn = self.backend.conn();
        let ended: Vec<String> = self
            .backend
            .bounded(
                self.scripts
                    .put_session
                    .key(self.keys.session(&session.sid))
                    .arg(&self.keys.tokens)
                    .arg(&session.sid)
                    .arg(json)
                    .arg(clamp_time(session.expires_at))
                    .arg(now_secs())
                    .arg(&session.api_id)
                    .arg(&session.client_id)
                    .arg(session.username.as_deref().unwrap_or(""))
                    .arg(max_per_user.max(1))
                    .arg(&self.keys.channel)
                    .invoke_async(&mut conn),
            )
            .await?;
        // The script published the revocations; this node applies its own at once, as `revoke` does.
        // Their `until` is at most the session lifetime, which a revocation set entry may outlive
        // harmlessly: the message from the script carries the exact one.
        for sid in &ended {
            self.shared
                .revoke_locally(RevocationKind::Sid, sid, clamp_time(session.expires_at));
        }
        Ok(ended)
    }

    async fn get_session(&self, sid: &str) -> StoreResult<Option<Session>> {
        let mut conn = self.backend.conn();
        let raw: Option<String> = self
            .backend
            .bounded(
                redis::cmd("GET")
                    .arg(self.keys.session(sid))
                    .query_async(&mut conn),
            )
            .await?;
        raw.as_deref().map(Self::parse_session).transpose()
    }

    async fn client_sessions(
        &self,
        api_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<Vec<Session>> {
        let index = self.keys.client_sessions(api_id, client_id);
        let mut conn = self.backend.conn();
        let raws: Vec<Option<String>> = self
            .backend
            .bounded(async {
                let sids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .query_async(&mut conn)
                    .await?;
                if sids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut mget = redis::cmd("MGET");
                for sid in &sids {
                    mget.arg(self.keys.session(sid));
                }
                mget.query_async(&mut conn).await
            })
            .await?;
        let mut live = Vec::new();
        for raw in raws.into_iter().flatten() {
            let session = Self::parse_session(&raw)?;
            if session.api_id == api_id
                && session.client_id == client_id
                && now < session.expires_at
                && !self.shared.sid_revoked(&session.sid, now)
            {
                live.push(session);
            }
        }
        live.sort_by(|a, b| (a.created_at, &a.sid).cmp(&(b.created_at, &b.sid)));
        Ok(live)
    }

    async fn put_refresh(&self, token_hash: &str, token: &RefreshToken) -> StoreResult<()> {
        let json = Self::to_json(token)?;
        let mut conn = self.backend.conn();
        let _stored: i64 = self
            .backend
            .bounded(
                self.scripts
                    .put_refresh
                    .key(self.keys.refresh(token_hash))
                    .arg(&self.keys.tokens)
                    .arg(token_hash)
                    .arg(json)
                    .arg(&token.sid)
                    .arg(optional_time(token.expires_at))
                    .arg(now_secs())
                    .arg(NEVER_EXPIRING_REFRESH_KEEP_SECS)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn get_refresh(&self, token_hash: &str, now: u64) -> StoreResult<Option<RefreshToken>> {
        let mut conn = self.backend.conn();
        let raw: Option<String> = self
            .backend
            .bounded(
                redis::cmd("GET")
                    .arg(self.keys.refresh(token_hash))
                    .query_async(&mut conn),
            )
            .await?;
        let Some(token) = raw.as_deref().map(parse_refresh).transpose()?.flatten() else {
            return Ok(None);
        };
        if token.expires_at.is_some_and(|exp| now >= exp)
            || self.shared.sid_revoked(&token.sid, now)
        {
            return Ok(None);
        }
        Ok(Some(token))
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        now: u64,
    ) -> StoreResult<Rotation> {
        let json = Self::to_json(new)?;
        let mut conn = self.backend.conn();
        let reply: Vec<String> = self
            .backend
            .bounded(
                self.scripts
                    .rotate_refresh
                    .key(self.keys.refresh(old_hash))
                    .key(self.keys.refresh(new_hash))
                    .arg(&self.keys.tokens)
                    .arg(&self.keys.channel)
                    .arg(now)
                    .arg(old_hash)
                    .arg(new_hash)
                    .arg(json)
                    .arg(&new.sid)
                    .arg(optional_time(new.expires_at))
                    .arg(ROTATED_NEVER_EXPIRING_KEEP_SECS)
                    .arg(NEVER_EXPIRING_REFRESH_KEEP_SECS)
                    .invoke_async(&mut conn),
            )
            .await?;
        match reply.as_slice() {
            [status] if status == "invalid" => Ok(Rotation::Invalid),
            [status, sid, until] if status == "reused" => {
                let until = until
                    .parse::<u64>()
                    .map_err(|e| corrupt("rotate_refresh reply", e))?;
                self.shared.revoke_locally(RevocationKind::Sid, sid, until);
                Ok(Rotation::Reused { sid: sid.clone() })
            }
            [status, json] if status == "rotated" => match parse_refresh(json)? {
                Some(old) => Ok(Rotation::Rotated(old)),
                None => Err(StoreError::Corrupt(
                    "rotated a refresh token tombstone".into(),
                )),
            },
            _ => Err(StoreError::Corrupt(
                "unexpected reply from the rotate_refresh script".into(),
            )),
        }
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
        let mut conn = self.backend.conn();
        let (at, kept_until): (u64, u64) = self
            .backend
            .bounded(
                self.scripts
                    .revoke_client
                    .key(self.keys.client_cutoffs())
                    .arg(&self.keys.channel)
                    .arg(api_id)
                    .arg(client_id)
                    .arg(clamp_time(issued_up_to))
                    .arg(clamp_time(until))
                    .invoke_async(&mut conn),
            )
            .await?;
        self.shared.revoked_write().insert_cutoff(
            api_id,
            client_id,
            Cutoff {
                at,
                until: kept_until,
            },
        );
        Ok(())
    }

    fn client_cutoff(&self, api_id: &str, client_id: &str, now: u64) -> Option<u64> {
        live_cutoff(&self.shared.revoked_read().clients, api_id, client_id, now)
    }

    async fn count_stateless(&self, api_id: &str, client_id: &str, now: u64) -> StoreResult<()> {
        let key = self.keys.stateless(api_id);
        let [count, last] = Keys::stateless_fields(client_id);
        let mut conn = self.backend.conn();
        // One hash per API (one slot), so the two writes are one atomic round trip in a cluster too.
        let _: () = self
            .backend
            .bounded(
                redis::pipe()
                    .atomic()
                    .hincr(&key, count, 1)
                    .ignore()
                    .hset(&key, last, now)
                    .ignore()
                    .expire(&key, STATELESS_COUNT_KEEP_SECS)
                    .ignore()
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn stateless_count(&self, api_id: &str, client_id: &str) -> StoreResult<StatelessCount> {
        let mut conn = self.backend.conn();
        let (issued, last): (Option<u64>, Option<u64>) = self
            .backend
            .bounded(
                redis::cmd("HMGET")
                    .arg(self.keys.stateless(api_id))
                    .arg(&Keys::stateless_fields(client_id))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(StatelessCount {
            issued: issued.unwrap_or(0),
            last_issued_at: last,
        })
    }

    async fn put_client(&self, client: &StoredClient) -> StoreResult<()> {
        let json = Self::to_json(client)?;
        let mut conn = self.backend.conn();
        let _: i64 = self
            .backend
            .bounded(
                self.scripts
                    .client
                    .key(self.keys.clients(&client.api_id))
                    .arg(&client.client_id)
                    .arg(json)
                    .arg(&self.keys.channel)
                    .arg(client_event(&client.api_id, &client.client_id))
                    .invoke_async(&mut conn),
            )
            .await?;
        self.shared
            .invalidate_client(&client.api_id, &client.client_id);
        Ok(())
    }

    async fn get_client(&self, api_id: &str, client_id: &str) -> StoreResult<Option<StoredClient>> {
        if let Some(client) = self.shared.cached_client(api_id, client_id) {
            return Ok(Some(client));
        }
        let generation = self.shared.client_generation.load(Ordering::Acquire);
        let mut conn = self.backend.conn();
        let raw: Option<String> = self
            .backend
            .bounded(
                redis::cmd("HGET")
                    .arg(self.keys.clients(api_id))
                    .arg(client_id)
                    .query_async(&mut conn),
            )
            .await?;
        let client = raw.as_deref().map(Self::parse_client).transpose()?;
        if let Some(client) = &client {
            self.shared.cache_client(generation, client);
        }
        Ok(client)
    }

    async fn list_clients(&self, api_id: &str) -> StoreResult<Vec<StoredClient>> {
        let mut conn = self.backend.conn();
        let raws: Vec<String> = self
            .backend
            .bounded(
                redis::cmd("HVALS")
                    .arg(self.keys.clients(api_id))
                    .query_async(&mut conn),
            )
            .await?;
        let mut clients = raws
            .iter()
            .map(|raw| Self::parse_client(raw))
            .collect::<StoreResult<Vec<_>>>()?;
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(clients)
    }

    async fn delete_client(&self, api_id: &str, client_id: &str) -> StoreResult<bool> {
        let mut conn = self.backend.conn();
        let deleted: i64 = self
            .backend
            .bounded(
                self.scripts
                    .client
                    .key(self.keys.clients(api_id))
                    .arg(client_id)
                    .arg("")
                    .arg(&self.keys.channel)
                    .arg(client_event(api_id, client_id))
                    .invoke_async(&mut conn),
            )
            .await?;
        self.shared.invalidate_client(api_id, client_id);
        let _: i64 = self
            .backend
            .bounded(
                redis::cmd("HDEL")
                    .arg(self.keys.stateless(api_id))
                    .arg(&Keys::stateless_fields(client_id))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn put_policy(&self, policy: &StoredPolicy, mode: PolicyWrite) -> StoreResult<bool> {
        let json = Self::to_json(policy)?;
        let mode = match mode {
            PolicyWrite::Create => "create",
            PolicyWrite::Replace => "replace",
        };
        self.write_policy(mode, &policy.id, &json).await
    }

    async fn get_policy(&self, id: &str) -> StoreResult<Option<StoredPolicy>> {
        let mut conn = self.backend.conn();
        let raw: Option<String> = self
            .backend
            .bounded(
                redis::cmd("HGET")
                    .arg(self.keys.policies())
                    .arg(id)
                    .query_async(&mut conn),
            )
            .await?;
        raw.as_deref().map(Self::parse_policy).transpose()
    }

    async fn list_policies(&self) -> StoreResult<Vec<StoredPolicy>> {
        let mut conn = self.backend.conn();
        let raws: Vec<String> = self
            .backend
            .bounded(
                redis::cmd("HVALS")
                    .arg(self.keys.policies())
                    .query_async(&mut conn),
            )
            .await?;
        let mut policies = raws
            .iter()
            .map(|raw| Self::parse_policy(raw))
            .collect::<StoreResult<Vec<_>>>()?;
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(policies)
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
        let [address, subject] = self.keys.guess(guess);
        let mut conn = self.backend.conn();
        let wait: i64 = self
            .backend
            .bounded(
                self.scripts
                    .reserve_attempt
                    .key(address)
                    .key(subject)
                    .arg(now)
                    .arg(window_secs.min(MAX_TIME))
                    .arg(limit)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(match u64::try_from(wait) {
            Ok(secs) if secs > 0 => Attempt::Throttled {
                retry_after_secs: secs,
            },
            _ => Attempt::Reserved,
        })
    }

    async fn release_attempt(&self, guess: &Guess<'_>, how: Release, now: u64) -> StoreResult<()> {
        let [address, subject] = self.keys.guess(guess);
        let how = match how {
            Release::Success => "success",
            Release::NotEvaluated => "not_evaluated",
        };
        let mut conn = self.backend.conn();
        let _: i64 = self
            .backend
            .bounded(
                self.scripts
                    .release_attempt
                    .key(address)
                    .key(subject)
                    .arg(now)
                    .arg(how)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
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
