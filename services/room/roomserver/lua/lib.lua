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
