-- Delete decisions the store has archived from Redis, in one agent's slot, unless a coordinator
-- of a newer epoch has deleted there already (else STALE_EPOCH <fence>, and nothing is deleted).
-- Called by hivebus.service.consolidation. The durable store's epoch is the main guard (a
-- deposed leader's archive write is refused before it gets here); this fence keeps its late
-- deletions out of a slot a newer leader has worked in, without reading the lease (another slot).
-- KEYS: 1 the agent's fence (highest epoch that deleted here), 2-5 the agent's decision indexes
--       (all, pending, ok, failed), then per decision its hash, its caused-signals set and its
--       type's four indexes.
-- ARGV: 1 the coordinator's epoch, then the decision ids.
-- Returns how many decision ids it was given (each one deleted).

local epoch = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if not epoch or epoch < fence then return redis.error_reply('STALE_EPOCH ' .. fence) end
if epoch > fence then redis.call('SET', KEYS[1], ARGV[1]) end
for i = 2, #ARGV do
  local base = 6 + 6 * (i - 2)
  redis.call('DEL', KEYS[base], KEYS[base + 1])
  for k = 2, 5 do redis.call('ZREM', KEYS[k], ARGV[i]) end
  for k = base + 2, base + 5 do redis.call('ZREM', KEYS[k], ARGV[i]) end
end
return #ARGV - 1
