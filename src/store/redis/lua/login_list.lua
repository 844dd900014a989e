-- KEYS: user index. ARGV: base, now. Returns {hash, json, hash, json, ...} of live sessions.
local out = {}
for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. at(tonumber(ARGV[2])), '+inf')) do
  local v = redis.call('GET', ARGV[1] .. 'ls:' .. h)
  if v then
    out[#out + 1] = h
    out[#out + 1] = v
  end
end
return out
