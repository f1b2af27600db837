-- Record one episodic event: in the agent's events and in its events of this type (same id),
-- with its payload words indexed; index entries of events the stream trimmed are removed, a
-- bounded batch per event. Called by hivebus.memory.events.
-- KEYS: 1 the agent's events, 2 its events of this type, 3 the word index, 4 its time index.
-- ARGV: 1 maxlen, 2 type, 3 payload, then the words to index ('' alone: too many to index).
-- Returns the event's entry id.

local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[2], 'payload', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'type', ARGV[2], 'payload', ARGV[3])
local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
local suffix = '\31' .. string.format('%015d-%010d', tonumber(ms), tonumber(seq))
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[3], 0, ARGV[i] .. suffix)
  redis.call('ZADD', KEYS[4], ms, ARGV[i] .. suffix)
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first > 0 then  -- index entries of events the stream trimmed, a bounded batch per event
  local since = tonumber(string.match(first[1][1], '^(%d+)'))
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. since, 'LIMIT', 0, 1024)
  if #old > 0 then
    redis.call('ZREM', KEYS[3], unpack(old))
    redis.call('ZREM', KEYS[4], unpack(old))
  end
end
return id
