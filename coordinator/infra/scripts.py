"""Lua scripts of the delivery core: publish, settle, claim due retries, renew claims, expire.

Every script declares every key it touches in KEYS (nothing is built from a prefix inside a
script), and each per-agent script touches only keys with that agent's hash tag, so it runs on
one Redis Cluster slot. Each script does all of its reads and checks first and writes only
after them: a script that fails (a key of the wrong type, an unknown target, a full inbox)
fails before its first write, so it leaves nothing behind. Once a script has written, nothing
it calls can fail: the commands that could (counters edited by hand into text) are called
with ``redis.pcall`` and repaired.

Per agent: ``pending`` (HASH signal id -> ``<entry> <attempts> [error]``) holds what it has
not settled, ``done`` (ZSET signal id -> remember-until ms) what it settled, ``status`` (HASH)
why an unprocessed signal ended (DEAD / EXPIRED). A signal id is in at most one of
``pending`` and ``done``; the scripts below move it from one to the other atomically.
"""

from __future__ import annotations

# Shared helpers, prepended to every script below.
_HELPERS = r"""
local function type_of(key) return redis.call('TYPE', key)['ok'] end
local function expect(key, want)
  local t = type_of(key)
  if t ~= 'none' and t ~= want then
    return 'BAD_KEY ' .. key .. ' is a ' .. t .. ', not a ' .. want .. ' (edited by hand?)'
  end
  return nil
end
-- A read that doubles as the type check of its key: a key edited into another type fails the
-- script here, before its first write, naming the key (any other error is raised as it is).
local function must(want, cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r['err'] then
    local message = tostring(r['err'])
    if string.find(message, 'WRONGTYPE', 1, true) then
      error('BAD_KEY ' .. key .. ' is a ' .. type_of(key) .. ', not a ' .. want .. ' (edited by hand?)')
    end
    error(message)
  end
  return r
end
-- HINCRBY that cannot fail: a counter edited into text is reset to the increment (and a key
-- edited into another type is left alone).
local function bump(key, field, n)
  local r = redis.pcall('HINCRBY', key, field, n)
  if type(r) == 'table' and r['err'] then redis.pcall('HSET', key, field, n) end
end
local function attempts_of(record)
  if not record then return 0 end
  local a = string.match(record, '^%S+ (%d+)')
  return tonumber(a) or 0
end
"""

# Publish a batch of signals (one, for a single publish): one script call, one round trip.
# KEYS: 1 signal log, 2 registered agents, then 3 per distinct target (inbox, pending, done),
#       then one signal key per signal, one subscriber set per untargeted type,
#       one agent hash per distinct source.
# ARGV: 1 inbox max (unsettled signals per target), 2 log maxlen, 3 allow unregistered (1/0),
#       4 JSON {"t": [targets], "y": [[type, [subscribers as the client knows them]]],
#       "s": [sources], "b": [[signal key ttl ms, [target index…], explicit (1/0), source index,
#       [field, value, … ('id', 'type', 'source' first)]], …]}.
# Checks before any write (each read doubles as its key's type check): explicit targets
# registered, each untargeted type's
# subscribers still those the client sent (else SUBSCRIBERS_CHANGED: the client refreshes and
# retries), and per target that its unsettled signals plus the new ones stay within the inbox
# max (else INBOX_FULL <agent> <backlog>).
# A target already holding the signal (in its pending or done) is left out: publishing an id
# again delivers it to the targets that lack it and to nobody twice.
# Returns per signal {new (1/0), target, entry, …}: new is 0 when no target got a new entry
# and the signal was known.
PUBLISH = _HELPERS + r"""
local arg = cjson.decode(ARGV[4])
local targets, sources, batch, types = arg.t, arg.s, arg.b, arg.y
local nt, nb, ny = #targets, #batch, #types
local function tkey(i, k) return KEYS[2 + 3 * (i - 1) + k] end
must('stream', 'XLEN', KEYS[1])
local registered = {}  -- sources that are registered agents (their published counters grow)
for s = 1, #sources do
  registered[s] = must('set', 'SISMEMBER', KEYS[2], sources[s]) == 1
end
for n = 1, ny do
  local now = must('set', 'SMEMBERS', KEYS[2 + 3 * nt + nb + n])
  table.sort(now)
  local known = types[n][2]
  local same = #now == #known
  for i = 1, #now do if now[i] ~= known[i] then same = false end end
  if not same then return redis.error_reply('SUBSCRIBERS_CHANGED ' .. types[n][1]) end
end
local backlog = {}
for i = 1, nt do
  must('stream', 'XLEN', tkey(i, 1))
  backlog[i] = must('hash', 'HLEN', tkey(i, 2))
end
if ARGV[3] ~= '1' then
  local checked = {}
  for _, signal in ipairs(batch) do
    if signal[3] == 1 then
      for _, i in ipairs(signal[2]) do
        if not checked[i] then
          if redis.call('SISMEMBER', KEYS[2], targets[i]) == 0 then
            return redis.error_reply('UNKNOWN_AGENT ' .. targets[i])
          end
          checked[i] = true
        end
      end
    end
  end
end
local new = {}
local adding = {}
for n, signal in ipairs(batch) do
  local id = signal[5][2]
  new[n] = {}
  for _, i in ipairs(signal[2]) do
    if redis.call('HEXISTS', tkey(i, 2), id) == 0 and not must('zset', 'ZSCORE', tkey(i, 3), id) then
      new[n][#new[n] + 1] = i
      adding[i] = (adding[i] or 0) + 1
    end
  end
end
local max = tonumber(ARGV[1])
for i, count in pairs(adding) do
  if backlog[i] + count > max then
    return redis.error_reply('INBOX_FULL ' .. targets[i] .. ' ' .. backlog[i])
  end
end
-- every check passed: write
local published = {}
local replies = {}
for n, signal in ipairs(batch) do
  local fields = signal[5]
  local id, kind, source = fields[2], fields[4], fields[6]
  local skey = KEYS[2 + 3 * nt + n]
  local reply = {0}
  local to = {}
  for _, i in ipairs(new[n]) do
    local entry = redis.call('XADD', tkey(i, 1), '*', unpack(fields))
    redis.call('HSET', tkey(i, 2), id, entry .. ' 0')
    to[targets[i]] = entry
    reply[#reply + 1] = targets[i]
    reply[#reply + 1] = entry
  end
  local record = {type = kind, source = source, to = to}
  if #signal[2] == 0 then
    local body = {}
    for f = 1, #fields, 2 do body[fields[f]] = fields[f + 1] end
    record.fields = body
  end
  if redis.call('SET', skey, cjson.encode(record), 'PX', signal[1], 'NX') then
    local names = {}
    for _, i in ipairs(new[n]) do names[#names + 1] = targets[i] end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
      'id', id, 'type', kind, 'source', source, 'to', table.concat(names, ','))
    published[signal[4]] = (published[signal[4]] or 0) + 1
    reply[1] = 1
  elseif #new[n] > 0 then  -- known signal, new targets: add them to its record
    local ok, known = pcall(cjson.decode, redis.pcall('GET', skey))
    if not ok or type(known) ~= 'table' then known = record end
    if type(known.to) ~= 'table' then known.to = {} end
    for t, e in pairs(to) do known.to[t] = e end
    redis.call('SET', skey, cjson.encode(known), 'KEEPTTL')
    reply[1] = 1
  end
  replies[n] = reply
end
for s, count in pairs(published) do
  if registered[s] then bump(KEYS[2 + 3 * nt + nb + ny + s], 'published', count) end
end
return replies
"""

