-- Store one item and index it, atomically (every key is declared: the client names them).
-- Called by hivebus.memory.stm; the indexes are described in hivebus.memory.stm_index.
-- KEYS: 1 item hash, 2 time index, 3 expiry index, 4 terms hash, then the rank-keyed indexes
--       (ARGV[6] of them), then the time-keyed ones.
-- ARGV: 1 item id, 2 timestamp, 3 rank key, 4 expires at (s), 5 ttl ms, 6 rank-keyed count,
--       7 terms, 8 now (s), then the item's field/value pairs.
-- Returns how many of the scope's items have expired (index entries waiting to be purged).

local id, ts, rank, ranked = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[6])
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ts, id)
redis.call('ZADD', KEYS[3], ARGV[4], id)
redis.call('HSET', KEYS[4], id, ARGV[7])
for i = 5, 4 + ranked do redis.call('ZADD', KEYS[i], rank, id) end
for i = 5 + ranked, #KEYS do redis.call('ZADD', KEYS[i], ts, id) end
return redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[8])
