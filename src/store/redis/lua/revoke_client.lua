-- KEYS: client cutoffs. ARGV: channel, api_id, client_id, issued_up_to, until. Keeps the later of
-- each time, forgets cutoffs whose tokens have all expired, publishes the cutoff kept and returns it.
local api, id = ARGV[2], ARGV[3]
local field = api .. ' ' .. id
local at_, until_ = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HGET', KEYS[1], field)
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' then
    local a, u = num(c.at), num(c['until'])
    if a and a > at_ then at_ = a end
    if u and u > until_ then until_ = u end
  end
end
local record = cjson.encode({kind = 'client_cutoff', api = api, id = id, at = at_, ['until'] = until_})
redis.call('HSET', KEYS[1], field, record)
local srv = server_now()
local last = until_
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, c = pcall(cjson.decode, all[i + 1])
  local u = 0
  if ok and type(c) == 'table' then u = num(c['until']) or 0 end
  if u <= srv then redis.call('HDEL', KEYS[1], all[i]) elseif u > last then last = u end
end
redis.call('EXPIREAT', KEYS[1], at(last))
redis.call('PUBLISH', ARGV[1], record)
return {at(at_), at(until_)}
