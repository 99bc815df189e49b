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
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

try:
    from flashmm_deploy.filesync import HostLock, SyncError, read_state
    from flashmm_deploy.redis_client import Connection, RedisError, ReplyError
    from flashmm_deploy.seed_apply import ENDPOINT_OPTIONS, SeedError, endpoint_from_params
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_filesync import (  # type: ignore[no-redef]
        HostLock, SyncError, read_state)
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, RedisError, ReplyError)
    from ansible.module_utils.flashmm_seed_apply import (  # type: ignore[no-redef]
        ENDPOINT_OPTIONS, SeedError, endpoint_from_params)

PREFIXES = ("flashmm:config:", "flashmm:meta:", "flashmm:secure:")
SECURE_PREFIX = "flashmm:secure:"
VERSION_KEY = "flashmm:meta:version"
TYPES = ("string", "hash", "list", "set", "zset")
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
DUMP_LUA = READ_VALUES_LUA + r"""
local PATTERNS = {'flashmm:config:*', 'flashmm:meta:*', 'flashmm:secure:*'}
local keys = {}
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
RESTORE_LUA = READ_VALUES_LUA + r"""
local PREFIXES = {'flashmm:config:', 'flashmm:meta:', 'flashmm:secure:'}
local VERSION = 'flashmm:meta:version'
local CHANNEL = 'flashmm:config:updates'
local SUMMARY = 'flashmm:meta:updates'
local CONFIG = 'flashmm:config:'
local SECURE = 'flashmm:secure:'
local INT64_MAX = '9223372036854775807'
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
  if n == nil or pttl == nil then return fail('malformed entry for ' .. k) end
  local vals = {}
  for j = 1, n do vals[j] = ARGV[i + 3 + j] end
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


def backup(root: str, endpoint, *, lock_timeout: float, note: str) -> dict:
    """Files and Redis keys of one host, read under the host's lock (a deploy or restore
    running on it finishes first, or this fails naming who holds it)."""
    if not os.path.isdir(root):
        raise BackupHostError("%s: no such directory (nothing deployed here?)" % root)
    try:
        with HostLock(root, note, lock_timeout):
            result = read_files(root)
            result["redis"] = dump_redis(endpoint) if endpoint is not None else None
    except SyncError as exc:
        raise BackupHostError(str(exc), "lock") from None
    return result


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
    for e in entries:
        if e.get("type") not in TYPES:
            raise BackupHostError("the backup's key %s has type %r" % (e.get("key"), e.get("type")),
                                  "input")
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
