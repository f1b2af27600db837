-- Settle a batch an agent's consumer has handled: fenced, in one atomic step.
-- Called by hivebus.bus.bus (Bus.settle, Bus.settle_and_read).
-- Runs with helpers.lua put in front of it (hivebus.infra.lua does; so must any other client).
-- KEYS: 1 inbox, 2 pending, 3 done, 4 status, 5 retry schedule, 6 dead letters, 7 agent hash,
--       then the keys the batch's effects write (effects name them by index).
-- ARGV: 1 JSON {"g": group, "c": consumer, "now": ms, "keep": ms a settled id is remembered,
--       "dlq": dead-letter maxlen, "max": max deliveries, "base"/"cap": retry backoff ms,
--       "retain": settled entries kept in the inbox, "lo"/"hi": lowest/highest entry id,
--       "e": [[entry, signal id or '', status, reason, original JSON (for DEAD), jitter 0..1,
--              redelivered (1/0), [[command, key index, arg…], …]], …]}
-- The fence: an entry is settled only if this consumer still owns it (it is in the group's
-- pending list under this consumer) and its signal is not settled already; otherwise nothing
-- of it is applied (superseded: another replica took it over; duplicate: acked, no effects).
-- Status PROCESSED applies its effects; FAILED counts an attempt and schedules a retry (or is
-- DEAD at the max); DEAD and EXPIRED go to the dead letters. Also ages out settled ids past
-- their keep time, and trims settled entries past ``retain`` (never an unsettled one).
-- Returns {processed, failed, dead, superseded, duplicate, [entry, reason, …] of the dead}.

local arg = cjson.decode(ARGV[1])
local inbox, pending, done, status, retry, dlq, agent = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5], KEYS[6], KEYS[7]
local entries = arg.e
-- settled ids past their keep time, aged out below (a bounded number per settle)
local old = must('zset', 'ZRANGEBYSCORE', done, '-inf', arg.now, 'LIMIT', 0, 256)
-- which of the batch this consumer still owns
local owned = {}
local limit = #entries + 1024
local mine = must('stream', 'XPENDING', inbox, arg.g, arg.lo, arg.hi, limit, arg.c)
for _, p in ipairs(mine) do owned[p[1]] = true end
if #mine >= limit then
  for _, e in ipairs(entries) do
    if not owned[e[1]] then
      local one = redis.call('XPENDING', inbox, arg.g, e[1], e[1], 1, arg.c)
      if #one == 1 then owned[e[1]] = true end
    end
  end
end
-- effects: the type each command needs, checked (with the values increments need) before writing
local NEEDS = nil
local known = {}
local function is_integer(v) return v and string.match(v, '^%-?%d+$') and #v <= 18 end
local function effect_problem(effects)
  NEEDS = NEEDS or {SET = 'any', DEL = 'any', EXPIRE = 'any', PEXPIRE = 'any', INCRBY = 'string',
    INCRBYFLOAT = 'string', HSET = 'hash', HDEL = 'hash', HINCRBY = 'hash', HINCRBYFLOAT = 'hash',
    SADD = 'set', SREM = 'set', ZADD = 'zset', ZINCRBY = 'zset', ZREM = 'zset', LPUSH = 'list',
    RPUSH = 'list', LTRIM = 'list', XADD = 'stream'}
  local shadow = {}
  for n, fx in ipairs(effects) do
    local cmd, key = fx[1], KEYS[fx[2]]
    local need = NEEDS[cmd]
    if not need or not key then return 'effect ' .. n .. ': not allowed' end
    local have = shadow[key]
    if have == nil then
      have = known[key] or type_of(key)
      known[key] = have
    end
    if need ~= 'any' and have ~= 'none' and have ~= need then
      return 'effect ' .. n .. ' (' .. cmd .. '): ' .. key .. ' is a ' .. have .. ', not a ' .. need
    end
    if shadow[key] == nil and have ~= 'none' then
      local v
      if cmd == 'INCRBY' then v = redis.call('GET', key); if v and not is_integer(v) then
        return 'effect ' .. n .. ' (INCRBY): ' .. key .. ' does not hold an integer' end end
      if cmd == 'INCRBYFLOAT' then v = redis.call('GET', key); if v and not tonumber(v) then
        return 'effect ' .. n .. ' (INCRBYFLOAT): ' .. key .. ' does not hold a number' end end
      if cmd == 'HINCRBY' then v = redis.call('HGET', key, fx[3]); if v and not is_integer(v) then
        return 'effect ' .. n .. ' (HINCRBY): ' .. key .. ' ' .. fx[3] .. ' is not an integer' end end
      if cmd == 'HINCRBYFLOAT' then v = redis.call('HGET', key, fx[3]); if v and not tonumber(v) then
        return 'effect ' .. n .. ' (HINCRBYFLOAT): ' .. key .. ' ' .. fx[3] .. ' is not a number' end end
    end
    if cmd == 'DEL' then shadow[key] = 'none'
    elseif cmd == 'SET' then shadow[key] = 'string'
    elseif need ~= 'any' then shadow[key] = need
    elseif shadow[key] == nil then shadow[key] = have end
  end
  return nil
