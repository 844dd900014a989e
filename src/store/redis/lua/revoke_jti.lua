-- KEYS: revoked tokens. ARGV: base, channel, jti, until.
return at(revoke(ARGV[1], ARGV[2], 'jti', ARGV[3], tonumber(ARGV[4]), server_now()))
