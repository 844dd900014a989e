-- Helpers prepended to every store script.
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
