-- Expire one batch of an inbox's entries older than the retention age, then trim them.
-- Called by hivebus.service.retention.
-- Runs with helpers.lua put in front of it (hivebus.infra.lua does; so must any other client).
-- KEYS: 1 inbox, 2 pending, 3 done, 4 status, 5 dead letters, 6 agent hash.
-- ARGV: 1 group, 2 start id ('-': what is looked at is trimmed), 3 cutoff ms, 4 count, 5 now ms,
--       6 keep-until ms, 7 dead-letter maxlen.
-- An entry still unsettled (its signal pending, or in the group's pending list, or not yet
-- delivered) is marked EXPIRED, dead-lettered with the reason and acked; then every entry up
-- to the last one looked at is trimmed (all of them settled now). Returns {looked at, expired,
-- last id}.

local inbox, pending, done, status, dlq, agent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local problem = expect(inbox, 'stream') or expect(pending, 'hash') or expect(done, 'zset')
  or expect(status, 'hash') or expect(dlq, 'stream') or expect(agent, 'hash')
if problem then return redis.error_reply(problem) end
local entries = redis.call('XRANGE', inbox, ARGV[2], ARGV[3], 'COUNT', ARGV[4])
if #entries == 0 then return {0, 0, ''} end
local first, last = entries[1][1], entries[#entries][1]
local has_group, delivered = false, '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', inbox)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then has_group = true; delivered = info['last-delivered-id'] end
end
local in_pel = {}
if has_group then
  for _, p in ipairs(redis.call('XPENDING', inbox, ARGV[1], first, last, #entries + 1024)) do
    in_pel[p[1]] = true
  end
end
local function after(a, b)
  local ams, aseq = string.match(a, '^(%d+)%-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)%-(%d+)$')
  if tonumber(ams) ~= tonumber(bms) then return tonumber(ams) > tonumber(bms) end
  return tonumber(aseq) > tonumber(bseq)
end
local plan = {}
for _, e in ipairs(entries) do
  local id, flat = e[1], e[2]
  local sig = ''
  for i = 1, #flat, 2 do if flat[i] == 'id' then sig = flat[i + 1] end end
  local record = false
  if sig ~= '' then record = redis.call('HGET', pending, sig) end
  if record and string.match(record, '^(%S+)') ~= id then record = false end  -- another entry's
  local settled = sig ~= '' and not record and redis.call('ZSCORE', done, sig)
  if record or (not settled and (in_pel[id] or after(id, delivered))) then
    plan[#plan + 1] = {id, sig, record, flat}
  end
end
local acks = {}
local reason = 'expired before it was processed'
for _, p in ipairs(plan) do
  local id, sig, record, flat = p[1], p[2], p[3], p[4]
  local body = {}
  for i = 1, #flat, 2 do body[flat[i]] = flat[i + 1] end
  local attempts = attempts_of(record)
  if sig ~= '' then
    redis.call('HDEL', pending, sig)
    redis.call('ZADD', done, ARGV[6], sig)
    redis.call('HSET', status, sig, 'EXPIRED ' .. id .. ' ' .. attempts .. ' ' .. reason)
  end
  redis.call('XADD', dlq, 'MAXLEN', '~', ARGV[7], '*', 'entry', id, 'agent', ARGV[1], 'signal', sig,
    'status', 'EXPIRED', 'reason', reason, 'attempts', attempts,
    'failed_at', string.format('%.3f', tonumber(ARGV[5]) / 1000),
    'original', cjson.encode(body))
  if in_pel[id] then acks[#acks + 1] = id end
end
if #acks > 0 then redis.call('XACK', inbox, ARGV[1], unpack(acks)) end
if #plan > 0 then bump(agent, 'expired', #plan) end
redis.call('XTRIM', inbox, 'MINID', last)
redis.call('XDEL', inbox, last)
return {#entries, #plan, last}
