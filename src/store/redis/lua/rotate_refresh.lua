-- KEYS: old token, new token. ARGV: base, channel, now, old hash, new hash, new json, new sid,
-- new expires_at or '', tombstone keep for never-expiring tokens, never-expiring keep.
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
