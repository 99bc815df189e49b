"""The Redis seed script: the runtime layer (``flashmm:config:<section>:<key>``) applied in one
atomic Lua script, rendered per host on the controller and written to ``redis/seed.lua``.

Standard library only, no relative imports: ``seed_apply.py`` (shipped to target hosts) imports
the key names from here.

Key layout (the seed's application scans ``flashmm:config:*`` and reads every key there as a
config value, so nothing else may live under that prefix):

* ``flashmm:config:<section>:<key>``  JSON values of the runtime-overridable keys;
* ``flashmm:config:updates``          channel: one message per changed key, its dotted name
                                      (what the seed's listener passes to ``reload_key``);
* ``flashmm:meta:seeded``             hash: the value deploy last seeded for each key;
* ``flashmm:meta:version``            integer, bumped once per run that changes a value;
* ``flashmm:meta:updates``            channel: one JSON summary per changing run.

Three-way semantics (like ``kubectl apply``'s last-applied record), decided and applied inside
one EVAL so nothing can interleave:

* desired key absent, or equal to what was last seeded -> takes the inventory value;
* desired key already equal to the inventory value -> only recorded as seeded;
* otherwise it is an operator override: kept and reported as drift (``keep``), or overwritten
  (``enforce``, reported under ``enforced``); a kept override leaves the record untouched;
* recorded but no longer desired: deleted when unchanged since seeding, else kept as drift.

Redis does not roll back a script that fails half way, so every check (key types, the
version's range) happens in a read phase before the first write: a failure changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

try:
    from flashmm_deploy.redis.keys import (AUDIT_RUNTIME_LIST, CONFIG_PREFIX, SEEDED_KEY,
                                           SUMMARY_CHANNEL, UPDATES_CHANNEL, VERSION_KEY,
                                           lua_locals)
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_keys import (  # type: ignore[no-redef]
        AUDIT_RUNTIME_LIST, CONFIG_PREFIX, SEEDED_KEY, SUMMARY_CHANNEL, UPDATES_CHANNEL,
        VERSION_KEY, lua_locals)

MODES = ("keep", "enforce")
ACTIONS = ("check", "apply")

# The generic part of every rendered script.  It expects DESIRED, a list of {key, json_value}
# pairs sorted by key, and RULES, key -> {kind = "number"|"boolean", gt/ge/lt/le = limit}, the
# schema's rule for each key, defined before it.  ARGV[1] = keep|enforce, ARGV[2] = check|apply.
# Returns a JSON report.  (No double braces, brace-percent or brace-hash in here: the script
# passes through Jinja2 unharmed, and lua_string() escapes those characters in values.)
SEED_LUA_BODY = "\n" + lua_locals(
    SEEDED=SEEDED_KEY, VERSION=VERSION_KEY, SUMMARY=SUMMARY_CHANNEL, CHANNEL=UPDATES_CHANNEL,
    PREFIX=CONFIG_PREFIX, AUDIT=AUDIT_RUNTIME_LIST) + r"""local NULL = cjson.null
local INT64_MAX = '9223372036854775807'

local mode = ARGV[1] or 'keep'
local action = ARGV[2] or 'apply'
local function fail(msg)
  return redis.error_reply('ERR flashmm seed: ' .. msg)
end
if mode ~= 'keep' and mode ~= 'enforce' then return fail('mode must be keep or enforce') end
if action ~= 'check' and action ~= 'apply' then return fail('action must be check or apply') end
local check = (action == 'check')

