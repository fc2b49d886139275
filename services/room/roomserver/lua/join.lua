-- Puts a connection into a room; a user's first connection publishes the `joined` event.
-- KEYS: 1 conns (hash conn -> user), 2 counts (hash user -> connections), 3 users (zset, by
--       id), 4 names (hash user -> username), 5 meta (hash seq, epoch), 6 event channel.
-- ARGV: conn id, user id, username, encoded `joined` RoomEvent, member limit.
-- Returns {-1} when the connection is in the room as another user, else
-- {user joined (0/1), last seq, epoch, member count, user, name, count, user, name, count, ...}.
local joined = 0
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    redis.call('ZADD', KEYS[3], 0, ARGV[2])
    redis.call('PUBLISH', KEYS[6], ARGV[4])
    joined = 1
  end
elseif cur ~= ARGV[2] then
  return {-1}
end
local meta = redis.call('HMGET', KEYS[5], 'seq', 'epoch')
local count, members = list_members(KEYS[3], KEYS[4], KEYS[2], tonumber(ARGV[5]))
local out = {joined, tonumber(meta[1] or '0'), meta[2] or '', count}
for _, v in ipairs(members) do
  out[#out + 1] = v
end
return out
