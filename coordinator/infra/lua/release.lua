-- Give up the leadership lease. Called by hivebus.service.lease.
-- KEYS: 1 lease. ARGV: 1 instance id. Deletes the lease only if this instance holds it.
-- Returns 1 when it was deleted, else 0.

local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^(.*)|%d+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