-- Read phase: nothing below writes until every read and check has succeeded.
local function read(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then return nil, v.err end
  if v == false then return nil end
  return v
end

local seeded = {}
local raw = redis.pcall('HGETALL', SEEDED)
if type(raw) == 'table' and raw.err then
  return fail(SEEDED .. ' is not a hash (' .. raw.err .. ')')
end
for i = 1, #raw, 2 do seeded[raw[i]] = raw[i + 1] end

-- The version is kept as a string: Lua numbers are doubles and would round it.
local version, verr = read(VERSION)
if verr then return fail(VERSION .. ': ' .. verr) end
version = version or '0'
if not string.match(version, '^%d+$') or #version > 19
   or (#version == 19 and version >= INT64_MAX) then
  return fail(VERSION .. ' is not an integer the next increment can hold (0 to ' ..
              INT64_MAX .. ' exclusive)')
end

local desired = {}
for _, kv in ipairs(DESIRED) do
  local k = kv[1]
  if string.sub(k, 1, #PREFIX) ~= PREFIX or k == CHANNEL then
    return fail('refusing to seed a key outside ' .. PREFIX .. ': ' .. k)
  end
  desired[k] = kv[2]
end

-- A runtime override deploy keeps must be valid for its key: the app would load it.
local function invalid(k, v)
  local rule = RULES[k]
  if rule == nil then return nil end
  local ok, x = pcall(cjson.decode, v)
  if not ok then return 'not JSON' end
  if rule.kind == 'boolean' then
    if type(x) ~= 'boolean' then return 'not true or false' end
    return nil
  end
  if type(x) ~= 'number' or x ~= x or x == math.huge or x == -math.huge then
    return 'not a finite number'
  end
  if rule.gt ~= nil and not (x > rule.gt) then return 'must be greater than ' .. rule.gt end
  if rule.ge ~= nil and not (x >= rule.ge) then return 'must be at least ' .. rule.ge end
  if rule.lt ~= nil and not (x < rule.lt) then return 'must be less than ' .. rule.lt end
  if rule.le ~= nil and not (x <= rule.le) then return 'must be at most ' .. rule.le end
  return nil
end

local function cut(v)
  if #v > 80 then return string.sub(v, 1, 80) .. '...' end
  return v
end

local sets, records, dels, forgets = {}, {}, {}, {}
local changed_keys, drift, enforced = {}, {}, {}
local before, after = {}, {}
local ndrift, nenforced, nchanged = 0, 0, 0

local function change(k, cur, new)
  changed_keys[#changed_keys + 1] = k
  before[k] = cur or NULL
  after[k] = new or NULL
  nchanged = nchanged + 1
end

for _, kv in ipairs(DESIRED) do
  local k, want = kv[1], kv[2]
  local cur, err = read(k)
  if err then return fail(k .. ': ' .. err) end
  local last = seeded[k]
  if cur == want then
    if last ~= want then records[#records + 1] = k end
  elseif cur == nil or (last ~= nil and cur == last) then
    sets[#sets + 1] = k
    change(k, cur, want)
  elseif mode == 'enforce' then
    sets[#sets + 1] = k
    change(k, cur, want)
    enforced[k] = {runtime = cur, inventory = want}
    nenforced = nenforced + 1
  else
    local why = invalid(k, cur)
    if why then
      return fail('the runtime override of ' .. k .. ' (' .. cut(cur) .. ') is invalid: ' ..
                  why .. '; set a valid value in Redis, or deploy with ' ..
                  'flashmm_runtime_mode=enforce to replace it')
    end
    drift[k] = {runtime = cur, inventory = want}
    ndrift = ndrift + 1
  end
end

local stale = {}
for k, _ in pairs(seeded) do
  if desired[k] == nil then stale[#stale + 1] = k end
end
table.sort(stale)
for _, k in ipairs(stale) do
  if string.sub(k, 1, #PREFIX) ~= PREFIX or k == CHANNEL then
    forgets[#forgets + 1] = k          -- a bogus record: drop it, never touch the key
  else
    local cur, err = read(k)
    if err then return fail(k .. ': ' .. err) end
    if cur == nil then
      forgets[#forgets + 1] = k
    elseif cur == seeded[k] then
      dels[#dels + 1] = k
      change(k, cur, nil)
    else
      drift[k] = {runtime = cur, inventory = NULL}
      ndrift = ndrift + 1
    end
  end
end
table.sort(changed_keys)
table.sort(records)
table.sort(forgets)

-- Check only (drift, --check): keys under the prefix that no seed wrote and the schema does not
-- have (a typo of an operator, a key of an older release); the first 100 in name order.
local unknown = {}
if check then
  local cursor, found, seen = '0', {}, {}  -- SCAN may return a key twice
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', PREFIX .. '*', 'COUNT', 1000)
    cursor = page[1]
    for _, k in ipairs(page[2]) do
      if desired[k] == nil and seeded[k] == nil and k ~= CHANNEL and not seen[k] then
        seen[k] = true
        found[#found + 1] = k
      end
    end
  until cursor == '0'
  table.sort(found)
  for i = 1, math.min(#found, 100) do unknown[i] = found[i] end
  -- who made each override, when a runtime set recorded it (newest first; JSON, no value)
  local sets_made = ndrift > 0 and redis.pcall('LRANGE', AUDIT, 0, -1) or {}
  if type(sets_made) == 'table' and not sets_made.err then
    for _, item in ipairs(sets_made) do
      local ok, e = pcall(cjson.decode, item)
      if ok and type(e) == 'table' and type(e.key) == 'string' then
        local k = PREFIX .. string.gsub(e.key, '%.', ':')
        if drift[k] ~= nil and drift[k].by == nil then
          drift[k].by, drift[k].at = e.actor, e.time
        end
      end
    end
  end
end

local writes = #sets + #records + #dels + #forgets

-- Write phase: every failure mode was ruled out above.
if not check and writes > 0 then
  for _, k in ipairs(sets) do
    redis.call('SET', k, desired[k])
    redis.call('HSET', SEEDED, k, desired[k])
  end
  for _, k in ipairs(records) do redis.call('HSET', SEEDED, k, desired[k]) end
  for _, k in ipairs(dels) do
    redis.call('DEL', k)
    redis.call('HDEL', SEEDED, k)
  end
  for _, k in ipairs(forgets) do redis.call('HDEL', SEEDED, k) end
  if nchanged > 0 then
    redis.call('INCR', VERSION)
    version = redis.call('GET', VERSION)
    for _, k in ipairs(changed_keys) do
      local dotted = string.gsub(string.sub(k, #PREFIX + 1), ':', '.')
      redis.call('PUBLISH', CHANNEL, dotted)
    end
    redis.call('PUBLISH', SUMMARY, '{"version":' .. version .. ',"changed":' ..
      cjson.encode(changed_keys) .. ',"source":"deploy"}')
  end
end

local function jlist(t)
  if #t == 0 then return '[]' end
  return cjson.encode(t)
end
local function jmap(t, n)
  if n == 0 then return '{}' end
  return cjson.encode(t)
end

return '{"changed":' .. tostring((not check) and writes > 0) ..
  ',"would_change":' .. tostring(writes > 0) ..
  ',"check":' .. tostring(check) ..
  ',"mode":' .. cjson.encode(mode) ..
  ',"changed_keys":' .. jlist(changed_keys) ..
  ',"recorded":' .. jlist(records) ..
  ',"forgotten":' .. jlist(forgets) ..
  ',"unknown":' .. jlist(unknown) ..
  ',"drift":' .. jmap(drift, ndrift) ..
  ',"enforced":' .. jmap(enforced, nenforced) ..
  ',"before":' .. jmap(before, nchanged) ..
  ',"after":' .. jmap(after, nchanged) ..
  ',"version":' .. version .. '}'
"""


class SeedInputError(ValueError):
    """The desired mapping cannot be seeded (message names the key, values are not secret)."""


def lua_string(value: str) -> str:
    """A double-quoted Lua string literal holding exactly the UTF-8 bytes of ``value``.

    Printable ASCII passes through, except ``"``, ``\\`` and the Jinja2 delimiters' characters
    (``{``, ``}``, ``%``, ``#``); every other byte (control characters, non-ASCII) is written
    as a three-digit ``\\ddd`` escape, which Lua 5.1 reads back byte for byte."""
    out = ['"']
    for byte in value.encode("utf-8"):
        if 0x20 <= byte < 0x7F and byte not in b'"\\{}%#':
            out.append(chr(byte))
        else:
            out.append("\\%03d" % byte)
    out.append('"')
    return "".join(out)


def _pairs(desired: Mapping[str, str]) -> list:
    pairs = []
    for key, value in desired.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SeedInputError("desired keys and values must be strings (JSON-encoded values)")
        if not key.startswith(CONFIG_PREFIX) or key == UPDATES_CHANNEL:
            raise SeedInputError("not a seedable runtime key: %r" % key)
        try:
            json.loads(value)
        except ValueError:
            raise SeedInputError("value of %s is not JSON" % key) from None
        pairs.append((key, value))
    return sorted(pairs)


def _lua_number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SeedInputError("a rule's limit must be a number")
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _rules(rules: Mapping[str, Mapping]) -> list:
    lines = []
    for key in sorted(rules):
        rule = rules[key]
        parts = ['kind = "%s"' % ("boolean" if rule.get("kind") == "boolean" else "number")]
        parts += ["%s = %s" % (name, _lua_number(rule[name]))
                  for name in ("gt", "ge", "lt", "le") if name in rule]
        lines.append("  [%s] = { %s }," % (lua_string(key), ", ".join(parts)))
    return lines


def render_script(desired: Mapping[str, str], rules: Mapping[str, Mapping] | None = None) -> str:
    """The per-host seed script: a header comment, the desired pairs as a Lua table literal
    (sorted by key), each key's rule (``{"kind": "number"|"boolean", "gt": 0, ...}``, checked
    against a runtime override before it is kept), then ``SEED_LUA_BODY``.  Byte-identical for
    identical input."""
    pairs = _pairs(desired)
    digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode("utf-8")).hexdigest()
    lines = [
        "-- flashmm-deploy: Redis runtime-layer seed (generated, do not edit).",
        "-- Run with EVAL <script> 0 <keep|enforce> <check|apply>; returns a JSON report.",
        "-- Keys: %d, input sha256: %s" % (len(pairs), digest),
        "local DESIRED = {",
    ]
    lines += ["  {%s, %s}," % (lua_string(k), lua_string(v)) for k, v in pairs]
    lines.append("}")
    lines.append("local RULES = {")
    lines += _rules(rules or {})
    lines.append("}")
    return "\n".join(lines) + "\n" + SEED_LUA_BODY.lstrip("\n")


def script_sha(script: str) -> str:
    """The SHA1 Redis uses for EVALSHA."""
    return hashlib.sha1(script.encode("utf-8")).hexdigest()
