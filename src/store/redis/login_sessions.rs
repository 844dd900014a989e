//! Login sessions in Redis (see `Store::put_login_session`).
//!
//! Keys, under one hash tag so each script touches one cluster slot:
//! - `<prefix>{login}:ls:<id hash>`: the session as JSON, expiring with it (`EXAT`);
//! - `<prefix>{login}:user:<username>`: sorted set of the user's id hashes scored by expiry, expiring
//!   with its last member. It is the per-user bound and the admin listing.
//!
//! Every write is one script, so the bound holds whatever nodes sign users in at once.

use std::sync::OnceLock;

use redis::Script;

use super::{LUA_COMMON, RedisStore, clamp_time, corrupt, now_secs};
use crate::store::{LoginSession, StoreResult};

/// KEYS: session, user index. ARGV: json, expires_at, max per user, now, base, id hash.
const LUA_PUT: &str = r#"
local now = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', at(tonumber(ARGV[2])))
redis.call('ZADD', KEYS[2], at(tonumber(ARGV[2])), ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', at(now))
-- Beyond the bound, the sessions that expire first (the oldest, for one lifetime) are forgotten.
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, h in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('DEL', ARGV[5] .. 'ls:' .. h)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
maintain(KEYS[2], now)
return 1
"#;

/// KEYS: session. ARGV: base, id hash, now. Returns 1 when a live session was ended.
const LUA_END: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local s = decode(v)
redis.call('DEL', KEYS[1])
if type(s.username) == 'string' then
  redis.call('ZREM', ARGV[1] .. 'user:' .. s.username, ARGV[2])
end
local e = num(s.expires_at) or 0
if e > tonumber(ARGV[3]) then return 1 end
return 0
"#;

/// KEYS: user index. ARGV: base, now. Returns {hash, json, hash, json, ...} of live sessions.
const LUA_LIST: &str = r#"
local out = {}
for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. at(tonumber(ARGV[2])), '+inf')) do
  local v = redis.call('GET', ARGV[1] .. 'ls:' .. h)
  if v then
    out[#out + 1] = h
    out[#out + 1] = v
  end
end
return out
"#;

/// KEYS: user index. ARGV: base, now. Returns how many live sessions were ended.
const LUA_END_USER: &str = r#"
local now, n = tonumber(ARGV[2]), 0
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[1] .. 'ls:' .. h
  local v = redis.call('GET', k)
  if v then
    local ok, s = pcall(cjson.decode, v)
    if ok and type(s) == 'table' and (num(s.expires_at) or 0) > now then n = n + 1 end
    redis.call('DEL', k)
  end
end
redis.call('DEL', KEYS[1])
return n
"#;

struct Scripts {
    put: Script,
    end: Script,
    list: Script,
    end_user: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let script = |body: &str| Script::new(&format!("{LUA_COMMON}\n{body}"));
        Scripts {
            put: script(LUA_PUT),
            end: script(LUA_END),
            list: script(LUA_LIST),
            end_user: script(LUA_END_USER),
        }
    })
}

impl RedisStore {
    fn login_base(&self) -> String {
        format!("{}{{login}}:", self.keys.prefix)
    }

    pub(super) async fn login_put(
        &self,
        id_hash: &str,
        session: &LoginSession,
        max_per_user: u32,
    ) -> StoreResult<()> {
        let base = self.login_base();
        let json = Self::to_json(session)?;
        let mut conn = self.backend.conn();
        let _: i64 = self
            .backend
            .bounded(
                scripts()
                    .put
                    .key(format!("{base}ls:{id_hash}"))
                    .key(format!("{base}user:{}", session.username))
                    .arg(json)
                    .arg(clamp_time(session.expires_at))
                    .arg(max_per_user.max(1))
                    .arg(now_secs())
                    .arg(&base)
                    .arg(id_hash)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn login_get(
        &self,
        id_hash: &str,
        now: u64,
    ) -> StoreResult<Option<LoginSession>> {
        let mut conn = self.backend.conn();
        let raw: Option<String> = self
            .backend
            .bounded(
                redis::cmd("GET")
                    .arg(format!("{}ls:{id_hash}", self.login_base()))
                    .query_async(&mut conn),
            )
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let session: LoginSession =
            serde_json::from_str(&raw).map_err(|e| corrupt("login session", e))?;
        Ok((now < session.expires_at).then_some(session))
    }

    pub(super) async fn login_end(&self, id_hash: &str, now: u64) -> StoreResult<bool> {
        let base = self.login_base();
        let mut conn = self.backend.conn();
        let ended: i64 = self
            .backend
            .bounded(
                scripts()
                    .end
                    .key(format!("{base}ls:{id_hash}"))
                    .arg(&base)
                    .arg(id_hash)
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(ended == 1)
    }

    pub(super) async fn login_of_user(
        &self,
        username: &str,
        now: u64,
    ) -> StoreResult<Vec<(String, LoginSession)>> {
        let base = self.login_base();
        let mut conn = self.backend.conn();
        let flat: Vec<String> = self
            .backend
            .bounded(
                scripts()
                    .list
                    .key(format!("{base}user:{username}"))
                    .arg(&base)
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            if let [hash, json] = pair {
                let session: LoginSession =
                    serde_json::from_str(json).map_err(|e| corrupt("login session", e))?;
                if now < session.expires_at {
                    out.push((hash.clone(), session));
                }
            }
        }
        // Oldest first, like the memory store (the index is ordered by expiry).
        out.sort_by_key(|(_, s)| s.auth_time);
        Ok(out)
    }

    pub(super) async fn login_end_user(&self, username: &str, now: u64) -> StoreResult<u64> {
        let base = self.login_base();
        let mut conn = self.backend.conn();
        let ended: u64 = self
            .backend
            .bounded(
                scripts()
                    .end_user
                    .key(format!("{base}user:{username}"))
                    .arg(&base)
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(ended)
    }
}
