-- Removes an edge's lease if it is still lapsed since before a cutoff (not renewed meanwhile).
-- KEYS[1]: the leases.  ARGV: edge id, cutoff (unix ms).
-- Returns 1 when removed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
