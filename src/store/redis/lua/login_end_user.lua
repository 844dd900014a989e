-- KEYS: user index. ARGV: base, now. Returns how many live sessions were ended.
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
