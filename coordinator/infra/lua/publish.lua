-- Publish a batch of signals (one, for a single publish): one script call, one round trip.
-- Called by hivebus.bus.bus (Bus.publish / publish_many).
-- Runs with helpers.lua put in front of it (hivebus.infra.lua does; so must any other client).
-- KEYS: 1 signal log, 2 registered agents, then 3 per distinct target (inbox, pending, done),
--       then one signal key per signal, one subscriber set per untargeted type,
--       one agent hash per distinct source.
-- ARGV: 1 inbox max (unsettled signals per target), 2 log maxlen, 3 allow unregistered (1/0),
--       4 JSON {"t": [targets], "y": [[type, [subscribers as the client knows them]]],
--       "s": [sources], "b": [[signal key ttl ms, [target index…], explicit (1/0), source index,
--       [field, value, … ('id', 'type', 'source' first)]], …]}.
-- Checks before any write (each read doubles as its key's type check): explicit targets
-- registered, each untargeted type's
-- subscribers still those the client sent (else SUBSCRIBERS_CHANGED: the client refreshes and
-- retries), and per target that its unsettled signals plus the new ones stay within the inbox
-- max (else INBOX_FULL <agent> <backlog>).
-- A target already holding the signal (in its pending or done) is left out: publishing an id
-- again delivers it to the targets that lack it and to nobody twice.
-- Returns per signal {new (1/0), target, entry, …}: new is 0 when no target got a new entry
-- and the signal was known.

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
