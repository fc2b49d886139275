-- Removes a connection from its user, atomically with the user's version and online state, and
-- leaves a tombstone until the caller has appended the events (then it deletes the tombstone).
-- A retry that finds the tombstone appends the events again, unless another caller claimed it
-- within the claim time. So an unbind's events are never lost, and only a caller that stalls
-- past the claim time can cause a duplicate (with the same version).
-- KEYS[1]: the user's connections.  KEYS[2]: the user's meta.
-- ARGV: conn id, now (unix ms), reason (number), claim (ms), retention of an offline user's
--       meta (ms).
-- Returns {state, version, went offline (0/1), reason, username}; state 0: not bound (nothing to
-- do), 1: append the events, 2: another caller is appending them.
local tombField = 't:' .. ARGV[1]
local now = tonumber(ARGV[2])
local tomb = redis.call('HGET', KEYS[2], tombField)
if tomb then
  local version, offline, reason, claim = string.match(tomb, '^(%d+)|(%d)|(%d+)|(%d+)$')
  if tonumber(claim) > now then
    return {2, 0, 0, 0, ''}
  end
  redis.call('HSET', KEYS[2], tombField, version .. '|' .. offline .. '|' .. reason .. '|' .. (now + tonumber(ARGV[4])))
  return {1, tonumber(version), tonumber(offline), tonumber(reason), redis.call('HGET', KEYS[2], 'username') or ''}
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return {0, 0, 0, 0, ''}
end
local version = redis.call('HINCRBY', KEYS[2], 'version', 1)
local offline = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  offline = 1
  redis.call('HSET', KEYS[2], 'last_seen_ms', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('HSET', KEYS[2], tombField, version .. '|' .. offline .. '|' .. ARGV[3] .. '|' .. (now + tonumber(ARGV[4])))
return {1, version, offline, tonumber(ARGV[3]), redis.call('HGET', KEYS[2], 'username') or ''}
