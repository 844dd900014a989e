-- KEYS: policies. ARGV: mode (create | replace | delete), id, json (unused for delete), channel,
-- message. The existence check, the write and the invalidation are one step, so two nodes creating
-- the same id cannot both succeed. Returns 1 when it wrote (or deleted), 0 when the mode forbade it.
local exists = redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1
if ARGV[1] == 'create' then
  if exists then return 0 end
elseif not exists then
  return 0
end
if ARGV[1] == 'delete' then
  redis.call('HDEL', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
