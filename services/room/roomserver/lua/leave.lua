-- Takes a connection out of a room; a user's last connection out publishes the `left` event.
-- When the last member leaves, the membership keys are empty, and Redis deletes them (the
-- members version is deleted here).
-- KEYS: 1 conns, 2 counts, 3 users, 4 event channel, 5 members version (as in join.lua).
-- ARGV: conn id, encoded `left` RoomEvent without user id and username (appended here:
--       concatenated protobuf messages merge), the window (as in join.lua).
-- Returns {was member (0/1), user left (0/1)}.
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then
  return {0, 0}
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], user, -1) > 0 then
  return {1, 0}
end
redis.call('HDEL', KEYS[2], user)
-- The user's entry is "<user> <name>": the only member from "<user> " up to "<user>!" ('!'
-- follows the space, and ids hold neither).
local name = ''
local inWindow = false
for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], '[' .. user .. ' ', '(' .. user .. '!')) do
  inWindow = inWindow or redis.call('ZRANK', KEYS[3], m) < tonumber(ARGV[3])
  redis.call('ZREM', KEYS[3], m)
  name = string.sub(m, #user + 2)
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[5])
elseif inWindow then
  bump_members_version(KEYS[5])
end
-- RoomEvent.left (3) { user_id (2), username (3) }
redis.call('PUBLISH', KEYS[4], ARGV[2] .. pb_bytes(3, pb_bytes(2, user) .. pb_bytes(3, name)))
return {1, 1}
