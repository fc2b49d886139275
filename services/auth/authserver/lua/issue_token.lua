-- Stores a token record (by the token's hash) with its expiry.
-- KEYS[1]: the token hash key.  ARGV: user id, username, expiry (unix ms), ttl (ms).
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'username', ARGV[2], 'exp_ms', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
