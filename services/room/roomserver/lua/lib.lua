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

-- list_members returns the member count and, flattened, up to limit members ordered by user
-- id: user id, username, connection count. Names and counts are read with HMGET in chunks
-- (unpack has a limit), not one call per member.
local function list_members(users, names, counts, limit)
  local out = {}
  if limit > 0 then
    local ids = redis.call('ZRANGE', users, 0, limit - 1)
    for from = 1, #ids, 1000 do
      local chunk = {}
      for i = from, math.min(from + 999, #ids) do
        chunk[#chunk + 1] = ids[i]
      end
      local ns = redis.call('HMGET', names, unpack(chunk))
      local cs = redis.call('HMGET', counts, unpack(chunk))
      for i, u in ipairs(chunk) do
        out[#out + 1] = u
        out[#out + 1] = ns[i] or ''
        out[#out + 1] = cs[i] or '0'
      end
    end
  end
  return redis.call('ZCARD', users), out
end
