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
//! the proxy's cache (`auth::policy::StoredPolicies`) is valid only while the epoch is unchanged. While
//! the subscription is down the epoch is `None`, so nothing cached is trusted and policies are read from
//! Redis; when it returns, the bump makes every node reload what it reads next.
//!
//! # Start
//!
//! [`RedisStore::connect`] fails fast: if Redis cannot be reached, or the revocation set cannot be
//! loaded, at start, it returns an error (the gateway refuses to start) rather than serving with an
//! unknown revocation state. Once running, the node rides out Redis outages by itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo,
    PushKind, RedisError, RedisFuture, RedisResult, Script, Value,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::memory::{
    Cutoff, ROTATED_NEVER_EXPIRING_KEEP_SECS, insert_cutoff, live_cutoff, prune_cutoffs,
};
use super::{
    Attempt, AuthCode, CodeTake, Guess, LoginSession, PolicyWrite, RefreshToken, Release, Rotation,
    Session, StatelessCount, Store, StoreError, StoreResult, StoredClient, StoredPolicy,
};

/// Login sessions of the builtin login page (OpenID Connect).
mod login_sessions;
use crate::config::RedisConfig;

/// How long a live refresh token that never expires (`refresh_token.ttl: never`) is kept: ten years,
/// the same bound the token endpoint gives such a session.
pub const NEVER_EXPIRING_REFRESH_KEEP_SECS: u64 = 10 * 365 * 24 * 3600;

/// Latest absolute time written to Redis (year 2286): keeps every number a Lua script handles exact.
const MAX_TIME: u64 = 9_999_999_999;
/// How long an API's stateless-token counts are kept after its latest token (every key has a TTL).
const STATELESS_COUNT_KEEP_SECS: i64 = 30 * 24 * 3600;

/// Consecutive timed-out calls after which the single-node connection is replaced.
const REBUILD_AFTER_TIMEOUTS: u32 = 3;
/// ... but not more often than this.
const REBUILD_MIN_INTERVAL: Duration = Duration::from_secs(5);

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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn clamp_time(t: u64) -> u64 {
    t.clamp(1, MAX_TIME)
}

// ------------------------------------------------------------------------------------------------
// Connections

/// One Redis or a cluster, behind the crate's connection trait so commands and scripts run on either.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection shared by the store and the limiter, with the per-call time bound.
pub(crate) struct Backend {
    conn: RwLock<Conn>,
    /// What a replacement single-node connection is built from (`None` for a cluster, whose client
    /// manages its node connections itself).
    rebuild: Option<(Client, ConnectionManagerConfig)>,
    timeout: Duration,
    timeouts_in_a_row: AtomicU32,
    last_rebuild: RwLock<Option<Instant>>,
}

