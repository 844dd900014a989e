-- KEYS: the per-address counter, the per-(subject, address) counter and, when a token is counted
-- with the admission, the API's stateless-count hash. ARGV: now, window, limit and, with the third
-- key, the client's count field, its `last` field, the token's issue time and the hash's TTL.
-- An attempt whose secret is known to be right: refused exactly as reserve_attempt refuses (same
-- check, nothing counted; returns the seconds until the window of a full counter ends), else the
-- counters are left as reserve_attempt then release_attempt `success` leave them, and the token is
-- counted as count_stateless counts it. Returns 0 when admitted.
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
for i = 1, 2 do
  local ends = tonumber(redis.call('HGET', KEYS[i], 'ends') or '0')
  if ends > now and tonumber(redis.call('HGET', KEYS[i], 'count') or '0') >= limit then
    wait = math.max(wait, ends - now)
  end
end
if wait > 0 then return wait end
-- The address: a live window keeps its count (+1, then -1); without one, a window begins with
-- nothing counted in it. The subject's counter starts over, as after any success.
if tonumber(redis.call('HGET', KEYS[1], 'ends') or '0') <= now then
  redis.call('HSET', KEYS[1], 'count', 0, 'ends', at(now + window))
  redis.call('EXPIREAT', KEYS[1], at(now + window))
end
redis.call('DEL', KEYS[2])
if KEYS[3] then
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
return 0
