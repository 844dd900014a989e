-- KEYS: clients of an API. ARGV: client_id, json (empty: delete), channel, message. Writes and
-- publishes the invalidation in one round trip (a pipeline would mix slots in a cluster).
-- Returns how many fields were deleted (0 for a write).
local n = 0
if ARGV[2] == '' then
  n = redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
