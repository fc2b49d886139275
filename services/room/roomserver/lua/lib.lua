-- Helpers prepended to the room scripts.

-- pb_varint encodes n as a protobuf base-128 varint.
local function pb_varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end

-- pb_bytes encodes a length-delimited field (strings, bytes, embedded messages).
local function pb_bytes(field, s)
  return pb_varint(field * 8 + 2) .. pb_varint(#s) .. s
end

-- pb_uint encodes a varint field.
local function pb_uint(field, n)
  return pb_varint(field * 8) .. pb_varint(n)
end

-- bump_members_version changes a room's members version ("<life>:<n>"): n grows, and a room
-- without one starts a new life named by the server's time in microseconds, so no version is
-- ever reused, not even after the room emptied (and lost its version) and filled again.
local function bump_members_version(key)
  local cur = redis.call('GET', key)
  local life, n
  if cur then
    life, n = string.match(cur, '^(.*):(%d+)$')
  end
  if not life then
    local t = redis.call('TIME')
    life, n = t[1] .. string.format('%06d', tonumber(t[2])), 0
  end
  local v = life .. ':' .. (tonumber(n) + 1)
  redis.call('SET', key, v)
  return v
end
