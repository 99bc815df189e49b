"""The Lua scripts of a host's backup and restore (``backup_host`` runs them): the dump of the
backed-up prefixes' keys, and the restore that checks everything before its first write.

Standard library only, no relative imports, Python 3.8+: shipped to target hosts as
``module_utils/flashmm_backup_lua.py`` with ``backup_host``.
"""

from __future__ import annotations

try:
    from flashmm_deploy.redis.keys import (CONFIG_PREFIX, PREFIXES, SECURE_PREFIX, SUMMARY_CHANNEL,
                                           UPDATES_CHANNEL, VERSION_KEY, lua_locals)
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_keys import (  # type: ignore[no-redef]
        CONFIG_PREFIX, PREFIXES, SECURE_PREFIX, SUMMARY_CHANNEL, UPDATES_CHANNEL,
        VERSION_KEY, lua_locals)

# The values of key k of type t in the dump's shape (nil for a type backup does not handle):
# bulk strings (binary-safe); sets sorted, hashes and sorted sets as flat field/value pairs.
# Shared by the dump and the restore's comparison, so that both read a key the same way.
READ_VALUES_LUA = r"""
local function read_values(k, t)
  if t == 'string' then return {redis.call('GET', k)}
  elseif t == 'hash' then return redis.call('HGETALL', k)
  elseif t == 'list' then return redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then local v = redis.call('SMEMBERS', k); table.sort(v); return v
  elseif t == 'zset' then return redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  end
  return nil
end
"""

# Returns an array of {key, type, pttl, {values...}}, sorted by key.
DUMP_LUA = READ_VALUES_LUA + """
local PATTERNS = {%s}
""" % ", ".join("'%s*'" % p for p in PREFIXES) + r"""local keys = {}
for _, pattern in ipairs(PATTERNS) do
  local cursor = '0'
  repeat
    local reply = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = reply[1]
    for _, k in ipairs(reply[2]) do keys[#keys + 1] = k end
  until cursor == '0'
end
table.sort(keys)
local out = {}
for _, k in ipairs(keys) do
  local t = redis.call('TYPE', k)['ok']
  local v = read_values(k, t)
  if v == nil and t ~= 'none' then
    return redis.error_reply('ERR flashmm backup: ' .. k .. ' is a ' .. t ..
                             ', which backup does not handle')
  end
  if v ~= nil then out[#out + 1] = {k, t, redis.call('PTTL', k), v} end
end
return out
"""

