"""The host side of backup and restore: read a host's deployed files and dump its Redis runtime
keys (one call, under the host's lock), and put both back (one call, atomic per part).

Standard library only, no relative imports, Python 3.8+: Ansible ships this file to target
hosts as ``module_utils/flashmm_backup_host.py`` for ``library/flashmm_backup.py`` and
``library/flashmm_restore.py``.  On the controller (tests, the CLI) the package's own modules
are imported instead; both are the same files.

Redis keys backed up: ``flashmm:config:*`` (the runtime layer), ``flashmm:meta:*`` (the seed's
bookkeeping: seeded record, version) and ``flashmm:secure:*`` (the app's encrypted records,
kept as opaque values).  The dump is one Lua script (nothing interleaves): every key with its
type, remaining TTL in milliseconds (-1: none) and value.  The restore is one Lua script too:
it reads and checks everything first, then, only when something differs, deletes the backed-up
prefixes' keys the backup does not have, rewrites every key whose type, value or persistence
differs (a key with a TTL gets the TTL it had left when the backup was taken), and moves the
version forward (``max(current, backup) + 1``: a version never goes back, so every reader sees
a change), publishes each changed ``flashmm:config:*`` key's dotted name on
``flashmm:config:updates`` and a JSON summary on ``flashmm:meta:updates``.  Restoring the state
that is already there writes nothing.

All or nothing: the shape of every entry (``entry_problems``: type, TTL, value count and
pairing, zset scores, duplicates, the version) is checked in Python on the controller when the
backup is verified, again here before the script is sent, and once more by the script itself
before its first write; after those checks no command of the write phase can fail (Redis also
skips its out-of-memory check once a script has written), so a restore never stops half-way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat

try:
    from flashmm_deploy.hostside.filesync import HostLock, SyncError, read_state
    from flashmm_deploy.redis.client import Connection, RedisError, ReplyError
    from flashmm_deploy.redis.keys import (CONFIG_PREFIX, PREFIXES, SECURE_PREFIX,
                                           SUMMARY_CHANNEL, UPDATES_CHANNEL, VERSION_KEY,
                                           lua_locals)
    from flashmm_deploy.hostside.seed_apply import ENDPOINT_OPTIONS, SeedError, endpoint_from_params
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_filesync import (  # type: ignore[no-redef]
        HostLock, SyncError, read_state)
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, RedisError, ReplyError)
    from ansible.module_utils.flashmm_redis_keys import (  # type: ignore[no-redef]
        CONFIG_PREFIX, PREFIXES, SECURE_PREFIX, SUMMARY_CHANNEL, UPDATES_CHANNEL,
        VERSION_KEY, lua_locals)
    from ansible.module_utils.flashmm_seed_apply import (  # type: ignore[no-redef]
        ENDPOINT_OPTIONS, SeedError, endpoint_from_params)

TYPES = ("string", "hash", "list", "set", "zset")
CHANNEL = UPDATES_CHANNEL
MAX_TTL_MS = 100 * 365 * 86400 * 1000       # a remaining TTL beyond a century is not data
INT64_MAX = (1 << 63) - 1
# A zset score as Redis prints it (ZRANGE ... WITHSCORES) and ZADD reads it back; never NaN.
_SCORE = re.compile(rb"[+-]?(?:inf|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
MAX_FILE = 16 << 20          # a deployed file is a few KB; refuse to ship anything huge

# Where the module reaches Redis: the options of every module that talks to Redis.
REDIS_OPTIONS = ENDPOINT_OPTIONS

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


class BackupHostError(Exception):
    """A host's part failed; the message names the host's path or Redis endpoint, never a
    secret.  ``kind``: files, lock, redis (and the Redis client's kinds: connect, auth...)."""

    def __init__(self, message: str, kind: str = "files"):
        super().__init__(message)
        self.kind = kind


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---- read: the backup ------------------------------------------------------------------------

def read_files(root: str) -> dict:
    """The files the host's last deploy wrote (``.flashmm/state.json``), each with its mode,
    size, sha256 and base64 content.  Raises BackupHostError naming the path."""
    state_path = os.path.join(root, ".flashmm", "state.json")
    if not os.path.isfile(state_path):
        raise BackupHostError("%s: no FlashMM deploy here (no .flashmm/state.json): nothing to "
                              "back up" % root)
    state = read_state(root)
    paths = state.get("files")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BackupHostError("%s: unreadable (no list of deployed files)" % state_path)
    real_root = os.path.realpath(root)
    out = {}
    for rel in sorted(paths):
        norm = os.path.normpath(rel)
        path = os.path.join(root, norm)
        if norm.startswith("..") or os.path.isabs(norm) or not os.path.realpath(path).startswith(
                real_root + os.sep):
            raise BackupHostError("%s: lists %r, which is not inside %s" % (state_path, rel, root))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise BackupHostError("%s: missing (the last deploy wrote it; deploy again, or "
                                  "restore a backup)" % path) from None
        if not stat.S_ISREG(st.st_mode):
            raise BackupHostError("%s: not a regular file" % path)
        if st.st_size > MAX_FILE:
            raise BackupHostError("%s: %d bytes, more than a deployed file holds" % (path, st.st_size))
        with open(path, "rb") as fh:
            data = fh.read()
        out[norm] = {"mode": "%04o" % stat.S_IMODE(st.st_mode), "size": len(data),
                     "sha256": hashlib.sha256(data).hexdigest(), "content": _b64(data)}
    return {"files": out, "deployed_by": state.get("run_id"),
            "deployed_at": state.get("written_at")}


def dump_redis(endpoint) -> list:
    """Every backed-up key of ``endpoint`` in one script: a list of ``{key, type, ttl_ms,
    values}`` with the values base64 (binary-safe, and never matched by Ansible's masking).
    Raises BackupHostError."""
    try:
        with Connection(endpoint) as conn:
            reply = conn.pipeline(("EVAL", DUMP_LUA, 0))[0]
    except RedisError as exc:
        raise BackupHostError(str(exc), exc.kind) from None
    where = endpoint.label()
    if isinstance(reply, ReplyError):
        raise BackupHostError("redis %s: %s" % (where, reply), "redis")
    if not isinstance(reply, list):
        raise BackupHostError("redis %s: the dump returned %s" % (where, type(reply).__name__),
                              "redis")
    out = []
    for item in reply:
        key, kind, pttl, values = item
        out.append({"key": key.decode("utf-8", "surrogateescape"),
                    "type": kind.decode("ascii"), "ttl_ms": int(pttl),
                    "values": [_b64(v) for v in values]})
    return out


def backup(root: str, endpoint, *, lock_timeout: float, note: str,
           lease: dict | None = None) -> dict:
    """Files and Redis keys of one host, read under the host's lock and outside any other
    run's lease (a deploy or restore running on it, from its first step there to its last,
    finishes first, or this fails naming who holds it)."""
    if not os.path.isdir(root):
        raise BackupHostError("%s: no such directory (nothing deployed here?)" % root)
    try:
        with HostLock(root, note, lock_timeout, lease):
            result = read_files(root)
            result["redis"] = dump_redis(endpoint) if endpoint is not None else None
    except SyncError as exc:
        raise BackupHostError(str(exc), "lock") from None
    return result


# ---- the shape of restored Redis data -----------------------------------------------------------

def entry_problem(key, kind, ttl_ms, values, prefixes=PREFIXES):
    """What is wrong with one entry to restore (values as bytes), or None: a key under
    ``prefixes``, a known type, a TTL of -1 (none) or 1 ms to a century, the number of values
    its type takes (a string one, a hash or zset field/value pairs, none empty), no member or
    field twice, zset scores that are numbers, ``flashmm:meta:version`` a 64-bit count."""
    if not isinstance(key, str) or not key:
        return "a key that is not a string: %r" % (key,)
    if not any(key.startswith(p) for p in prefixes) or key == CHANNEL:
        return "%s: not a key the backup holds (expected one under %s)" % (
            key, ", ".join(p + "*" for p in prefixes))
    if kind not in TYPES:
        return "%s: type %r (expected %s)" % (key, kind, ", ".join(TYPES))
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or not (
            ttl_ms == -1 or 1 <= ttl_ms <= MAX_TTL_MS):
        return "%s: TTL %r ms (expected -1 for none, or 1 to %d)" % (key, ttl_ms, MAX_TTL_MS)
    if not isinstance(values, list) or not all(isinstance(v, bytes) for v in values):
        return "%s: values that are not a list of strings" % key
    n = len(values)
    if n == 0 or (kind == "string" and n != 1) or (kind in ("hash", "zset") and n % 2):
        expected = {"string": "exactly 1", "hash": "field/value pairs",
                    "zset": "member/score pairs"}.get(kind, "at least 1")
        return "%s: a %s with %d value(s) (expected %s)" % (key, kind, n, expected)
    members = values if kind == "set" else values[0::2] if kind in ("hash", "zset") else []
    if len(set(members)) != len(members):
        return "%s: a %s %s appears twice" % (key, kind, "field" if kind == "hash" else "member")
    if kind == "zset":
        for score in values[1::2]:
            if not _SCORE.fullmatch(score):
                return "%s: a zset score is not a number" % key
    if key == VERSION_KEY and (kind != "string" or not re.fullmatch(rb"[0-9]{1,19}", values[0])
                               or int(values[0]) > INT64_MAX):
        return "%s: expected a string holding a non-negative 64-bit integer" % key
    return None


def entries_problems(entries, prefixes=PREFIXES):
    """``entry_problem`` of module entries (values base64), plus keys given twice; one line
    per problem."""
    problems, seen = [], set()
    for e in entries:
        if not isinstance(e, dict):
            problems.append("an entry that is not a mapping")
            continue
        key = e.get("key")
        try:
            raw = e.get("values")
            values = [base64.b64decode(v, validate=True) for v in raw] \
                if isinstance(raw, list) and all(isinstance(v, str) for v in raw) else None
        except (binascii.Error, ValueError):
            values = None
        problem = entry_problem(key, e.get("type"), e.get("ttl_ms"), values, prefixes)
        if problem is None and key in seen:
            problem = "%s: in the backup twice" % key
        if problem:
            problems.append(problem)
        seen.add(key)
    return problems


# ---- write: the restore ----------------------------------------------------------------------

def restore_argv(entries: list, backup_id: str, action: str) -> tuple:
    argv = [action, backup_id]
    for e in entries:
        values = [base64.b64decode(v) for v in e["values"]]
        argv += [e["key"], e["type"], str(int(e["ttl_ms"])), str(len(values))] + values
    return tuple(argv)


def restore_redis(endpoint, entries: list, backup_id: str, check: bool) -> dict:
    """Run the restore script (``check``: its read phase only).  Returns its JSON report.
    Raises BackupHostError."""
    problems = entries_problems(entries)
    if problems:
        raise BackupHostError("the backup's Redis data has the wrong shape, nothing written: "
                              + "; ".join(problems), "input")
    argv = restore_argv(entries, backup_id, "check" if check else "apply")
    try:
        with Connection(endpoint) as conn:
            reply = conn.pipeline(("EVAL", RESTORE_LUA, 0) + argv)[0]
    except RedisError as exc:
        raise BackupHostError(str(exc), exc.kind) from None
    where = endpoint.label()
    if isinstance(reply, ReplyError):
        raise BackupHostError("redis %s: %s" % (where, reply), "redis")
    try:
        return json.loads(reply.decode("utf-8", "replace"))
    except (AttributeError, ValueError):
        raise BackupHostError("redis %s: the restore script returned no JSON" % where,
                              "redis") from None


def _shown(key: str, value) -> str:
    if value is None:
        return "(absent)"
    if key.startswith(SECURE_PREFIX):
        return "<redacted>"
    kind, values = value
    return "%s %s" % (kind, json.dumps(values, ensure_ascii=False))


def redis_diff(report: dict, where: str) -> dict:
    """The ``--diff`` entry of a restore report: one line per changed key, secure records'
    values never shown."""
    keys = report.get("changed_keys") or []
    return {"before_header": where, "after_header": where,
            "before": "".join("%s = %s\n" % (k, _shown(k, report["before"].get(k)))
                              for k in keys),
            "after": "".join("%s = %s\n" % (k, _shown(k, report["after"].get(k)))
                             for k in keys)}


def endpoint_of(params):
    """The Redis endpoint of module options (``REDIS_OPTIONS``), or None when not given."""
    if not params:
        return None
    try:
        return endpoint_from_params(params)
    except (SeedError, RedisError) as exc:
        raise BackupHostError(str(exc), "input") from None
