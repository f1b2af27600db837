-- Take the leadership lease, or renew it when this instance holds it.
-- Called by hivebus.service.lease.
-- KEYS: 1 lease, 2 epoch counter. ARGV: 1 instance id, 2 ttl ms, 3 lowest epoch allowed minus 1
-- (the store's highest). Returns the epoch held by this instance, or 0 when another one holds
-- the lease. A counter edited by hand into text starts again above the floor.

local held = redis.call('GET', KEYS[1])
if held then
  local owner, epoch = string.match(held, '^(.*)|(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(epoch)
  end
  return 0
end
local floor = tonumber(ARGV[3]) or 0
local epoch = redis.pcall('INCR', KEYS[2])
if type(epoch) ~= 'number' or epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
return epoch
