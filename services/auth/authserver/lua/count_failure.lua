-- Counts one failed login in a fixed window.
-- KEYS[1]: the counter.  ARGV[1]: window in milliseconds.
-- The window starts at the first failure; later failures do not extend it.
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
