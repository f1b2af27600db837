"""Lua scripts that make multi-step Redis changes atomic and one round trip each.

Each is registered once per client (``register_script`` sends EVALSHA and falls
back to EVAL when the server has not seen the script yet).
"""

from __future__ import annotations

# Publish a batch of signals (one, for a single publish): one script call, one round trip.
# KEYS: 1 signal log stream, 2 registered-agents set
# ARGV: 1 inbox maxlen, 2 log maxlen, 3 allow unregistered targets (1/0), key prefixes of
#       4 signal hashes, 5 inboxes, 6 processed-ledgers, 7 subscriber sets, 8 agent hashes
#       (all made by coordinator/keys.py), 9 JSON array with one [hash ttl ms, [explicit target
#       ids], [field name/value pairs: 'id', 'type', 'source' first]] per signal.
#       One JSON argument instead of ~25 per signal: packing arguments is most of a
#       publisher's client-side cost, decoding them a few microseconds of Redis's.
# Explicit targets must all be registered (else nothing of the batch is written and the reply
# is an UNKNOWN_AGENT error); a signal without targets goes to the subscribers of its type.
# Per signal: the hash holds the type and, per target, status:/entry:/error:/attempts: (the
# entry: fields name the targets); the full fields go to each target's inbox entry (and into
# the hash only when there is no target). Every byte here is paid per retained signal.
# A target whose processed-ledger already holds the signal id is left out: a handler that
# publishes again on redelivery, after the first copy's hash expired, reaches nobody twice.
# So an entry read as new (XREADGROUP '>') is never one its agent already processed.
# Returns one reply per signal: {1, target, entry, target, entry, ...}, or {0} when the signal
# id already exists (a publisher retrying after a lost reply does not create a second signal).
PUBLISH = r"""
local batch = cjson.decode(ARGV[9])
if ARGV[3] ~= '1' then
  for _, signal in ipairs(batch) do
    for _, t in ipairs(signal[2]) do
      if redis.call('SISMEMBER', KEYS[2], t) == 0 then
        return redis.error_reply('UNKNOWN_AGENT ' .. t)
      end
    end
  end
end
local replies = {}
for n, signal in ipairs(batch) do
  local fields = signal[3]
  local id, kind, source = fields[2], fields[4], fields[6]
  local hash = ARGV[4] .. id
  if redis.call('EXISTS', hash) == 1 then
    replies[n] = {0}
  else
    local candidates = signal[2]
    if #candidates == 0 then
      candidates = redis.call('SMEMBERS', ARGV[7] .. kind)
      table.sort(candidates)
    end
    local targets = {}
    for _, t in ipairs(candidates) do
      if redis.call('EXISTS', ARGV[6] .. t .. ':' .. id) == 0 then targets[#targets + 1] = t end
    end
    -- the signal's fields live in the inbox entries (readable with XRANGE); the hash keeps
    -- only the type and per-target status, unless nobody receives the signal
    if #targets == 0 then
      redis.call('HSET', hash, unpack(fields))
    else
      redis.call('HSET', hash, 'type', kind)
    end
    local reply = {1}
    for _, t in ipairs(targets) do
      local entry = redis.call('XADD', ARGV[5] .. t, 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
      redis.call('HSET', hash, 'status:' .. t, 'PENDING', 'entry:' .. t, entry)
      reply[#reply + 1] = t
      reply[#reply + 1] = entry
    end
    redis.call('PEXPIRE', hash, signal[1])
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
      'id', id, 'type', kind, 'source', source, 'to', table.concat(targets, ','))
    if redis.call('SISMEMBER', KEYS[2], source) == 1 then
      redis.call('HINCRBY', ARGV[8] .. source, 'published', 1)
    end
    replies[n] = reply
  end
end
return replies
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
