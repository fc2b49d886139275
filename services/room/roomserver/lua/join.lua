-- Puts a connection into a room; a user's first connection publishes the `joined` event.
-- KEYS: 1 conns (hash conn -> user), 2 counts (hash user -> connections), 3 users (zset of
--       "<user id> <username>", all scores 0), 4 meta (hash seq, epoch), 5 event channel.
-- ARGV: conn id, user id, username, encoded `joined` RoomEvent, member limit.
-- Returns {-1} when the connection is in the room as another user, else
-- {user joined (0/1), last seq, epoch, member count, "<user> <name>", ...} (members by id).
local joined = 0
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    -- The name is recorded with the user's first connection only: leave finds it there.
    redis.call('ZADD', KEYS[3], 0, ARGV[2] .. ' ' .. ARGV[3])
    redis.call('PUBLISH', KEYS[5], ARGV[4])
    joined = 1
  end
elseif cur ~= ARGV[2] then
  return {-1}
end
local meta = redis.call('HMGET', KEYS[4], 'seq', 'epoch')
local out = {joined, tonumber(meta[1] or '0'), meta[2] or '', redis.call('ZCARD', KEYS[3])}
local limit = tonumber(ARGV[5])
if limit > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, limit - 1)) do
    out[#out + 1] = m
  end
end
return out
