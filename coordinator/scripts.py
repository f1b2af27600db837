"""Lua scripts that make multi-step Redis changes atomic and one round trip each.

Each is registered once per client (``register_script`` sends EVALSHA and falls
back to EVAL when the server has not seen the script yet).
"""

from __future__ import annotations

# Publish one signal.
# KEYS: 1 signal hash, 2 signal log stream, 3 subscribers set of the type,
#       4 registered-agents set, 5 source agent hash, 6.. inbox stream per explicit target
# ARGV: 1 ttl ms, 2 inbox maxlen, 3 log maxlen, 4 inbox key prefix, 5 allow unregistered (1/0),
#       6 source agent id, 7 processed-ledger key prefix, 8 JSON array of the explicit target
#       ids (in KEYS order), 9 JSON array of the signal's field name/value pairs ('id', 'type',
#       'source' first). Two JSON arguments instead of ~25 plain ones: packing arguments is
#       most of a publisher's client-side cost, decoding them a few microseconds of Redis's.
# The hash holds the type and, per target, status:/entry:/error:/attempts: (the entry: fields
# name the targets); the full fields go to each target's inbox entry (and into the hash only
# when there is no target). Every byte here is paid per retained signal.
# A target whose processed-ledger already holds the signal id is left out: a handler that
# publishes again on redelivery, after the first copy's hash expired, reaches nobody twice.
# So an entry read as new (XREADGROUP '>') is never one its agent already processed.
# Returns {1, target, entry, target, entry, ...} or {0} when the signal id already exists
# (a publisher retrying after a lost reply does not create a second signal).
PUBLISH = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local explicit = cjson.decode(ARGV[8])
local candidates, keyed = {}, {}
if #explicit > 0 then
  for i, t in ipairs(explicit) do candidates[i] = t; keyed[t] = KEYS[5 + i] end
  if ARGV[5] ~= '1' then
    for _, t in ipairs(explicit) do
      if redis.call('SISMEMBER', KEYS[4], t) == 0 then
        return redis.error_reply('UNKNOWN_AGENT ' .. t)
      end
    end
  end
else
  candidates = redis.call('SMEMBERS', KEYS[3])
  table.sort(candidates)
end
local fields = cjson.decode(ARGV[9])
local ledger = ARGV[7]
local targets, streams = {}, {}
for _, t in ipairs(candidates) do
  if redis.call('EXISTS', ledger .. t .. ':' .. fields[2]) == 0 then
    targets[#targets + 1] = t
    streams[#streams + 1] = keyed[t] or (ARGV[4] .. t)
  end
end
-- the signal's fields live in the inbox entries (readable with XRANGE); the hash keeps only
-- the type and per-target status, unless nobody receives the signal
if #targets == 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
else
  redis.call('HSET', KEYS[1], 'type', fields[4])
end
local reply = {1}
for i, t in ipairs(targets) do
  local entry = redis.call('XADD', streams[i], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
  redis.call('HSET', KEYS[1], 'status:' .. t, 'PENDING', 'entry:' .. t, entry)
  reply[#reply + 1] = t
  reply[#reply + 1] = entry
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local log = {'id', fields[2], 'type', fields[4], 'source', fields[6], 'to', table.concat(targets, ',')}
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(log))
if redis.call('SISMEMBER', KEYS[4], ARGV[6]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'published', 1)
end
return reply
"""

# Settle a batch of entries an agent has read: ack them and record each outcome, atomically.
# KEYS: 1 inbox stream, 2 agent hash, 3 dead-letter stream, 4 retry schedule (zset)
# ARGV: 1 group (= agent id), 2 dlq maxlen, 3 now (seconds), 4 ledger ttl ms, 5 signal hash key
#       prefix, 6 this agent's processed-ledger key prefix, 7 JSON array with one array of strings
#       per entry: entry id, signal id ('' when the entry had no valid one), status, reason,
#       original fields as JSON (for DEAD), retry at (seconds, for FAILED), attempts so far.
#       (One JSON argument instead of nine per entry: packing arguments costs the client more
#       than decoding them costs Redis.)
# FAILED entries stay pending and are scheduled for a retry; every other status acks the entry,
# PROCESSED writes the ledger, DEAD writes a dead letter. An expired signal hash is not
# recreated. Returns the number of entries acked.
SETTLE = r"""
local acked = 0
local counts = {}
for _, e in ipairs(cjson.decode(ARGV[7])) do
  local entry, signal_id, status, reason, original, retry_at, attempts =
    e[1], e[2], e[3], e[4], e[5], e[6], e[7]
  local hash = ARGV[5] .. signal_id
  if signal_id ~= '' and redis.call('EXISTS', hash) == 1 then
    redis.call('HSET', hash, 'status:' .. ARGV[1], status, 'attempts:' .. ARGV[1], attempts)
    if reason ~= '' then redis.call('HSET', hash, 'error:' .. ARGV[1], reason) end
  end
  if status == 'FAILED' then
    redis.call('ZADD', KEYS[4], retry_at, entry)
  else
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('ZREM', KEYS[4], entry)
    if status == 'PROCESSED' and signal_id ~= '' then
      redis.call('SET', ARGV[6] .. signal_id, entry, 'PX', ARGV[4])
    end
    if status == 'DEAD' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*',
        'entry', entry, 'agent', ARGV[1], 'reason', reason, 'attempts', attempts,
        'failed_at', ARGV[3], 'original', original)
    end
  end
  counts[status] = (counts[status] or 0) + 1
end
for status, c in pairs(counts) do
  redis.call('HINCRBY', KEYS[2], string.lower(status), c)
end
return acked
"""