end
-- decide every entry before writing anything
local plan = {}
for n, e in ipairs(entries) do
  local entry, sig, st, reason = e[1], e[2], e[3], e[4]
  local p = {entry = entry, sig = sig, st = st, reason = reason}
  if not owned[entry] then
    p.act = 'superseded'
  else
    local record = false
    if sig ~= '' then record = must('hash', 'HGET', pending, sig) end
    if not record and sig ~= '' and redis.call('ZSCORE', done, sig) then
      p.act = 'duplicate'
    else
      p.act = 'settle'
      p.attempts = attempts_of(record) + 1
      if st == 'PROCESSED' and #e[8] > 0 then
        local why = effect_problem(e[8])
        if why then p.st, p.reason = 'DEAD', 'effect rejected: ' .. why end
      elseif st == 'FAILED' then
        if p.attempts >= arg.max then
          p.st = 'DEAD'
          p.reason = 'failed ' .. p.attempts .. ' times; last error: ' .. reason
        else
          local delay = math.min(arg.cap, arg.base * 2 ^ (p.attempts - 1))
          p.retry_at = (arg.now + delay / 2 + e[6] * delay / 2) / 1000
        end
      end
    end
  end
  plan[n] = p
end
-- the keys only some outcomes write are checked when those outcomes are there
local writes = {}
for n, p in ipairs(plan) do
  if p.act ~= 'superseded' then
    if entries[n][7] == 1 or p.st == 'FAILED' then writes.retry = true end
    if p.act == 'settle' and p.st ~= 'PROCESSED' and p.st ~= 'FAILED' then writes.dlq = true end
    if p.act == 'settle' and #entries[n][8] > 0 then writes.dlq = true end  -- an effect may fail
  end
end
if writes.retry then must('zset', 'ZCARD', retry) end
if writes.dlq or #old > 0 then must('hash', 'HLEN', status) end
if writes.dlq then must('stream', 'XLEN', dlq) end
-- write
local counts = {PROCESSED = 0, FAILED = 0, DEAD = 0, EXPIRED = 0, superseded = 0, duplicate = 0}
local acks = {}
local dead = {}
local keep_until = arg.now + arg.keep
for n, p in ipairs(plan) do
  local e = entries[n]
  if p.act == 'superseded' then
    counts.superseded = counts.superseded + 1
  elseif p.act == 'duplicate' then
    counts.duplicate = counts.duplicate + 1
    acks[#acks + 1] = p.entry
    if e[7] == 1 then redis.call('ZREM', retry, p.entry) end
  elseif p.st == 'FAILED' then
    counts.FAILED = counts.FAILED + 1
    if p.sig ~= '' then
      redis.call('HSET', pending, p.sig, p.entry .. ' ' .. p.attempts .. ' ' .. p.reason)
    end
    redis.call('ZADD', retry, p.retry_at, p.entry)
  else
    if p.st == 'PROCESSED' then
      for i, fx in ipairs(e[8]) do
        local call = {fx[1], KEYS[fx[2]]}
        for a = 3, #fx do call[#call + 1] = fx[a] end
        local r = redis.pcall(unpack(call))
        if type(r) == 'table' and r['err'] then
          p.st = 'DEAD'
          p.reason = 'effect ' .. i .. ' failed after ' .. (i - 1) .. ' applied: ' .. r['err']
          break
        end
        local need = NEEDS[fx[1]]
        if need == 'any' then known[call[2]] = nil else known[call[2]] = need end
      end
    end
    if p.sig ~= '' then
      redis.call('HDEL', pending, p.sig)
      redis.call('ZADD', done, keep_until, p.sig)
      if p.st ~= 'PROCESSED' then
        redis.call('HSET', status, p.sig, p.st .. ' ' .. p.entry .. ' ' .. p.attempts .. ' ' .. p.reason)
      end
    end
    if p.st == 'DEAD' or p.st == 'EXPIRED' then
      redis.call('XADD', dlq, 'MAXLEN', '~', arg.dlq, '*', 'entry', p.entry, 'agent', arg.g,
        'signal', p.sig, 'status', p.st, 'reason', p.reason, 'attempts', p.attempts,
        'failed_at', string.format('%.3f', arg.now / 1000), 'original', e[5])
      dead[#dead + 1] = p.entry
      dead[#dead + 1] = p.reason
    end
    counts[p.st] = counts[p.st] + 1
    acks[#acks + 1] = p.entry
    if e[7] == 1 then redis.call('ZREM', retry, p.entry) end
  end
end
if #acks > 0 then redis.call('XACK', inbox, arg.g, unpack(acks)) end
for _, st in ipairs({'PROCESSED', 'DEAD', 'EXPIRED'}) do
  if counts[st] > 0 then bump(agent, string.lower(st), counts[st]) end
end
if #old > 0 then
  redis.call('ZREM', done, unpack(old))
  redis.call('HDEL', status, unpack(old))
end
-- keep at most about `retain` entries: trim settled ones, never past the oldest unsettled one
if redis.call('XLEN', inbox) > arg.retain then
  local floor = nil
  local summary = redis.call('XPENDING', inbox, arg.g)
  if summary[1] > 0 then floor = summary[2] end
  if not floor then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', inbox)) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == arg.g then floor = info['last-delivered-id'] end
    end
  end
  if floor then redis.call('XTRIM', inbox, 'MINID', '~', floor) end
end
local reply = {counts.PROCESSED, counts.FAILED, counts.DEAD + counts.EXPIRED, counts.superseded,
  counts.duplicate}
for _, x in ipairs(dead) do reply[#reply + 1] = x end
return reply
