-- KEYS: session. ARGV: base, sid, json, expires_at, now, api_id, client_id, username ('' for
-- none), max sessions per user, channel. Returns the sids of the sessions it ended.
--
-- A session with a user joins `user_sessions:<sha1(api, client, user)>` (hashed: a username may hold
-- any character, so joining the three with a separator could make two users share an index),
-- ordered by Redis's clock in microseconds. Members whose session record is gone (revoked, expired)
-- are dropped first; then, beyond the cap, the oldest are revoked like `revoke_session`.
local base, sid, now = ARGV[1], ARGV[2], tonumber(ARGV[5])
if revoked(base, sid, now) then return {} end
local exp = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[3], 'EXAT', at(exp))
local index = base .. 'client_sessions:' .. ARGV[6] .. ':' .. ARGV[7]
redis.call('ZADD', index, at(exp), sid)
maintain(index, now)
local ended = {}
if ARGV[8] ~= '' then
  local users = base .. 'user_sessions:' .. redis.sha1hex(ARGV[6] .. '\n' .. ARGV[7] .. '\n' .. ARGV[8])
  local t = redis.call('TIME')
  local srv = tonumber(t[1])
  for _, m in ipairs(redis.call('ZRANGE', users, 0, -1)) do
    if redis.call('EXISTS', base .. 'session:' .. m) == 0 then redis.call('ZREM', users, m) end
  end
  redis.call('ZADD', users, string.format('%d', srv * 1000000 + tonumber(t[2])), sid)
  local over = redis.call('ZCARD', users) - tonumber(ARGV[9])
  if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', users, 0, over - 1)) do
      local until_ = now
      local s = redis.call('GET', base .. 'session:' .. old)
      if s then
        local ok, so = pcall(cjson.decode, s)
        if ok and type(so) == 'table' then
          local e = num(so.expires_at)
          if e and e > until_ then until_ = e end
        end
      end
      revoke_session(base, ARGV[10], old, until_, srv)
      redis.call('ZREM', users, old)
      ended[#ended + 1] = old
    end
  end
  extend(users, exp, srv)
end
return ended