impl Backend {
    /// Connects (fails if Redis does not answer within `startup`) and returns the backend and the
    /// clients the subscriber may use (one per node it may subscribe on).
    async fn connect(
        cfg: &RedisConfig,
        startup: Duration,
    ) -> Result<(Arc<Backend>, Vec<Client>), StoreError> {
        let unavailable = |what: &str, err: RedisError| {
            StoreError::Unavailable(format!("redis: {what}: {}", describe(&err)))
        };
        let connect_timeout = cfg.timeout.max(Duration::from_secs(1));
        if cfg.cluster.is_empty() {
            let url = cfg.url.as_deref().ok_or_else(|| {
                StoreError::Unavailable("redis: storage.redis.url is not set".into())
            })?;
            let info = url
                .into_connection_info()
                .map_err(|e| unavailable("invalid storage.redis.url", e))?;
            let client = Client::open(info.clone()).map_err(|e| unavailable("invalid url", e))?;
            let manager_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(3)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            let manager = tokio::time::timeout(
                startup,
                ConnectionManager::new_with_config(client.clone(), manager_cfg.clone()),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("redis: no connection within {startup:?}"))
            })?
            .map_err(|e| unavailable("cannot connect", e))?;
            let subscriber = Client::open(resp3(info)).map_err(|e| unavailable("url", e))?;
            let backend = Backend::new(
                Conn::Single(manager),
                Some((client, manager_cfg)),
                cfg.timeout,
            );
            Ok((backend, vec![subscriber]))
        } else {
            let nodes: Vec<String> = cfg.cluster.iter().map(|n| node_url(n)).collect();
            let client = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(cfg.timeout)
                .build()
                .map_err(|e| unavailable("invalid storage.redis.cluster", e))?;
            let conn = tokio::time::timeout(startup, client.get_async_connection())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "redis cluster: no connection within {startup:?}"
                    ))
                })?
                .map_err(|e| unavailable("cannot connect to the cluster", e))?;
            let mut subscribers = Vec::new();
            for node in &nodes {
                let info = node
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| unavailable("invalid cluster node", e))?;
                subscribers.push(Client::open(resp3(info)).map_err(|e| unavailable("node", e))?);
            }
            Ok((
                Backend::new(Conn::Cluster(conn), None, cfg.timeout),
                subscribers,
            ))
        }
    }

    fn new(
        conn: Conn,
        rebuild: Option<(Client, ConnectionManagerConfig)>,
        timeout: Duration,
    ) -> Arc<Backend> {
        Arc::new(Backend {
            conn: RwLock::new(conn),
            rebuild,
            timeout,
            timeouts_in_a_row: AtomicU32::new(0),
            last_rebuild: RwLock::new(None),
        })
    }

    /// A handle on the connection (cheap: both kinds are reference-counted).
    pub(crate) fn conn(&self) -> Conn {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one Redis call within `storage.redis.timeout`; every failure is `Unavailable` except a
    /// record a script found corrupt.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(err)) => {
                if err.is_timeout() {
                    self.note_timeout();
                } else {
                    self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                }
                Err(store_error(&err))
            }
            Err(_) => {
                self.note_timeout();
                Err(StoreError::Unavailable(format!(
                    "redis did not answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// Calls that keep timing out without an error mean a connection nobody answers on (the peer
    /// vanished without a reset): the connection manager would wait on it forever, so replace it.
    fn note_timeout(&self) {
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < REBUILD_AFTER_TIMEOUTS {
            return;
        }
        let Some((client, manager_cfg)) = &self.rebuild else {
            return;
        };
        {
            let mut last = self
                .last_rebuild
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < REBUILD_MIN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        match ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone()) {
            Ok(manager) => {
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Conn::Single(manager);
                tracing::warn!(
                    "redis: calls keep timing out; replaced the connection with a new one"
                );
            }
            Err(err) => {
                tracing::warn!(error = %describe(&err), "redis: could not replace the connection")
            }
        }
    }
}

/// The same connection settings over RESP3, which the subscriber needs (push messages on a
/// multiplexed connection).
fn resp3(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// Cluster seed nodes may be given as `host:port`.
fn node_url(node: &str) -> String {
    if node.contains("://") {
        node.to_string()
    } else {
        format!("redis://{node}")
    }
}

/// An error's text without anything a URL could have carried (the crate never prints passwords).
fn describe(err: &RedisError) -> String {
    err.to_string()
}

fn store_error(err: &RedisError) -> StoreError {
    if err.code() == Some("TGCORRUPT") {
        StoreError::Corrupt(describe(err))
    } else {
        StoreError::Unavailable(format!("redis: {}", describe(err)))
    }
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

// ------------------------------------------------------------------------------------------------
// Keys

/// Every key the store uses; see `docs/redis.md`.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    /// `<prefix>{tokens}:`: sessions, refresh tokens and revocations share one hash slot.
    tokens: String,
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            tokens: format!("{prefix}{{tokens}}:"),
            channel: format!("{prefix}revocations"),
        }
    }

    fn code(&self, code_hash: &str) -> String {
        format!("{}code:{code_hash}", self.prefix)
    }

    fn refresh(&self, token_hash: &str) -> String {
        format!("{}rt:{token_hash}", self.tokens)
    }

    fn session(&self, sid: &str) -> String {
        format!("{}session:{sid}", self.tokens)
    }

    fn client_sessions(&self, api_id: &str, client_id: &str) -> String {
        format!("{}client_sessions:{api_id}:{client_id}", self.tokens)
    }

    fn revoked(&self, kind: RevocationKind) -> String {
        format!("{}revoked:{}", self.tokens, kind.as_str())
    }

    /// One hash of per-client cutoffs (field: `<api_id> <client_id>`; neither contains a space).
    fn client_cutoffs(&self) -> String {
        format!("{}client_cutoffs", self.tokens)
    }

    /// Stateless tokens issued per client of one API (fields `<client_id>` and `<client_id> last`).
    fn stateless(&self, api_id: &str) -> String {
        format!("{}stateless:{api_id}", self.prefix)
    }

    /// The two fields of one client in [`Keys::stateless`]: its count, and when it last counted.
    /// A client id has no space, so the second can never be another client's first.
    fn stateless_fields(client_id: &str) -> [String; 2] {
        [client_id.to_string(), format!("{client_id} last")]
    }

    fn clients(&self, api_id: &str) -> String {
        format!("{}clients:{api_id}", self.prefix)
    }

    /// One hash of every stored policy (field: id, value: JSON), without a TTL (DESIGN §7).
    fn policies(&self) -> String {
        format!("{}policies", self.prefix)
    }

    /// The two counters of a guess. The address part is a hash tag, so both land in one cluster
    /// slot and one script can reserve them together: `failures:{login:movies|10.0.0.1}` and
    /// `failures:{login:movies|10.0.0.1}:alice` (scope and address never contain braces).
    fn guess(&self, guess: &Guess<'_>) -> [String; 2] {
        let tag = format!(
            "{}failures:{{{}|{}}}",
            self.prefix, guess.scope, guess.address
        );
        let subject = format!("{tag}:{}", guess.subject);
        [tag, subject]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevocationKind {
    Sid,
    Jti,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Sid => "sid",
            RevocationKind::Jti => "jti",
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Lua

/// Helpers prepended to every store script.
const LUA_COMMON: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local function decode(v)
  local ok, r = pcall(cjson.decode, v)
  if not ok or type(r) ~= 'table' then error({err = 'TGCORRUPT stored record is not valid JSON'}) end
  return r
end
local function num(x)
  if x == nil or x == cjson.null then return nil end
  return tonumber(x)
end
-- An absolute time as an integer argument, within what Redis and Lua handle exactly.
local function at(t)
  if t > 9999999999 then t = 9999999999 end
  if t < 1 then t = 1 end
  return string.format('%d', t)
end
local function server_now() return tonumber(redis.call('TIME')[1]) end
-- Makes `key` live at least until the unix time `t`.
local function extend(key, t, srv)
  local ttl = redis.call('TTL', key)
  if ttl < 0 or t - srv > ttl then redis.call('EXPIREAT', key, at(t)) end
end
-- A sorted set scored by expiry: drop what expired by `now`, expire the key with its last member.
local function maintain(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', at(now))
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('EXPIREAT', key, at(tonumber(top[2]))) end
end
local function revoked(base, sid, now)
  if sid == '' then return false end
  local s = redis.call('ZSCORE', base .. 'revoked:sid', sid)
  return s and tonumber(s) > now
end
-- Records a revocation (never shortening an earlier one) and publishes it; returns the until kept.
local function revoke(base, channel, kind, id, until_, srv)
  local key = base .. 'revoked:' .. kind
  local cur = redis.call('ZSCORE', key, id)
  if cur and tonumber(cur) > until_ then until_ = tonumber(cur) end
  redis.call('ZADD', key, at(until_), id)
  maintain(key, srv)
  redis.call('PUBLISH', channel, cjson.encode({kind = kind, id = id, ['until'] = until_}))
  return until_
end
-- Revokes a session: the revocation first (so an interrupted script errs on the safe side), then
-- every live refresh token of it, its index entry and its record. Rotation tombstones stay.
local function revoke_session(base, channel, sid, until_, srv)
  if sid == '' then return until_ end
  until_ = revoke(base, channel, 'sid', sid, until_, srv)
  local rts = base .. 'session_rts:' .. sid
  for _, h in ipairs(redis.call('SMEMBERS', rts)) do
    local k = base .. 'rt:' .. h
    local v = redis.call('GET', k)
    if v then
      local ok, r = pcall(cjson.decode, v)
      if not ok or type(r) ~= 'table' or (r.rotated == nil and r.sid == sid) then
        redis.call('DEL', k)
      end
    end
  end
  redis.call('DEL', rts)
  local sk = base .. 'session:' .. sid
  local s = redis.call('GET', sk)
  if s then
    local ok, so = pcall(cjson.decode, s)
    if ok and type(so) == 'table' and type(so.api_id) == 'string' and type(so.client_id) == 'string' then
      redis.call('ZREM', base .. 'client_sessions:' .. so.api_id .. ':' .. so.client_id, sid)
    end
    redis.call('DEL', sk)
  end
  return until_
end
"#;

/// KEYS: code. ARGV: now. Spends a live code (its record becomes a tombstone naming the session).
const LUA_TAKE_CODE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return {'unknown'} end
local rec = decode(v)
local now = tonumber(ARGV[1])
local exp = num(rec.expires_at) or 0
if now >= exp then
  redis.call('DEL', KEYS[1])
  return {'unknown'}
end
if rec.spent then return {'used', tostring(rec.sid)} end
redis.call('SET', KEYS[1], cjson.encode({spent = true, sid = rec.sid, expires_at = exp}), 'KEEPTTL')
return {'fresh', v}
"#;

/// KEYS: session. ARGV: base, sid, json, expires_at, now, api_id, client_id, username ('' for
/// none), max sessions per user, channel. Returns the sids of the sessions it ended.
///
/// A session with a user joins `user_sessions:<sha1(api, client, user)>` (hashed: a username may hold
/// any character, so joining the three with a separator could make two users share an index),
/// ordered by Redis's clock in microseconds. Members whose session record is gone (revoked, expired)
/// are dropped first; then, beyond the cap, the oldest are revoked like `revoke_session`.
const LUA_PUT_SESSION: &str = r#"
local base, sid, now = ARGV[1], ARGV[2], tonumber(ARGV[5])
if revoked(base, sid, now) then return {} end
local exp = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'EXAT', at(exp))
local index = base .. 'client_sessions:' .. ARGV[6] .. ':' .. ARGV[7]
redis.call('ZADD', index, at(exp), sid)
maintain(index, now)
local ended = {}
if ARGV[8] ~= '' then
  local users = base .. 'user_sessions:' .. redis.sha1hex(ARGV[6] .. '\n' .. ARGV[7] .. '\n' .. ARGV[8])
  local t = redis.call('TIME')
  local srv = tonumber(t[1])
  for _, m in ipairs(redis.call('ZRANGE', users, 0, -1)) do
    if redis.call('EXISTS', base .. 'session:' .. m) == 0 then redis.call('ZREM', users, m) end
  end
  redis.call('ZADD', users, string.format('%d', srv * 1000000 + tonumber(t[2])), sid)
  local over = redis.call('ZCARD', users) - tonumber(ARGV[9])
  if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', users, 0, over - 1)) do
      local until_ = now
      local s = redis.call('GET', base .. 'session:' .. old)
      if s then
        local ok, so = pcall(cjson.decode, s)
        if ok and type(so) == 'table' then
          local e = num(so.expires_at)
          if e and e > until_ then until_ = e end
        end
      end
      revoke_session(base, ARGV[10], old, until_, srv)
      redis.call('ZREM', users, old)
      ended[#ended + 1] = old
    end
  end
  extend(users, exp, srv)
end
return ended
"#;

/// KEYS: client cutoffs. ARGV: channel, api_id, client_id, issued_up_to, until. Keeps the later of
/// each time, forgets cutoffs whose tokens have all expired, publishes the cutoff kept and returns it.
const LUA_REVOKE_CLIENT: &str = r#"
local api, id = ARGV[2], ARGV[3]
local field = api .. ' ' .. id
local at_, until_ = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HGET', KEYS[1], field)
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' then
    local a, u = num(c.at), num(c['until'])
    if a and a > at_ then at_ = a end
    if u and u > until_ then until_ = u end
  end
end
local record = cjson.encode({kind = 'client_cutoff', api = api, id = id, at = at_, ['until'] = until_})
redis.call('HSET', KEYS[1], field, record)
local srv = server_now()
local last = until_
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, c = pcall(cjson.decode, all[i + 1])
  local u = 0
  if ok and type(c) == 'table' then u = num(c['until']) or 0 end
  if u <= srv then redis.call('HDEL', KEYS[1], all[i]) elseif u > last then last = u end
end
redis.call('EXPIREAT', KEYS[1], at(last))
redis.call('PUBLISH', ARGV[1], record)
return {at(at_), at(until_)}
"#;

/// KEYS: refresh token. ARGV: base, hash, json, sid, expires_at or '', now, never-expiring keep.
const LUA_PUT_REFRESH: &str = r#"
local base, hash, sid, now = ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[6])
if revoked(base, sid, now) then return 0 end
local exp = tonumber(ARGV[5]) or (now + tonumber(ARGV[7]))
local old = redis.call('GET', KEYS[1])
if old then
  local ok, r = pcall(cjson.decode, old)
  if ok and type(r) == 'table' and r.rotated == nil and type(r.sid) == 'string' and r.sid ~= sid then
    redis.call('SREM', base .. 'session_rts:' .. r.sid, hash)
  end
end
redis.call('SET', KEYS[1], ARGV[3], 'EXAT', at(exp))
local rts = base .. 'session_rts:' .. sid
redis.call('SADD', rts, hash)
extend(rts, exp, server_now())
return 1
"#;

/// KEYS: old token, new token. ARGV: base, channel, now, old hash, new hash, new json, new sid,
/// new expires_at or '', tombstone keep for never-expiring tokens, never-expiring keep.
const LUA_ROTATE_REFRESH: &str = r#"
local base, channel, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local v = redis.call('GET', KEYS[1])
if not v then return {'invalid'} end
local rec = decode(v)
if type(rec.sid) ~= 'string' then error({err = 'TGCORRUPT refresh token record without sid'}) end
if rec.rotated then
  local keep = num(rec.keep_until) or 0
  if now >= keep then
    redis.call('DEL', KEYS[1])
    return {'invalid'}
  end
  -- Reuse: revoke the session for as long as any of its tokens can live.
  local until_ = keep
  local s = redis.call('GET', base .. 'session:' .. rec.sid)
  if s then
    local ok, so = pcall(cjson.decode, s)
    if ok and type(so) == 'table' then
      local e = num(so.expires_at)
      if e and e > until_ then until_ = e end
    end
  end
  until_ = revoke_session(base, channel, rec.sid, until_, server_now())
  return {'reused', rec.sid, at(until_)}
end
local exp = num(rec.expires_at)
if exp and now >= exp then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', base .. 'session_rts:' .. rec.sid, ARGV[4])
  return {'invalid'}
end
if revoked(base, rec.sid, now) then return {'invalid'} end
local srv = server_now()
-- Spend the old token first, then store the successor.
local keep = exp or (now + tonumber(ARGV[9]))
redis.call('SET', KEYS[1], cjson.encode({rotated = true, sid = rec.sid, keep_until = keep}), 'EXAT', at(keep))
redis.call('SREM', base .. 'session_rts:' .. rec.sid, ARGV[4])
local new_exp = tonumber(ARGV[8])
local new_keep = new_exp or (now + tonumber(ARGV[10]))
redis.call('SET', KEYS[2], ARGV[6], 'EXAT', at(new_keep))
local rts = base .. 'session_rts:' .. ARGV[7]
redis.call('SADD', rts, ARGV[5])
extend(rts, new_keep, srv)
-- The session: one more refresh, and its expiry slides (see MemoryStore::rotate_refresh).
local sk = base .. 'session:' .. rec.sid
local s = redis.call('GET', sk)
if s then
  local so = decode(s)
  so.refresh_count = (num(so.refresh_count) or 0) + 1
  local sexp = num(so.expires_at) or now
  local since = num(so.last_refresh_at) or num(so.created_at) or now
  local lifetime = sexp - since
  if lifetime < 0 then lifetime = 0 end
  local e = sexp
  if now + lifetime > e then e = now + lifetime end
  if new_exp and new_exp > e then e = new_exp end
  so.expires_at = e
  so.last_refresh_at = now
  redis.call('SET', sk, cjson.encode(so), 'EXAT', at(e))
  if type(so.api_id) == 'string' and type(so.client_id) == 'string' then
    local index = base .. 'client_sessions:' .. so.api_id .. ':' .. so.client_id
    redis.call('ZADD', index, at(e), rec.sid)
    maintain(index, now)
  end
end
return {'rotated', v}
"#;

/// KEYS: revoked sessions. ARGV: base, channel, sid, until.
const LUA_REVOKE_SESSION: &str = r#"
return at(revoke_session(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), server_now()))
"#;

/// KEYS: revoked tokens. ARGV: base, channel, jti, until.
const LUA_REVOKE_JTI: &str = r#"
return at(revoke(ARGV[1], ARGV[2], 'jti', ARGV[3], tonumber(ARGV[4]), server_now()))
"#;

/// KEYS: the per-address counter, the per-(subject, address) counter. ARGV: now, window, limit.
/// Checks both counters and counts the attempt in both, in one step: parallel guesses cannot all read
/// "below the limit" before any of them counts. Returns 0 when reserved, else the seconds until the
/// window of a full counter ends.
const LUA_RESERVE_ATTEMPT: &str = r#"
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
for _, key in ipairs(KEYS) do
  local ends = tonumber(redis.call('HGET', key, 'ends') or '0')
  if ends > now and tonumber(redis.call('HGET', key, 'count') or '0') >= limit then
    wait = math.max(wait, ends - now)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  local ends = tonumber(redis.call('HGET', key, 'ends') or '0')
  if ends > now then
    redis.call('HINCRBY', key, 'count', 1)
  else
    redis.call('HSET', key, 'count', 1, 'ends', at(now + window))
    redis.call('EXPIREAT', key, at(now + window))
  end
end
return 0
"#;

/// KEYS: the per-address counter, the per-(subject, address) counter. ARGV: now, `success` or
/// `not_evaluated`. Gives the attempt back to the address (and, when not evaluated, to the subject);
/// a success deletes the subject's counter. Counters whose window is over are left alone.
const LUA_RELEASE_ATTEMPT: &str = r#"
local now = tonumber(ARGV[1])
local function give_back(key)
  local ends = tonumber(redis.call('HGET', key, 'ends') or '0')
  if ends > now and tonumber(redis.call('HGET', key, 'count') or '0') > 0 then
    redis.call('HINCRBY', key, 'count', -1)
  end
end
give_back(KEYS[1])
if ARGV[2] == 'success' then redis.call('DEL', KEYS[2]) else give_back(KEYS[2]) end
return 0
"#;

/// KEYS: clients of an API. ARGV: client_id, json (empty: delete), channel, message. Writes and
/// publishes the invalidation in one round trip (a pipeline would mix slots in a cluster).
/// Returns how many fields were deleted (0 for a write).
const LUA_CLIENT: &str = r#"
local n = 0
if ARGV[2] == '' then
  n = redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
"#;

/// KEYS: policies. ARGV: mode (create | replace | delete), id, json (unused for delete), channel,
/// message. The existence check, the write and the invalidation are one step, so two nodes creating
/// the same id cannot both succeed. Returns 1 when it wrote (or deleted), 0 when the mode forbade it.
const LUA_POLICY: &str = r#"
local exists = redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1
if ARGV[1] == 'create' then
  if exists then return 0 end
elseif not exists then
  return 0
end
if ARGV[1] == 'delete' then
  redis.call('HDEL', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

struct Scripts {
    client: Script,
    policy: Script,
    take_code: Script,
    put_session: Script,
    put_refresh: Script,
    rotate_refresh: Script,
    revoke_session: Script,
    revoke_jti: Script,
    revoke_client: Script,
    reserve_attempt: Script,
    release_attempt: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| Script::new(&format!("{LUA_COMMON}\n{body}"));
        Scripts {
            client: Script::new(LUA_CLIENT),
            policy: Script::new(LUA_POLICY),
            take_code: script(LUA_TAKE_CODE),
            put_session: script(LUA_PUT_SESSION),
            put_refresh: script(LUA_PUT_REFRESH),
            rotate_refresh: script(LUA_ROTATE_REFRESH),
            revoke_session: script(LUA_REVOKE_SESSION),
            revoke_jti: script(LUA_REVOKE_JTI),
            revoke_client: script(LUA_REVOKE_CLIENT),
            reserve_attempt: script(LUA_RESERVE_ATTEMPT),
            release_attempt: script(LUA_RELEASE_ATTEMPT),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Node-local state: revocations and the client cache

#[derive(Default)]
struct Revoked {
    sids: HashMap<String, u64>,
    jtis: HashMap<String, u64>,
    /// api_id → client_id → per-client cutoff (see `Store::revoke_client_tokens`).
    clients: HashMap<String, HashMap<String, Cutoff>>,
    inserts_since_prune: usize,
}

impl Revoked {
    fn insert(&mut self, kind: RevocationKind, id: &str, until: u64, now: u64) {
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

    fn prune(&mut self, now: u64) {
        self.inserts_since_prune = 0;
        self.sids.retain(|_, until| now < *until);
        self.jtis.retain(|_, until| now < *until);
        prune_cutoffs(&mut self.clients, now);
    }

    /// A cutoff from this node, a message or a reload. Their number is bounded by the number of
    /// clients, so they are only pruned with the rest.
    fn insert_cutoff(&mut self, api_id: &str, client_id: &str, cutoff: Cutoff) {
        if api_id.is_empty() || client_id.is_empty() {
            return;
        }
        insert_cutoff(&mut self.clients, api_id, client_id, cutoff);
    }
}

/// What the store and its subscriber task share.
#[derive(Default)]
struct Shared {
    revoked: RwLock<Revoked>,
    /// Whether the subscription is up (the client cache is only used while it is).
    subscribed: AtomicBool,
    /// Bumped by every client invalidation: a read that began before one must not fill the cache.
    client_generation: AtomicU64,
    clients: RwLock<HashMap<(String, String), (StoredClient, Instant)>>,
    /// Bumped whenever this node learns that a stored policy changed (see the module documentation).
    policy_epoch: AtomicU64,
}

impl Shared {
    fn revoked_read(&self) -> RwLockReadGuard<'_, Revoked> {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn revoked_write(&self) -> RwLockWriteGuard<'_, Revoked> {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn revoke_locally(&self, kind: RevocationKind, id: &str, until: u64) {
        self.revoked_write().insert(kind, id, until, now_secs());
    }

    fn sid_revoked(&self, sid: &str, now: u64) -> bool {
        !sid.is_empty()
            && self
                .revoked_read()
                .sids
                .get(sid)
                .is_some_and(|&until| now < until)
    }

    fn cached_client(&self, api_id: &str, client_id: &str) -> Option<StoredClient> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients
            .get(&(api_id.to_string(), client_id.to_string()))
            .filter(|(_, at)| at.elapsed() < CLIENT_CACHE_TTL)
            .map(|(client, _)| client.clone())
    }

    fn cache_client(&self, generation_before: u64, client: &StoredClient) {
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

    fn invalidate_client(&self, api_id: &str, client_id: &str) {
        self.client_generation.fetch_add(1, Ordering::AcqRel);
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(api_id.to_string(), client_id.to_string()));
    }

    fn invalidate_all_clients(&self) {
        self.client_generation.fetch_add(1, Ordering::AcqRel);
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn policies_changed(&self) {
        self.policy_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// `None` while the subscription is down: changes made meanwhile would not be heard.
    fn policy_epoch(&self) -> Option<u64> {
        if !self.subscribed.load(Ordering::Acquire) {
            return None;
        }
        Some(self.policy_epoch.load(Ordering::Acquire))
    }

    fn set_subscribed(&self, up: bool) {
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
    fn apply(&self, payload: &[u8]) {
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
struct Event {
    kind: String,
    id: String,
    /// Revocations: revoked while `now < until` (a JSON number; Lua may write it as a float).
    #[serde(default, rename = "until")]
    until: f64,
    /// Client invalidations and cutoffs: the client's API.
    #[serde(default)]
    api: String,
    /// Client cutoffs: tokens issued at or before this time are revoked.
    #[serde(default)]
    at: f64,
}

impl Event {
    fn until_secs(&self) -> u64 {
        secs(self.until)
    }
}

/// A time from a JSON number (Lua may write an integer as a float); anything unusable is 0.
fn secs(t: f64) -> u64 {
    if t.is_finite() && t > 0.0 {
        (t as u64).min(MAX_TIME)
    } else {
        0
    }
}

fn client_event(api_id: &str, client_id: &str) -> String {
    serde_json::json!({ "kind": "client", "api": api_id, "id": client_id }).to_string()
}

fn policy_event(id: &str) -> String {
    serde_json::json!({ "kind": "policy", "id": id }).to_string()
}

// ------------------------------------------------------------------------------------------------
// The subscriber task

/// Loads every unexpired revocation of one kind from Redis into the local map.
async fn load_revocations(
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
async fn subscribe_and_load(
    shared: &Shared,
    backend: &Backend,
    client: &Client,
    keys: &Keys,
    push: mpsc::UnboundedSender<PushInfo>,
) -> Result<MultiplexedConnection, String> {
    let timeout = backend.timeout().max(Duration::from_secs(1));
    let config = AsyncConnectionConfig::new()
        .set_push_sender(push)
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| "subscriber: no connection in time".to_string())?
    .map_err(|e| format!("subscriber: {}", describe(&e)))?;
    tokio::time::timeout(timeout, conn.subscribe(&keys.channel))
        .await
        .map_err(|_| "subscriber: SUBSCRIBE not answered in time".to_string())?
        .map_err(|e| format!("subscriber: SUBSCRIBE: {}", describe(&e)))?;
    for kind in [RevocationKind::Sid, RevocationKind::Jti] {
        load_revocations(shared, backend, keys, kind)
            .await
            .map_err(|e| format!("loading revocations: {e}"))?;
    }
    load_cutoffs(shared, backend, keys)
        .await
        .map_err(|e| format!("loading client cutoffs: {e}"))?;
    shared.revoked_write().prune(now_secs());
    Ok(conn)
}

/// Loads every per-client cutoff (a hash bounded by the number of clients) into the local map.
async fn load_cutoffs(shared: &Shared, backend: &Backend, keys: &Keys) -> StoreResult<()> {
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

/// Applies messages until the subscription is lost (disconnection, or a ping not answered).
async fn listen(
    shared: &Shared,
    backend: &Backend,
    mut conn: MultiplexedConnection,
    mut push: mpsc::UnboundedReceiver<PushInfo>,
) {
    let timeout = backend.timeout().max(Duration::from_secs(1));
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + SUBSCRIBER_PING_EVERY,
        SUBSCRIBER_PING_EVERY,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = push.recv() => {
                let Some(message) = message else { return };
                match message.kind {
                    PushKind::Message => {
                        if let Some(Value::BulkString(payload)) = message.data.last() {
                            shared.apply(payload);
                        }
                    }
                    PushKind::Disconnection | PushKind::Unsubscribe => return,
                    _ => {}
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(
                    timeout,
                    redis::cmd("PING").query_async::<Value>(&mut conn),
                )
                .await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// Owns the subscription for the store's lifetime (aborted when the store is dropped). Reports the
/// outcome of the first subscription on `ready`: at start, every node is tried once and the task ends
/// if none works.
async fn subscriber(
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
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        match subscribe_and_load(&shared, &backend, client, &keys, push_tx).await {
            Ok(conn) => {
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
                listen(&shared, &backend, conn, push_rx).await;
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
            .field("timeout", &self.backend.timeout)
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

    /// A rate limiter counting in the same Redis, over the same connection.
    pub fn limiter(&self) -> crate::limits::redis::RedisLimiter {
        crate::limits::redis::RedisLimiter::new(self.backend.clone(), &self.keys.prefix)
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
// Tests

/// The throw-away `redis-server` of the tests: the same file the integration tests use.
#[cfg(test)]
#[path = "../../tests/common/redis.rs"]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{RedisCluster, RedisServer, raw_command, unique_prefix};
    use super::*;
    use crate::config::{OnStorageError, Quota, RateLimit};
    use crate::limits::{Limiter, Refused};
    use crate::store::GrantKind;

    const TIMEOUT: Duration = Duration::from_secs(2);

    /// A store configuration with a key prefix no other test uses.
    fn config(server: &RedisServer, timeout: Duration) -> RedisConfig {
        RedisConfig {
            url: Some(server.url()),
            cluster: Vec::new(),
            key_prefix: unique_prefix(),
            timeout,
        }
    }

    fn cluster_config(cluster: &RedisCluster, timeout: Duration) -> RedisConfig {
        RedisConfig {
            url: None,
            cluster: cluster.seeds(),
            key_prefix: unique_prefix(),
            timeout,
        }
    }

    async fn shared_store() -> Arc<RedisStore> {
        RedisStore::connect(&config(&RedisServer::shared(), TIMEOUT))
            .await
            .expect("connect to the test redis")
    }

    crate::store::contract::store_contract_tests!(shared_store().await);

    mod limiter_contract {
        crate::limiter_contract_tests!(async {
            let store = super::shared_store().await;
            std::sync::Arc::new(store.limiter()) as std::sync::Arc<dyn crate::limits::Limiter>
        });
    }

    fn t0() -> u64 {
        now_secs()
    }

    fn sha256_hex(s: &str) -> String {
        crate::oauth::secrets::sha256_hex(s.as_bytes())
    }

    fn session(sid: &str, now: u64) -> Session {
        Session {
            sid: sid.into(),
            api_id: "api".into(),
            client_id: "client".into(),
            username: Some("alice".into()),
            scope: "read".into(),
            grant: GrantKind::AuthorizationCode,
            created_at: now,
            last_refresh_at: None,
            refresh_count: 0,
            expires_at: now + 3_600,
            oidc: None,
        }
    }

    fn token(sid: &str, now: u64, expires_at: Option<u64>) -> RefreshToken {
        RefreshToken {
            sid: sid.into(),
            api_id: "api".into(),
            client_id: "client".into(),
            username: Some("alice".into()),
            scope: "read".into(),
            generation: 0,
            issued_at: now,
            expires_at,
        }
    }

    /// Fills every kind of key the store and the limiter write.
    async fn exercise(store: &RedisStore, raw_code: &str, raw_tokens: [&str; 3], secret: &str) {
        let now = t0();
        let sid = "sid-exercise";
        store
            .put_code(
                &sha256_hex(raw_code),
                &AuthCode {
                    api_id: "api".into(),
                    client_id: "client".into(),
                    redirect_uri: "https://app.example/cb".into(),
                    scope: "read".into(),
                    username: "alice".into(),
                    code_challenge: None,
                    sid: sid.into(),
                    expires_at: now + 60,
                    oidc: None,
                },
            )
            .await
            .unwrap();
        assert!(matches!(
            store.take_code(&sha256_hex(raw_code), now).await.unwrap(),
            CodeTake::Fresh(_)
        ));
        store.put_session(&session(sid, now), 100).await.unwrap();
        let [rt1, rt2, rt_forever] = raw_tokens;
        store
            .put_refresh(&sha256_hex(rt1), &token(sid, now, Some(now + 600)))
            .await
            .unwrap();
        store
            .rotate_refresh(
                &sha256_hex(rt1),
                &sha256_hex(rt2),
                &token(sid, now, Some(now + 1200)),
                now,
            )
            .await
            .unwrap();
        store
            .put_session(&session("sid-forever", now), 100)
            .await
            .unwrap();
        store
            .put_refresh(&sha256_hex(rt_forever), &token("sid-forever", now, None))
            .await
            .unwrap();
        store
            .revoke_session("sid-revoked", now + 600)
            .await
            .unwrap();
        store.revoke_jti("jti-revoked", now + 600).await.unwrap();
        store
            .reserve_attempt(
                &Guess {
                    scope: "login:api",
                    address: "10.0.0.1",
                    subject: "alice",
                },
                5,
                300,
                now,
            )
            .await
            .unwrap();
        store
            .put_client(&StoredClient {
                api_id: "api".into(),
                client_id: "dyn".into(),
                secret_hash: Some(crate::oauth::secrets::hash_secret(secret).unwrap()),
                redirect_uris: vec![],
                grant_types: vec!["client_credentials".into()],
                scopes: vec!["read".into()],
                policy: None,
                claims: Default::default(),
                created_at: now,
            })
            .await
            .unwrap();
        store
            .put_policy(
                &StoredPolicy {
                    id: "gold".into(),
                    rate_limit: None,
                    quota: None,
                    scopes: None,
                    access: vec![],
                    created_at: now,
                    updated_at: now,
                },
                PolicyWrite::Create,
            )
            .await
            .unwrap();
        let limiter = store.limiter();
        let rate = RateLimit {
            rate: 10,
            per: Duration::from_secs(60),
            on_storage_error: OnStorageError::Deny,
            exact: false,
        };
        let quota = Quota {
            max: 100,
            period: Duration::from_secs(3600),
        };
        limiter
            .check("session:x", Some(&rate), Some(&quota), now)
            .await
            .unwrap();
    }

    /// Every key has a TTL except the dynamic clients and the stored policies (DESIGN §7), and every
    /// TTL is bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_but_clients_and_policies_has_a_ttl() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let store = RedisStore::connect(&cfg).await.unwrap();
        exercise(&store, "code-raw", ["rt-a", "rt-b", "rt-c"], "s3cret-value").await;
        let keys = server.keys_and_ttls(&cfg.key_prefix).await;
        let kinds = [
            "code:",
            "{tokens}:rt:",
            "{tokens}:session:",
            "{tokens}:session_rts:",
            "{tokens}:client_sessions:",
            "{tokens}:revoked:sid",
            "{tokens}:revoked:jti",
            "failures:",
            "clients:",
            "policies",
            "rl:",
        ];
        for kind in kinds {
            assert!(
                keys.iter()
                    .any(|(k, _)| k.starts_with(&format!("{}{kind}", cfg.key_prefix))),
                "no {kind} key written: {keys:?}"
            );
        }
        for (key, ttl) in &keys {
            if key.starts_with(&format!("{}clients:", cfg.key_prefix))
                || *key == format!("{}policies", cfg.key_prefix)
            {
                assert_eq!(*ttl, -1, "{key}");
            } else {
                assert!(*ttl > 0, "{key} has no TTL ({ttl})");
                assert!(
                    *ttl <= NEVER_EXPIRING_REFRESH_KEEP_SECS as i64 + 10,
                    "{key}: {ttl}"
                );
            }
        }
    }

    /// Codes, refresh tokens and client secrets never reach Redis in clear.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_token_or_secret_in_clear() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let store = RedisStore::connect(&cfg).await.unwrap();
        let raw = [
            "code-Zq8YpX2mW9",
            "rt-Kd7Lm2Pq9Xa",
            "rt-Hy6Tn3Bv8Qe",
            "rt-Fw5Rj1Cs7Ug",
        ];
        let secret = "client-secret-Pz4Nk8Vt2";
        exercise(&store, raw[0], [raw[1], raw[2], raw[3]], secret).await;
        let everything = server.dump(&cfg.key_prefix).await;
        assert!(
            everything.contains(&sha256_hex(raw[1])),
            "hashes are stored"
        );
        for needle in raw.iter().chain([&secret]) {
            assert!(!everything.contains(needle), "{needle} stored in clear");
        }
    }

    /// A revocation on one node reaches another node's `is_revoked` within 100 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocation_reaches_another_node_within_100ms() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let a = RedisStore::connect(&cfg).await.unwrap();
        let b = RedisStore::connect(&cfg).await.unwrap();
        let now = t0();
        for (sid, jti) in [("sid-1", ""), ("", "jti-1")] {
            assert!(!b.is_revoked(sid, jti, now));
            let started = Instant::now();
            if sid.is_empty() {
                a.revoke_jti(jti, now + 600).await.unwrap();
            } else {
                a.revoke_session(sid, now + 600).await.unwrap();
            }
            assert!(a.is_revoked(sid, jti, now), "local at once");
            while !b.is_revoked(sid, jti, now) {
                assert!(
                    started.elapsed() < Duration::from_millis(100),
                    "not seen by the other node within 100 ms"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // Reuse detected on A revokes on B too.
        a.put_session(&session("sid-2", now), 100).await.unwrap();
        a.put_refresh("h1", &token("sid-2", now, Some(now + 600)))
            .await
            .unwrap();
        a.rotate_refresh("h1", "h2", &token("sid-2", now, Some(now + 600)), now)
            .await
            .unwrap();
        assert_eq!(
            b.rotate_refresh("h1", "h3", &token("sid-2", now, None), now)
                .await
                .unwrap(),
            Rotation::Reused {
                sid: "sid-2".into()
            }
        );
        assert!(b.is_revoked("sid-2", "", now));
        let started = Instant::now();
        while !a.is_revoked("sid-2", "", now) {
            assert!(started.elapsed() < Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A node that starts later loads the revocations made before it; a revocation it missed while
    /// its subscription was down is reloaded when the subscription comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_are_reloaded_on_start_and_on_reconnect() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let now = t0();
        let a = RedisStore::connect(&cfg).await.unwrap();
        a.revoke_session("before-start", now + 600).await.unwrap();
        a.revoke_jti("jti-before-start", now + 600).await.unwrap();
        a.revoke_client_tokens("api", "client-before-start", now, now + 600)
            .await
            .unwrap();
        let b = RedisStore::connect(&cfg).await.unwrap();
        assert!(b.is_revoked("before-start", "", now));
        assert!(b.is_revoked("", "jti-before-start", now));
        assert_eq!(
            b.client_cutoff("api", "client-before-start", now),
            Some(now)
        );

        // A revocation written without a message (as if B missed it), then B's subscription drops.
        let mut conn = server.connection().await;
        let _: i64 = redis::cmd("ZADD")
            .arg(format!("{}{{tokens}}:revoked:sid", cfg.key_prefix))
            .arg(now + 600)
            .arg("missed")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!b.is_revoked("missed", "", now));
        let record = serde_json::json!({
            "kind": "client_cutoff", "api": "api", "id": "client-missed", "at": now, "until": now + 600,
        });
        let _: i64 = redis::cmd("HSET")
            .arg(format!("{}{{tokens}}:client_cutoffs", cfg.key_prefix))
            .arg("api client-missed")
            .arg(record.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(b.client_cutoff("api", "client-missed", now), None);
        let killed = raw_command(server.port(), "CLIENT KILL TYPE pubsub").unwrap();
        assert!(killed.starts_with(':'), "{killed}");
        let started = Instant::now();
        while !b.is_revoked("missed", "", now) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not reloaded after the subscription came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        while b.client_cutoff("api", "client-missed", now).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "client cutoffs not reloaded after the subscription came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // And the new subscription delivers again.
        let started = Instant::now();
        while !b.subscribed() {
            assert!(started.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        a.revoke_jti("after-reconnect", now + 600).await.unwrap();
        let started = Instant::now();
        while !b.is_revoked("", "after-reconnect", now) {
            assert!(started.elapsed() < Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A client changed on one node is not served stale from another node's cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_cache_is_invalidated_across_nodes() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let a = RedisStore::connect(&cfg).await.unwrap();
        let b = RedisStore::connect(&cfg).await.unwrap();
        let mut client = StoredClient {
            api_id: "api".into(),
            client_id: "c".into(),
            secret_hash: None,
            redirect_uris: vec![],
            grant_types: vec![],
            scopes: vec!["read".into()],
            policy: None,
            claims: Default::default(),
            created_at: 1,
        };
        a.put_client(&client).await.unwrap();
        assert_eq!(
            b.get_client("api", "c").await.unwrap(),
            Some(client.clone())
        );
        client.scopes = vec!["write".into()];
        a.put_client(&client).await.unwrap();
        let started = Instant::now();
        while b.get_client("api", "c").await.unwrap() != Some(client.clone()) {
            assert!(started.elapsed() < Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(a.delete_client("api", "c").await.unwrap());
        let started = Instant::now();
        while b.get_client("api", "c").await.unwrap().is_some() {
            assert!(started.elapsed() < Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A policy written on one node moves another node's policy epoch within 100 ms (so its cache is
    /// dropped); while a node's subscription is down its epoch is `None` (nothing cached is trusted),
    /// and when the subscription returns the epoch has moved (changes missed meanwhile are reloaded).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn policy_changes_reach_another_node() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let a = RedisStore::connect(&cfg).await.unwrap();
        let b = RedisStore::connect(&cfg).await.unwrap();
        let mut policy = StoredPolicy {
            id: "gold".into(),
            rate_limit: None,
            quota: None,
            scopes: None,
            access: vec![],
            created_at: 1,
            updated_at: 1,
        };
        async fn moves_within_100ms(b: &RedisStore, before: Option<u64>) {
            let started = Instant::now();
            while b.policy_epoch() == before {
                assert!(
                    started.elapsed() < Duration::from_millis(100),
                    "the other node did not hear of the change within 100 ms"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let before = b.policy_epoch();
        assert!(before.is_some());
        assert!(a.put_policy(&policy, PolicyWrite::Create).await.unwrap());
        moves_within_100ms(&b, before).await;
        assert_eq!(b.get_policy("gold").await.unwrap(), Some(policy.clone()));

        policy.scopes = Some(vec!["read".into()]);
        let before = b.policy_epoch();
        assert!(a.put_policy(&policy, PolicyWrite::Replace).await.unwrap());
        moves_within_100ms(&b, before).await;
        assert_eq!(b.get_policy("gold").await.unwrap(), Some(policy.clone()));

        let before = b.policy_epoch();
        assert!(a.delete_policy("gold").await.unwrap());
        moves_within_100ms(&b, before).await;

        // A refused write publishes nothing and moves no other node.
        let before = b.policy_epoch();
        assert!(!a.put_policy(&policy, PolicyWrite::Replace).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(b.policy_epoch(), before);

        // Subscription lost: no epoch; back: a new one.
        let killed = raw_command(server.port(), "CLIENT KILL TYPE pubsub").unwrap();
        assert!(killed.starts_with(':'), "{killed}");
        let started = Instant::now();
        while b.policy_epoch().is_some() && b.policy_epoch() == before {
            assert!(started.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        while b.policy_epoch().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not resubscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(b.policy_epoch(), before);
    }

    /// Redis down: every call fails with `Unavailable` within the timeout, revocation checks go on
    /// locally, the limiter follows `on_storage_error`; Redis back: everything recovers by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_then_back() {
        let mut server = RedisServer::start();
        let timeout = Duration::from_millis(250);
        let cfg = config(&server, timeout);
        let a = RedisStore::connect(&cfg).await.unwrap();
        let b = RedisStore::connect(&cfg).await.unwrap();
        let limiter = a.limiter();
        let now = t0();
        a.revoke_session("revoked-before", now + 600).await.unwrap();

        server.stop();
        for _ in 0..3 {
            let started = Instant::now();
            let err = a.get_session("x").await.unwrap_err();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
            assert!(
                started.elapsed() < timeout + Duration::from_millis(150),
                "{:?}",
                started.elapsed()
            );
            let started = Instant::now();
            assert!(matches!(a.ping().await, Err(StoreError::Unavailable(_))));
            // Bounded by the timeout (plus slack for a loaded machine), never a hang.
            assert!(started.elapsed() < timeout + Duration::from_secs(1));
        }
        assert!(a.is_revoked("revoked-before", "", now));
        assert!(b.is_revoked("revoked-before", "", now));
        let rate = |choice| RateLimit {
            rate: 1,
            per: Duration::from_secs(60),
            on_storage_error: choice,
            exact: false,
        };
        let local = rate(OnStorageError::Local);
        assert_eq!(
            limiter
                .check("k", Some(&local), None, now)
                .await
                .unwrap()
                .refused,
            None
        );
        assert!(matches!(
            limiter
                .check("k", Some(&local), None, now)
                .await
                .unwrap()
                .refused,
            Some(Refused::RateLimit { .. })
        ));
        let allow = rate(OnStorageError::Allow);
        assert_eq!(
            limiter
                .check("k", Some(&allow), None, now)
                .await
                .unwrap()
                .refused,
            None
        );
        let deny = rate(OnStorageError::Deny);
        assert!(limiter.check("k", Some(&deny), None, now).await.is_err());
        assert_eq!(
            crate::limits::Limiter::storage_errors(&limiter),
            vec![("local", 2), ("allow", 1), ("deny", 1)]
        );

        server.restart();
        let started = Instant::now();
        while a.ping().await.is_err() || b.ping().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no recovery after redis came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Both subscriptions come back, and revocations flow again.
        let started = Instant::now();
        while !(a.subscribed() && b.subscribed()) {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.revoke_jti("after-restart", now + 600).await.unwrap();
        let started = Instant::now();
        while !b.is_revoked("", "after-restart", now) {
            assert!(started.elapsed() < Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Revocations held locally survive the (empty) restarted Redis.
        assert!(b.is_revoked("revoked-before", "", now));
        let d = limiter.check("k", Some(&deny), None, now).await.unwrap();
        assert_eq!(d.refused, None);
    }

    /// A Redis that accepts but never answers (frozen): every call still ends within the timeout, and
    /// the node recovers once it answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hanging_redis_answers_unavailable_within_the_timeout() {
        let server = RedisServer::start();
        let timeout = Duration::from_millis(250);
        let store = RedisStore::connect(&config(&server, timeout))
            .await
            .unwrap();
        let limiter = store.limiter();
        let deny = RateLimit {
            rate: 100,
            per: Duration::from_secs(1),
            on_storage_error: OnStorageError::Deny,
            exact: false,
        };
        let pid = server.pid();
        let frozen = server.freeze();
        for _ in 0..(REBUILD_AFTER_TIMEOUTS + 2) {
            let started = Instant::now();
            assert!(matches!(
                store.put_session(&session("s", t0()), 100).await,
                Err(StoreError::Unavailable(_))
            ));
            assert!(limiter.check("k", Some(&deny), None, 0).await.is_err());
            assert!(
                started.elapsed() < 2 * timeout + Duration::from_millis(200),
                "{:?}",
                started.elapsed()
            );
        }
        drop(frozen);
        let started = Instant::now();
        while store.ping().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.put_session(&session("s", t0()), 100).await.unwrap();
        assert_eq!(server.pid(), pid);
    }

    /// The whole contract, the limiter and propagation work on a Redis Cluster too (every script's
    /// keys in one slot, pub/sub reaching subscribers on other nodes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_cluster() {
        let cluster = RedisCluster::start();
        let cfg = cluster_config(&cluster, TIMEOUT);
        crate::store::contract::run_all(|| async {
            RedisStore::connect(&cfg)
                .await
                .expect("connect to the cluster") as Arc<dyn Store>
        })
        .await;

        // Two nodes subscribed on different cluster nodes.
        let mut cfg_a = cfg.clone();
        cfg_a.cluster.rotate_left(1);
        let a = RedisStore::connect(&cfg_a).await.unwrap();
        let b = RedisStore::connect(&cfg).await.unwrap();
        let now = t0();
        a.revoke_session("cluster-sid", now + 600).await.unwrap();
        let started = Instant::now();
        while !b.is_revoked("cluster-sid", "", now) {
            assert!(started.elapsed() < Duration::from_millis(100));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rate = RateLimit {
            rate: 2,
            per: Duration::from_secs(60),
            on_storage_error: OnStorageError::Deny,
            exact: false,
        };
        let quota = Quota {
            max: 5,
            period: Duration::from_secs(60),
        };
        let (la, lb) = (a.limiter(), b.limiter());
        let mut refused = Vec::new();
        for limiter in [&la, &lb, &la] {
            let d = limiter
                .check("session:c", Some(&rate), Some(&quota), now)
                .await
                .unwrap();
            refused.push(d.refused.is_some());
        }
        assert_eq!(refused, vec![false, false, true]);
        let client = StoredClient {
            api_id: "api".into(),
            client_id: "c".into(),
            secret_hash: None,
            redirect_uris: vec![],
            grant_types: vec![],
            scopes: vec![],
            policy: None,
            claims: Default::default(),
            created_at: 1,
        };
        a.put_client(&client).await.unwrap();
        assert_eq!(b.get_client("api", "c").await.unwrap(), Some(client));
    }

    /// Nothing to connect to at start: a clear error, quickly.
    #[tokio::test]
    async fn connect_fails_fast_when_redis_is_down() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = RedisConfig {
            url: Some(format!("redis://127.0.0.1:{port}/")),
            cluster: vec![],
            key_prefix: "x:".into(),
            timeout: Duration::from_millis(250),
        };
        let started = Instant::now();
        let err = RedisStore::connect(&cfg).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    /// Two limiters on two nodes draw on one budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_are_shared_between_nodes() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let a = RedisStore::connect(&cfg).await.unwrap().limiter();
        let b = RedisStore::connect(&cfg).await.unwrap().limiter();
        let now = t0();
        let rate = RateLimit {
            rate: 4,
            per: Duration::from_secs(60),
            on_storage_error: OnStorageError::Deny,
            exact: false,
        };
        let mut passed = 0;
        for i in 0..10 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            if limiter
                .check("shared", Some(&rate), None, now)
                .await
                .unwrap()
                .refused
                .is_none()
            {
                passed += 1;
            }
        }
        assert_eq!(passed, 4, "the burst is shared");

        let quota = Quota {
            max: 3,
            period: Duration::from_secs(3600),
        };
        let mut remaining = Vec::new();
        for i in 0..5 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            let d = limiter.check("q", None, Some(&quota), now).await.unwrap();
            remaining.push((d.refused.is_some(), d.quota.unwrap().remaining));
        }
        assert_eq!(
            remaining,
            vec![(false, 2), (false, 1), (false, 0), (true, 0), (true, 0)]
        );
        // Refusals were not counted.
        let peek = b.peek("q", None, Some(&quota), now).await.unwrap();
        assert_eq!(peek.quota.unwrap().remaining, 0);
        let mut conn = server.connection().await;
        let used: i64 = redis::cmd("GET")
            .arg(format!("{}rl:{{q}}:quota", cfg.key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(used, 3);
    }

    /// Parallel checks from two nodes never let more than the burst through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checks_respect_the_burst() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let a = Arc::new(RedisStore::connect(&cfg).await.unwrap().limiter());
        let b = Arc::new(RedisStore::connect(&cfg).await.unwrap().limiter());
        let rate = RateLimit {
            rate: 10,
            per: Duration::from_secs(3600),
            on_storage_error: OnStorageError::Deny,
            exact: false,
        };
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    limiter
                        .check("race", Some(&rate), None, 0)
                        .await
                        .unwrap()
                        .refused
                        .is_none()
                })
            })
            .collect();
        let mut passed = 0;
        for task in tasks {
            passed += usize::from(task.await.unwrap());
        }
        assert_eq!(passed, 10);
    }

    /// A corrupt record is reported as such, not as an outage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_records_are_corrupt() {
        let server = RedisServer::shared();
        let cfg = config(&server, TIMEOUT);
        let store = RedisStore::connect(&cfg).await.unwrap();
        let mut conn = server.connection().await;
        let _: () = redis::cmd("SET")
            .arg(format!("{}code:bad", cfg.key_prefix))
            .arg("not json")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(matches!(
            store.take_code("bad", t0()).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
