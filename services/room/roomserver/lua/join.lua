-- Puts a connection into a room; a user's first connection publishes the `joined` event.
-- KEYS: 1 conns (hash conn -> user), 2 counts (hash user -> connections), 3 users (zset of
--       "<user id> <username>", all scores 0), 4 meta (hash seq, epoch), 5 event channel,
--       6 members version (string, see bump_members_version).
-- ARGV: conn id, user id, username, encoded `joined` RoomEvent, member limit, the members
--       version the caller holds ('' for none), the window (the most members any join lists:
--       a change within it changes the version).
-- Returns {-1} when the connection is in the room as another user, else
-- {user joined (0/1), last seq, epoch, member count, members version, unchanged (0/1),
--  "<user> <name>", ...} (members by id; none when unchanged).
local joined = 0
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    -- The name is recorded with the user's first connection only: leave finds it there.
    local entry = ARGV[2] .. ' ' .. ARGV[3]
    redis.call('ZADD', KEYS[3], 0, entry)
    if redis.call('ZRANK', KEYS[3], entry) < tonumber(ARGV[7]) then
      version = bump_members_version(KEYS[6])
    end
    redis.call('PUBLISH', KEYS[5], ARGV[4])
    joined = 1
  end
elseif cur ~= ARGV[2] then
  return {-1}
end
version = version or redis.call('GET', KEYS[6]) or bump_members_version(KEYS[6])
local meta = redis.call('HMGET', KEYS[4], 'seq', 'epoch')
local unchanged = 0
if version == ARGV[6] then
  unchanged = 1
end
local out = {joined, tonumber(meta[1] or '0'), meta[2] or '', redis.call('ZCARD', KEYS[3]), version, unchanged}
local limit = tonumber(ARGV[5])
if limit > 0 and unchanged == 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, limit - 1)) do
    out[#out + 1] = m
  end
end
return out