# ARGV[1] = check|apply, ARGV[2] = backup id, then per key: key, type, pttl, n, n values.
# Returns a JSON report.  Reads and checks everything before the first write.
RESTORE_LUA = READ_VALUES_LUA + """
local PREFIXES = {%s}
""" % ", ".join("'%s'" % p for p in PREFIXES) + lua_locals(
    VERSION=VERSION_KEY, CHANNEL=UPDATES_CHANNEL, SUMMARY=SUMMARY_CHANNEL, CONFIG=CONFIG_PREFIX,
    SECURE=SECURE_PREFIX) + r"""local INT64_MAX = '9223372036854775807'
local TYPES = {string = true, hash = true, list = true, set = true, zset = true}
local MAX_TTL = 3153600000000
local function fail(msg) return redis.error_reply('ERR flashmm restore: ' .. msg) end
local action, backup_id = ARGV[1], ARGV[2]
if action ~= 'check' and action ~= 'apply' then return fail('action must be check or apply') end

local function starts(k, p) return string.sub(k, 1, #p) == p end
local function ours(k)
  for _, p in ipairs(PREFIXES) do if starts(k, p) then return true end end
  return false
end

local desired, order = {}, {}
local i = 3
while i <= #ARGV do
  local k, t, pttl, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if not ours(k) or k == CHANNEL then return fail('refusing to restore a key outside the ' ..
                                                   'backed-up prefixes: ' .. k) end
  if n == nil or pttl == nil or n ~= math.floor(n) or n < 0 or i + 3 + n > #ARGV then
    return fail('malformed entry for ' .. k)
  end
  -- the entry's shape, all checked before the first write (the write phase cannot fail)
  if desired[k] ~= nil then return fail(k .. ' is in the backup twice') end
  if not TYPES[t] then return fail(k .. ': unknown type ' .. tostring(t)) end
  if pttl ~= math.floor(pttl) or (pttl ~= -1 and (pttl < 1 or pttl > MAX_TTL)) then
    return fail(k .. ': TTL ' .. ARGV[i + 2] .. ' ms is neither -1 (none) nor 1..' .. MAX_TTL)
  end
  if n < 1 or (t == 'string' and n ~= 1) or ((t == 'hash' or t == 'zset') and n % 2 ~= 0) then
    return fail(k .. ': a ' .. t .. ' with ' .. n .. ' value(s)')
  end
  local vals, seen = {}, {}
  for j = 1, n do
    local v = ARGV[i + 3 + j]
    vals[j] = v
    if t == 'set' or ((t == 'hash' or t == 'zset') and j % 2 == 1) then
      if seen[v] then return fail(k .. ': a ' .. t .. ' member or field twice') end
      seen[v] = true
    end
    if t == 'zset' and j % 2 == 0 then
      local score = tonumber(v)
      if score == nil or score ~= score then return fail(k .. ': score is not a number') end
    end
  end
  desired[k] = {t = t, pttl = pttl, vals = vals}
  order[#order + 1] = k
  i = i + 4 + n
end

local function is_int(v)
  return v ~= nil and string.match(v, '^%d+$') ~= nil and
         (#v < 19 or (#v == 19 and v < INT64_MAX))
end
-- versions as strings (Lua numbers are doubles): compare by length, then text
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- the current value of k in the dump's shape: type, list of values
local function current(k)
  local t = redis.call('TYPE', k)['ok']
  if t == 'none' then return nil end
  return {t = t, vals = read_values(k, t) or {}, pttl = redis.call('PTTL', k)}
end

local function pairs_map(vals)
  local m, n = {}, 0
  for j = 1, #vals, 2 do m[vals[j]] = vals[j + 1]; n = n + 1 end
  return m, n
end

local function same(want, have)
  if have == nil or want.t ~= have.t then return false end
  if (want.pttl < 0) ~= (have.pttl < 0) then return false end
  if want.t == 'hash' or want.t == 'zset' then
    local a, na = pairs_map(want.vals)
    local b, nb = pairs_map(have.vals)
    if na ~= nb then return false end
    for f, v in pairs(a) do if b[f] ~= v then return false end end
    return true
  end
  local wv = want.vals
  if want.t == 'set' then wv = {}; for j, v in ipairs(want.vals) do wv[j] = v end; table.sort(wv) end
  if #wv ~= #have.vals then return false end
  for j = 1, #wv do if wv[j] ~= have.vals[j] then return false end end
  return true
end

-- Read phase
local present = {}
for _, p in ipairs(PREFIXES) do
  local cursor = '0'
  repeat
    local reply = redis.call('SCAN', cursor, 'MATCH', p .. '*', 'COUNT', 1000)
    cursor = reply[1]
    for _, k in ipairs(reply[2]) do present[#present + 1] = k end
  until cursor == '0'
end
table.sort(present)

local cur_version = nil
local vt = redis.call('TYPE', VERSION)['ok']
if vt ~= 'none' then
  if vt ~= 'string' then return fail(VERSION .. ' is a ' .. vt .. ', not a string') end
  cur_version = redis.call('GET', VERSION)
  if not is_int(cur_version) then return fail(VERSION .. ' is not a non-negative integer') end
end
local want_version = nil
if desired[VERSION] ~= nil then
  want_version = desired[VERSION].vals[1]
  if desired[VERSION].t ~= 'string' or not is_int(want_version) then
    return fail('the backup\'s ' .. VERSION .. ' is not a non-negative integer')
  end
end

local writes, dels, changed = {}, {}, {}
local before, after = {}, {}
for _, k in ipairs(order) do
  if k ~= VERSION then
    local want = desired[k]
    local have = current(k)
    if not same(want, have) then
      writes[#writes + 1] = k
      changed[#changed + 1] = k
      before[k] = have and {have.t, have.vals} or cjson.null
      after[k] = {want.t, want.vals}
    end
  end
end
for _, k in ipairs(present) do
  if desired[k] == nil and k ~= VERSION then
    local have = current(k)
    dels[#dels + 1] = k
    changed[#changed + 1] = k
    before[k] = {have.t, have.vals}
    after[k] = cjson.null
  end
end
table.sort(changed)

-- the version: never back, bumped when something changed
local version = cur_version or want_version or '0'
if want_version ~= nil and greater(want_version, version) then version = want_version end
local new_version = version
if #changed > 0 then
  if version == INT64_MAX then return fail(VERSION .. ' cannot be incremented') end
  new_version = nil           -- INCR below
end
local version_changes = (#changed > 0) or (version ~= cur_version and want_version ~= nil)

-- Write phase
if action == 'apply' and (#changed > 0 or version_changes) then
  for _, k in ipairs(dels) do redis.call('DEL', k) end
  for _, k in ipairs(writes) do
    local want = desired[k]
    redis.call('DEL', k)
    local v = want.vals
    if want.t == 'string' then redis.call('SET', k, v[1])
    elseif want.t == 'hash' then
      for j = 1, #v, 2 do redis.call('HSET', k, v[j], v[j + 1]) end
    elseif want.t == 'list' then
      for j = 1, #v do redis.call('RPUSH', k, v[j]) end
    elseif want.t == 'set' then
      for j = 1, #v do redis.call('SADD', k, v[j]) end
    elseif want.t == 'zset' then
      for j = 1, #v, 2 do redis.call('ZADD', k, v[j + 1], v[j]) end
    end
    if want.pttl > 0 then redis.call('PEXPIRE', k, want.pttl) end
  end
  redis.call('SET', VERSION, version)
  if #changed > 0 then
    new_version = tostring(redis.call('INCR', VERSION))
    local config_changed = {}
    for _, k in ipairs(changed) do
      if starts(k, CONFIG) then
        config_changed[#config_changed + 1] = k
        redis.call('PUBLISH', CHANNEL, (string.gsub(string.sub(k, #CONFIG + 1), ':', '.')))
      end
    end
    redis.call('PUBLISH', SUMMARY, '{"version":' .. new_version .. ',"changed":' ..
      (#config_changed > 0 and cjson.encode(config_changed) or '[]') ..
      ',"source":"restore","backup":' .. cjson.encode(backup_id) .. '}')
  end
elseif #changed > 0 then
  new_version = nil
end

local function jlist(t) if #t == 0 then return '[]' end return cjson.encode(t) end
local function jmap(t, n) if n == 0 then return '{}' end return cjson.encode(t) end
local changes = #changed > 0 or version_changes
return '{"changed":' .. tostring(action == 'apply' and changes) ..
  ',"would_change":' .. tostring(changes) ..
  ',"changed_keys":' .. jlist(changed) ..
  ',"before":' .. jmap(before, #changed) ..
  ',"after":' .. jmap(after, #changed) ..
  ',"version_before":' .. cjson.encode(cur_version or cjson.null) ..
  ',"version":' .. cjson.encode(new_version or cjson.null) .. '}'
"""
