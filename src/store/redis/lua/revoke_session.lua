-- KEYS: revoked sessions. ARGV: base, channel, sid, until.
return at(revoke_session(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), server_now()))
