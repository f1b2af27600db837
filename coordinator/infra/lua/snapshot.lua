-- Keep a copy of an agent's CURRENT state in its bounded snapshots list (NO_STATE if it has none).
-- Called by hivebus.memory.state.
-- KEYS: 1 state hash, 2 snapshots list
-- ARGV: 1 snapshot id, 2 state type, 3 now, 4 label, 5 history limit
-- Returns the snapshot id.

local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return redis.error_reply('NO_STATE') end
local state = {}
for i = 1, #flat, 2 do state[flat[i]] = flat[i + 1] end
redis.call('LPUSH', KEYS[2], cjson.encode({snapshot_id = ARGV[1], state_type = ARGV[2],
  created_at = tonumber(ARGV[3]), label = ARGV[4], state = state}))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return ARGV[1]
