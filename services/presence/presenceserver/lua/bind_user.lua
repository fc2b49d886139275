-- Adds a connection to its user, atomically with the user's version and online state.
-- KEYS[1]: the user's connections (hash conn id -> "<edge id>|<bound unix ms>").
-- KEYS[2]: the user's meta (hash: version, username, last_seen_ms, and unbind tombstones).
-- ARGV: conn id, edge id, now (unix ms), username.
-- Returns {added (0/1), version, came online (0/1)}.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3]) == 0 then
  return {0, tonumber(redis.call('HGET', KEYS[2], 'version') or '0'), 0}
end
local version = redis.call('HINCRBY', KEYS[2], 'version', 1)
redis.call('HSET', KEYS[2], 'username', ARGV[4], 'last_seen_ms', ARGV[3])
-- An online user's meta never expires; see unbind_user.lua.
redis.call('PERSIST', KEYS[2])
local online = 0
if redis.call('HLEN', KEYS[1]) == 1 then
  online = 1
end
return {1, version, online}
