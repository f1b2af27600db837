-- Put a dead letter back into its agent's inbox as a new delivery.
-- Called by hivebus.bus.dlq.
-- Runs with helpers.lua put in front of it (hivebus.infra.lua does; so must any other client).
-- KEYS: 1 dead letters, 2 inbox, 3 pending, 4 done, 5 status.
-- ARGV: 1 dead-letter entry id, 2 signal id ('' for an entry without a valid one), then the
--       original field pairs. Returns the new inbox entry id.

local problem = expect(KEYS[1], 'stream') or expect(KEYS[2], 'stream') or expect(KEYS[3], 'hash')
  or expect(KEYS[4], 'zset') or expect(KEYS[5], 'hash')
if problem then return redis.error_reply(problem) end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return redis.error_reply('NO_ENTRY') end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], entry .. ' 0')
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('HDEL', KEYS[5], ARGV[2])
end
redis.call('XDEL', KEYS[1], ARGV[1])
return entry
