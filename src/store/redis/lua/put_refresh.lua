-- KEYS: refresh token. ARGV: base, hash, json, sid, expires_at or '', now, never-expiring keep.
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
