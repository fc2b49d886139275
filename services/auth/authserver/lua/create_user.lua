-- Creates a user record only if the username is free.
-- KEYS[1]: the user hash.  ARGV: id, username, phc hash, created (unix ms).
-- Returns 1 when created, 0 when the username was taken.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'username', ARGV[2], 'phc', ARGV[3], 'created_ms', ARGV[4])
return 1
