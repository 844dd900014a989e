-- KEYS: session. ARGV: base, id hash, now. Returns 1 when a live session was ended.
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
