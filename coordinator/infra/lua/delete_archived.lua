-- Delete decisions the store has archived from Redis, if this coordinator still holds the lease
-- (else NOT_LEADER, and nothing is deleted). Called by hivebus.service.consolidation.
-- KEYS: 1 lease, 2-5 the agent's decision indexes (all, pending, ok, failed), then per decision
--       its hash, its caused-signals set and its type's four indexes.
-- ARGV: 1 lease token, then the decision ids.
-- Returns how many decision ids it was given (each one deleted).

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOT_LEADER') end
for i = 2, #ARGV do
  local base = 6 + 6 * (i - 2)
  redis.call('DEL', KEYS[base], KEYS[base + 1])
  for k = 2, 5 do redis.call('ZREM', KEYS[k], ARGV[i]) end
  for k = base + 2, base + 5 do redis.call('ZREM', KEYS[k], ARGV[i]) end
end
return #ARGV - 1
