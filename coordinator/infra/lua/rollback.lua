-- Restore a kept snapshot as an agent's CURRENT state, at a new version, recording the
-- configuration change and a ROLLBACK snapshot (UNKNOWN_SNAPSHOT if it is not kept).
-- Called by hivebus.memory.state.
-- KEYS: 1 state hash, 2 snapshots list, 3 config history list
-- ARGV: 1 snapshot id to restore, 2 new ROLLBACK snapshot id, 3 now, 4 history limit, 5 config limit
-- Returns the new version.

local target = nil
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local ok, snap = pcall(cjson.decode, raw)  -- a snapshot edited into nonsense is passed over
  if ok and type(snap) == 'table' and snap.snapshot_id == ARGV[1] and type(snap.state) == 'table' then
    target = snap; break
  end
end
if not target then return redis.error_reply('UNKNOWN_SNAPSHOT') end
local state = target.state
-- a CURRENT state edited into nonsense is replaced: its version counts if readable
local current = math.max(tonumber(redis.call('HGET', KEYS[1], 'version') or '0') or 0,
  tonumber(state.version) or 0)
local old = redis.call('HGET', KEYS[1], 'configuration') or '{}'
if not pcall(cjson.decode, old) then old = '{}' end
state.version = tostring(current + 1)
state.state_type = 'CURRENT'
state.updated_at = ARGV[3]
redis.call('DEL', KEYS[1])
for k, v in pairs(state) do redis.call('HSET', KEYS[1], k, v) end
local new = state.configuration or '{}'
if new ~= old then
  redis.call('LPUSH', KEYS[3], '{"from":' .. old .. ',"to":' .. new .. ',"reason":' ..
    cjson.encode('rollback to ' .. ARGV[1]) .. ',"at":' .. ARGV[3] .. ',"version":' ..
    (current + 1) .. '}')
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
end
redis.call('LPUSH', KEYS[2], cjson.encode({snapshot_id = ARGV[2], state_type = 'ROLLBACK',
  created_at = tonumber(ARGV[3]), label = 'rollback to ' .. ARGV[1], rolled_back_to = ARGV[1],
  state = state}))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return current + 1
