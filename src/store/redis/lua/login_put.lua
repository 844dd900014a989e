-- KEYS: session, user index. ARGV: json, expires_at, max per user, now, base, id hash.
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
