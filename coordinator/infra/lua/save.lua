-- Write an agent's CURRENT state if it is still at the version the write was based on (else
-- CONFLICT <version>), and record a configuration change (from / to / reason) with it.
-- Called by hivebus.memory.state.
-- KEYS: 1 state hash, 2 config history list
-- ARGV: 1 expected version, 2 now, 3 reason, 4 history limit, then field pairs (configuration included)
-- Returns the new version.

local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return redis.error_reply('CONFLICT ' .. current)
end
local old = redis.call('HGET', KEYS[1], 'configuration') or '{}'
local fields, new = {}, nil
for i = 5, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'configuration' then new = ARGV[i + 1] end
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSET', KEYS[1], 'version', current + 1, 'updated_at', ARGV[2])
if new and new ~= old then
  redis.call('LPUSH', KEYS[2], '{"from":' .. old .. ',"to":' .. new .. ',"reason":' ..
    cjson.encode(ARGV[3]) .. ',"at":' .. ARGV[2] .. ',"version":' .. (current + 1) .. '}')
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end
return current + 1
