-- Functions shared by the delivery scripts: hivebus.infra.lua puts this file in front of
-- publish.lua, settle.lua, expire.lua and replay.lua (a client in another language does the same).
-- No KEYS or ARGV of its own: each function is given the key it works on.
--   type_of(key)                  the key's type ('none' if it does not exist)
--   expect(key, want)             nil, or a BAD_KEY message when the key is of another type
--   must(want, cmd, key, ...)     a read that doubles as its key's type check
--   bump(key, field, n)           an HINCRBY that cannot fail
--   attempts_of(record)           the attempts a pending record (<entry> <attempts> [error]) counts

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
