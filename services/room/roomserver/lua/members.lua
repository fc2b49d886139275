-- Lists a room's members with their connection counts.
-- KEYS: 1 counts, 2 users.  ARGV: limit.
-- Returns {member count, user, name, count, ...}, ordered by user id. Counts are read with
-- HMGET in chunks (unpack has a limit), not one call per member.
local out = {redis.call('ZCARD', KEYS[2])}
local limit = tonumber(ARGV[1])
if limit > 0 then
  local entries = redis.call('ZRANGE', KEYS[2], 0, limit - 1)
  for from = 1, #entries, 1000 do
    local ids, names = {}, {}
    for i = from, math.min(from + 999, #entries) do
      local e = entries[i]
      local sp = string.find(e, ' ', 1, true)
      ids[#ids + 1] = string.sub(e, 1, sp - 1)
      names[#names + 1] = string.sub(e, sp + 1)
    end
    local counts = redis.call('HMGET', KEYS[1], unpack(ids))
    for i, id in ipairs(ids) do
      out[#out + 1] = id
      out[#out + 1] = names[i]
      out[#out + 1] = counts[i] or '0'
    end
  end
end
return out
