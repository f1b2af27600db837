-- Attach the outcome of a decision, once: move it from the agent's pending indexes to the ok
-- or failed ones and queue it for the coordinator's learning pass.
-- Called by hivebus.memory.decisions (DecisionLog.log_outcome), which found the decision's
-- agent from its locator: every key is in that agent's slot.
-- KEYS: 1 decision hash, 2 the agent's outcomes queue, 3 agent's pending index, 4 its
--       pending index of this type, 5 its ok / failed index, 6 the same of this type.
-- ARGV: 1 outcome JSON, 2 success (1/0), 3 decision id, 4 now
-- Returns 1; UNKNOWN_DECISION or HAS_OUTCOME as errors, before any write.

if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_DECISION') end
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return redis.error_reply('HAS_OUTCOME') end
local at = tonumber(redis.call('HGET', KEYS[1], 'timestamp')) or tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'outcome', ARGV[1], 'success', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[5], at, ARGV[3])
redis.call('ZADD', KEYS[6], at, ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
