-- KEYS: code. ARGV: now. Spends a live code (its record becomes a tombstone naming the session).
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
