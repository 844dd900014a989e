-- KEYS: the per-address counter, the per-(subject, address) counter. ARGV: now, window, limit.
-- Checks both counters and counts the attempt in both, in one step: parallel guesses cannot all read
-- "below the limit" before any of them counts. Returns 0 when reserved, else the seconds until the
-- window of a full counter ends.
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
