-- Publishes a message: checks membership and the client_msg_id, assigns the next seq (starting a
-- new epoch when the room has none or its history was lost), appends the history, and
-- publishes the event, all at once, so seqs have no gaps and pub/sub order is seq order.
-- KEYS: 1 conns, 2 meta, 3 history stream, 4 dedup key, 5 event channel.
-- ARGV: 1 conn id, 2 user id, 3 candidate epoch, 4 encoded `message` RoomEvent without seq and
--       epoch (appended here), 5 history cap, 6 idle TTL (ms), 7 dedup window (ms, 0: none),
--       8 the message's time (unix ms).
-- Returns {-1} when the connection is not in the room as that user; {0, seq, epoch, ts} for a
-- repeated client_msg_id (the first message's); {1, seq, epoch, ts} when published.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return {-1}
end
if ARGV[7] ~= '0' then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    local seq, ts, epoch = string.match(prev, '^(%d+)|(%d+)|(.*)$')
    return {0, tonumber(seq), epoch, tonumber(ts)}
  end
end
local meta = redis.call('HMGET', KEYS[2], 'seq', 'epoch')
local seq = tonumber(meta[1] or '0')
local epoch = meta[2]
if not epoch or (seq > 0 and redis.call('EXISTS', KEYS[3]) == 0) then
  epoch = ARGV[3]
  seq = 0
  redis.call('DEL', KEYS[3])
end
seq = seq + 1
redis.call('HSET', KEYS[2], 'seq', seq, 'epoch', epoch)
-- RoomEvent.message (1) { seq (2), epoch (3) }
local event = ARGV[4] .. pb_bytes(1, pb_uint(2, seq) .. pb_bytes(3, epoch))
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[5], seq .. '-0', 'e', event)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
if ARGV[7] ~= '0' then
  redis.call('SET', KEYS[4], seq .. '|' .. ARGV[8] .. '|' .. epoch, 'PX', ARGV[7])
end
redis.call('PUBLISH', KEYS[5], event)
return {1, seq, epoch, tonumber(ARGV[8])}
