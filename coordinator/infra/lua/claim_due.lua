-- Claim the failed entries whose retry time has come.
-- Called by hivebus.bus.redelivery.
-- KEYS: 1 inbox, 2 retry schedule. ARGV: 1 group, 2 consumer, 3 now (seconds), 4 count.
-- A schedule member that is not an entry id of this inbox is removed and returned (set aside),
-- never passed to XCLAIM. Returns {claimed entries as XCLAIM returns them, [bad members]}.

local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
if #ids == 0 then return {{}, {}} end
redis.call('ZREM', KEYS[2], unpack(ids))
local good, bad = {}, {}
for _, id in ipairs(ids) do
  if string.match(id, '^%d+%-%d+$') and #id <= 41 then good[#good + 1] = id else bad[#bad + 1] = id end
end
local claimed = {}
if #good > 0 then
  local r = redis.pcall('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(good))
  if type(r) == 'table' and r['err'] then
    for _, id in ipairs(good) do
      local one = redis.pcall('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
      if type(one) == 'table' and one['err'] then bad[#bad + 1] = id
      else for _, c in ipairs(one) do claimed[#claimed + 1] = c end end
    end
  else
    claimed = r
  end
end
return {claimed, bad}
