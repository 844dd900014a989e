-- KEYS: the per-address counter, the per-(subject, address) counter. ARGV: now, `success` or
-- `not_evaluated`. Gives the attempt back to the address (and, when not evaluated, to the subject);
-- a success deletes the subject's counter. Counters whose window is over are left alone.
local now = tonumber(ARGV[1])
local function give_back(key)
  local ends = tonumber(redis.call('HGET', key, 'ends') or '0')
  if ends > now and tonumber(redis.call('HGET', key, 'count') or '0') > 0 then
    redis.call('HINCRBY', key, 'count', -1)
  end
end
give_back(KEYS[1])
if ARGV[2] == 'success' then redis.call('DEL', KEYS[2]) else give_back(KEYS[2]) end
return 0
