-- Records a connection, or checks that an existing record says the same.
-- KEYS[1]: the connection record (hash).
-- ARGV: user id, username, edge id, bound (unix ms).
-- Returns 1 when created, 0 when it already said the same, -1 when it names another user or edge.
local cur = redis.call('HMGET', KEYS[1], 'user_id', 'edge_id')
if cur[1] then
  if cur[1] == ARGV[1] and cur[2] == ARGV[3] then
    return 0
  end
  return -1
end
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'username', ARGV[2], 'edge_id', ARGV[3], 'bound_ms', ARGV[4])
return 1
