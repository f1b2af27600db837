-- Publish a batch of signals: deliver them to their targets and record them, every check before
-- any write. Called by hivebus.bus.bus (Bus.publish / publish_many).
-- Runs with helpers.lua put in front of it (hivebus.infra.lua does; so must any other client).
-- On one Redis the whole batch is one call ('all'). On a Redis Cluster a call may only name keys
-- of one slot, so the client makes one call per slot: the targets whose keys are in that slot and
-- the signals whose record is (first 'check' calls when the batch spans several slots, then
-- 'write' calls, which check again).
-- KEYS: one subscriber set per type in "y", then 4 per target (inbox, pending, done, agent hash),
--       then 2 per signal shard (log, published counts), then one record key per signal recorded
--       in this call.
-- ARGV: 1 inbox max (unsettled signals per target), 2 log maxlen, 3 allow unregistered (1/0),
--       4 mode: all | check | write, 5 JSON {"y": [[type, [subscribers as the client knows them]]],
--       "t": [targets], "s": number of shards, "b": [[record ttl ms, [target index…], explicit
--       (1/0), shard index (0: recorded in another call), [field, value, … ('id', 'type',
--       'source' first)], [every target of the signal, when it is recorded apart from its
--       deliveries]], …]}.
-- Checks (each read doubles as its key's type check): each untargeted type's subscribers are
-- still those the client sent (else SUBSCRIBERS_CHANGED: the client refreshes and retries);
-- explicit targets are registered (their agent hash exists; else UNKNOWN_AGENT); per target its
-- unsettled signals plus the new ones stay within the inbox max (else INBOX_FULL <agent> <backlog>).
-- A target already holding the signal (in its pending or done) is left out: publishing an id
-- again delivers it to the targets that lack it and to nobody twice.
-- Returns per signal {new (1/0), target, entry, …}: new is 0 when no target got a new entry here
-- and the signal was already recorded (or is recorded in another call).

local arg = cjson.decode(ARGV[5])
local mode = ARGV[4]
local types, targets, batch = arg.y, arg.t, arg.b
local ny, nt, ns = #types, #targets, arg.s
local function tkey(i, k) return KEYS[ny + 4 * (i - 1) + k] end
local function skey(s, k) return KEYS[ny + 4 * nt + 2 * (s - 1) + k] end
local rkey_at = ny + 4 * nt + 2 * ns  -- record keys follow, in batch order of recorded signals

for n = 1, ny do
  local now = must('set', 'SMEMBERS', KEYS[n])
  table.sort(now)
  local known = types[n][2]
  local same = #now == #known
  for i = 1, #now do if now[i] ~= known[i] then same = false end end
  if not same then return redis.error_reply('SUBSCRIBERS_CHANGED ' .. types[n][1]) end
end
for s = 1, ns do
  must('stream', 'XLEN', skey(s, 1))
  must('hash', 'HLEN', skey(s, 2))
end
local backlog = {}
for i = 1, nt do
  must('stream', 'XLEN', tkey(i, 1))
  backlog[i] = must('hash', 'HLEN', tkey(i, 2))
  must('hash', 'HLEN', tkey(i, 4))
end
if ARGV[3] ~= '1' then
  local checked = {}
  for _, signal in ipairs(batch) do
    if signal[3] == 1 then
      for _, i in ipairs(signal[2]) do
        if not checked[i] then
          if redis.call('EXISTS', tkey(i, 4)) == 0 then
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
if mode == 'check' then return {} end
-- every check passed: write
local replies = {}
local recorded = 0
for n, signal in ipairs(batch) do
  local fields = signal[5]
  local id, kind, source = fields[2], fields[4], fields[6]
  local reply = {0}
  local to = {}
  for _, i in ipairs(new[n]) do
    local entry = redis.call('XADD', tkey(i, 1), '*', unpack(fields))
    redis.call('HSET', tkey(i, 2), id, entry .. ' 0')
    to[targets[i]] = entry
    reply[#reply + 1] = targets[i]
    reply[#reply + 1] = entry
  end
  if #new[n] > 0 then reply[1] = 1 end
  local shard = signal[4]
  if shard > 0 then
    recorded = recorded + 1
    local rkey = KEYS[rkey_at + recorded]
    local apart = signal[6]  -- every target, when recorded apart from its deliveries
    local record = {type = kind, source = source, to = to}
    if apart then
      for _, t in ipairs(apart) do if not to[t] then to[t] = '' end end
    end
    if #signal[2] == 0 or apart then
      local body = {}
      for f = 1, #fields, 2 do body[fields[f]] = fields[f + 1] end
      record.fields = body
    end
    if redis.call('SET', rkey, cjson.encode(record), 'PX', signal[1], 'NX') then
      local names = {}
      for t, _ in pairs(to) do names[#names + 1] = t end
      table.sort(names)
      redis.call('XADD', skey(shard, 1), 'MAXLEN', '~', ARGV[2], '*',
        'id', id, 'type', kind, 'source', source, 'to', table.concat(names, ','))
      bump(skey(shard, 2), source, 1)
      reply[1] = 1
    elseif #new[n] > 0 or apart then  -- known signal: add new targets (and entries) to its record
      local ok, known = pcall(cjson.decode, redis.pcall('GET', rkey))
      if not ok or type(known) ~= 'table' then known = record end
      if type(known.to) ~= 'table' then known.to = {} end
      for t, e in pairs(to) do
        if e ~= '' or not known.to[t] then known.to[t] = e end
      end
      redis.call('SET', rkey, cjson.encode(known), 'KEEPTTL')
    end
  end
  replies[n] = reply
end
return replies