# Settle a batch an agent's consumer has handled: fenced, in one atomic step.
# KEYS: 1 inbox, 2 pending, 3 done, 4 status, 5 retry schedule, 6 dead letters, 7 agent hash,
#       then the keys the batch's effects write (effects name them by index).
# ARGV: 1 JSON {"g": group, "c": consumer, "now": ms, "keep": ms a settled id is remembered,
#       "dlq": dead-letter maxlen, "max": max deliveries, "base"/"cap": retry backoff ms,
#       "retain": settled entries kept in the inbox, "lo"/"hi": lowest/highest entry id,
#       "e": [[entry, signal id or '', status, reason, original JSON (for DEAD), jitter 0..1,
#              redelivered (1/0), [[command, key index, arg…], …]], …]}
# The fence: an entry is settled only if this consumer still owns it (it is in the group's
# pending list under this consumer) and its signal is not settled already; otherwise nothing
# of it is applied (superseded: another replica took it over; duplicate: acked, no effects).
# Status PROCESSED applies its effects; FAILED counts an attempt and schedules a retry (or is
# DEAD at the max); DEAD and EXPIRED go to the dead letters. Also ages out settled ids past
# their keep time, and trims settled entries past ``retain`` (never an unsettled one).
# Returns {processed, failed, dead, superseded, duplicate, [entry, reason, …] of the dead}.
SETTLE = _HELPERS + r"""
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
"""

# Claim the failed entries whose retry time has come.
# KEYS: 1 inbox, 2 retry schedule. ARGV: 1 group, 2 consumer, 3 now (seconds), 4 count.
# A schedule member that is not an entry id of this inbox is removed and returned (set aside),
# never passed to XCLAIM. Returns {claimed entries as XCLAIM returns them, [bad members]}.
CLAIM_DUE = r"""
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
"""

# Renew this consumer's claim on the entries it is still working on (resets their idle time),
# and only those it still owns: an entry another replica took over is not taken back.
# KEYS: 1 inbox. ARGV: 1 group, 2 consumer, 3 lowest id, 4 highest id, then the entry ids.
# Returns how many were renewed.
RENEW = r"""
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local mine = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[4], #ARGV + 1024, ARGV[2])) do
  if wanted[p[1]] then mine[#mine + 1] = p[1] end
end
if #mine > 0 then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(mine), 'JUSTID') end
return #mine
"""

# Expire one batch of an inbox's entries older than the retention age, then trim them.
# KEYS: 1 inbox, 2 pending, 3 done, 4 status, 5 dead letters, 6 agent hash.
# ARGV: 1 group, 2 start id ('-': what is looked at is trimmed), 3 cutoff ms, 4 count, 5 now ms,
#       6 keep-until ms, 7 dead-letter maxlen.
# An entry still unsettled (its signal pending, or in the group's pending list, or not yet
# delivered) is marked EXPIRED, dead-lettered with the reason and acked; then every entry up
# to the last one looked at is trimmed (all of them settled now). Returns {looked at, expired,
# last id}.
EXPIRE = _HELPERS + r"""
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
"""

# Put a dead letter back into its agent's inbox as a new delivery.
# KEYS: 1 dead letters, 2 inbox, 3 pending, 4 done, 5 status.
# ARGV: 1 dead-letter entry id, 2 signal id ('' for an entry without a valid one), then the
#       original field pairs. Returns the new inbox entry id.
REPLAY = _HELPERS + r"""
local problem = expect(KEYS[1], 'stream') or expect(KEYS[2], 'stream') or expect(KEYS[3], 'hash')
  or expect(KEYS[4], 'zset') or expect(KEYS[5], 'hash')
if problem then return redis.error_reply(problem) end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return redis.error_reply('NO_ENTRY') end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], entry .. ' 0')
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('HDEL', KEYS[5], ARGV[2])
end
redis.call('XDEL', KEYS[1], ARGV[1])
return entry
"""
