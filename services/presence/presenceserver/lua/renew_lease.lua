-- Creates or renews an edge's lease.
-- KEYS[1]: the leases (sorted set edge id -> deadline, unix ms).
-- ARGV: edge id, now (unix ms), new deadline (unix ms).
-- Returns 1 when the edge had no live lease (none, or lapsed), else 0.
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
if not old or tonumber(old) <= tonumber(ARGV[2]) then
  return 1
end
return 0
