-- Lists a room's members.
-- KEYS: 1 counts, 2 users, 3 names.  ARGV: limit.
-- Returns {member count, user, name, count, ...}.
local count, members = list_members(KEYS[2], KEYS[3], KEYS[1], tonumber(ARGV[1]))
local out = {count}
for _, v in ipairs(members) do
  out[#out + 1] = v
end
return out
