-- Renew this consumer's claim on the entries it is still working on (resets their idle time),
-- and only those it still owns: an entry another replica took over is not taken back.
-- Called by hivebus.bus.redelivery and hivebus.agents.liveness.
-- KEYS: 1 inbox. ARGV: 1 group, 2 consumer, 3 lowest id, 4 highest id, then the entry ids.
-- Returns how many were renewed.

local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local mine = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[4], #ARGV + 1024, ARGV[2])) do
  if wanted[p[1]] then mine[#mine + 1] = p[1] end
end
if #mine > 0 then
  mine[#mine + 1] = 'JUSTID'  -- unpack() in the middle of an argument list gives only its first
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(mine))
  mine[#mine] = nil
end
return #mine
