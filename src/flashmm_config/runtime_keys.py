"""The runtime layer in Redis: reading it (over any object with the ``Connection`` interface,
``call`` and ``pipeline``; the unit tests pass a fake) and writing one key the way deploy's seed
does (``WRITE_LUA``).

Keys are found with SCAN (never KEYS, which blocks the server).  Only keys whose fields.json
entry says ``runtime: true`` count; anything else under ``flashmm:config:`` is logged once and
ignored.  A value that is not JSON, or not valid for its key's kind, is ignored and logged with
key and value (runtime keys are never secret).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from flashmm_deploy.redis.client import ReplyError
from flashmm_deploy.redis.keys import (AUDIT_RUNTIME_LIST, SUMMARY_CHANNEL, UPDATES_CHANNEL,
                                       VERSION_KEY, lua_locals)
from flashmm_config.layers import (CONFIG_PREFIX, Field, dotted_key, redis_key,
                                                  runtime_value)
from flashmm_config.log import Log

SCAN_COUNT = 200
MAX_SHOWN = 200                     # longest value text shown in a log line
SET, ABSENT, INVALID = "set", "absent", "invalid"

# One runtime key set or removed, as deploy's seed script writes (seed_script.SEED_LUA_BODY):
# the value, one INCR of flashmm:meta:version, the dotted key published on
# flashmm:config:updates (what every subscriber reloads), a JSON summary on
# flashmm:meta:updates ({"version", "changed", "source": "runtime", "actor"}) and who changed
# which key (no value) on the audit list flashmm:audit:runtime (the newest 1,000: drift names
# who made an override, the host's audit log copies them: flashmm_deploy.hostside.audit_log),
# all in one script, so no client sees the value without the version or misses the message.  The value
# was validated before (against the configuration at ARGV[6], the version it was read at): if
# the version moved since, nothing is written and the caller validates again.  Checks come
# before the first write: a failure changes nothing.
# ARGV: op (set|unset), redis key, JSON value ('' for unset), dotted key, actor, version seen.
WRITE_LUA = "\n" + lua_locals(
    VERSION=VERSION_KEY, PREFIX=CONFIG_PREFIX, CHANNEL=UPDATES_CHANNEL, SUMMARY=SUMMARY_CHANNEL,
    AUDIT=AUDIT_RUNTIME_LIST) + r"""local AUDIT_KEEP = 1000
local op, key, value, dotted, actor, seen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local function fail(msg) return redis.error_reply('ERR flashmm runtime: ' .. msg) end
if string.sub(key, 1, #PREFIX) ~= PREFIX or key == CHANNEL then
  return fail('not a runtime config key: ' .. key)
end
local version = redis.pcall('GET', VERSION)
if type(version) == 'table' and version.err then return fail(VERSION .. ': ' .. version.err) end
version = version or '0'
if not string.match(version, '^%d+$') or #version > 18 then
  return fail(VERSION .. ' is not an integer the next increment can hold')
end
if seen ~= '' and version ~= seen then return 'moved ' .. version end
local cur = redis.pcall('GET', key)
if type(cur) == 'table' and cur.err then return fail(key .. ': ' .. cur.err) end
if (op == 'set' and cur == value) or (op == 'unset' and cur == false) then
  return 'unchanged ' .. version
end
if op == 'set' then redis.call('SET', key, value) else redis.call('DEL', key) end
version = tostring(redis.call('INCR', VERSION))
redis.call('PUBLISH', CHANNEL, dotted)
redis.call('PUBLISH', SUMMARY, '{"version":' .. version .. ',"changed":' ..
  cjson.encode({key}) .. ',"source":"runtime","actor":' .. cjson.encode(actor) .. '}')
-- pcall: a stack whose ACL file predates the audit list refuses TIME and LPUSH, and the
-- change made above must stand
local now = redis.pcall('TIME')
now = type(now) == 'table' and not now.err and tonumber(now[1]) or nil
local pushed = redis.pcall('LPUSH', AUDIT, cjson.encode({time = now,
  actor = actor, change = 'runtime ' .. op, key = dotted,
  version = {tonumber(version) - 1, tonumber(version)}}))
if type(pushed) == 'number' then redis.pcall('LTRIM', AUDIT, 0, AUDIT_KEEP - 1) end
return 'changed ' .. version
"""


WRITE_SHA = hashlib.sha1(WRITE_LUA.encode("utf-8")).hexdigest()


def json_value(value: Any) -> str:
    """A runtime value as Redis holds it (what deploy's seed writes: ``json.dumps``)."""
    return json.dumps(value)


def read_version(conn: Any) -> Any:
    """``flashmm:meta:version`` as an int (None when absent; the raw text when no integer)."""
    raw = conn.call("GET", VERSION_KEY)
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return int(text) if text.isascii() and text.isdigit() else text


def write(conn: Any, field: Field, value: Any, *, actor: str, seen: Any) -> tuple[str, int]:
    """Set (``value`` not None) or remove one runtime key with the version bump and the
    messages.  Returns (outcome, version), outcome ``changed``, ``unchanged`` or ``moved``
    (the version is no longer ``seen``: nothing written).  Raises ReplyError."""
    argv = ("set" if value is not None else "unset", redis_key(field.key),
            json_value(value) if value is not None else "", field.key, actor,
            str(seen if seen is not None else 0))
    reply = conn.pipeline(("EVALSHA", WRITE_SHA, 0) + argv)[0]
    if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
        reply = conn.pipeline(("EVAL", WRITE_LUA, 0) + argv)[0]
    if isinstance(reply, ReplyError):
        raise reply
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    outcome, _, version = text.partition(" ")
    return outcome, int(version)


def shown_raw(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")


def scan_keys(conn: Any, pattern: str) -> list[str]:
    """Every key matching ``pattern``, sorted, by a full SCAN iteration."""
    found = set()
    cursor = "0"
    while True:
        cursor_raw, batch = conn.call("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
        found.update(k.decode("utf-8", "replace") for k in batch)
        cursor = cursor_raw.decode() if isinstance(cursor_raw, bytes) else str(cursor_raw)
        if cursor == "0":
            return sorted(found)


def _accept(field: Field, name: str, raw: Any, log: Log) -> tuple[str, Any]:
    """(status, value) of one GET reply, status ``set``, ``absent`` or ``invalid`` (logged)."""
    if raw is None:
        return ABSENT, None
    if isinstance(raw, ReplyError):
        log.warning("ignoring %s: %s" % (name, raw))
        return INVALID, None
    try:
        return SET, runtime_value(field, raw)
    except ValueError as exc:
        log.warning("ignoring runtime value of %s (%s): %s" % (field.key, shown_raw(raw),
                                                               exc))
        return INVALID, None


def read_runtime(conn: Any, fields: Mapping[str, Field], log: Log) -> dict[str, Any]:
    """The whole runtime layer: {dotted key: value}."""
    wanted = []
    for name in scan_keys(conn, CONFIG_PREFIX + "*"):
        field = fields.get(dotted_key(name) or "")
        if field is None or not field.runtime or redis_key(field.key) != name:
            log.once(("not runtime", name),
                     "ignoring %s: not a runtime config key" % name)
            continue
        wanted.append((field, name))
    replies = conn.pipeline(*[("GET", name) for _, name in wanted]) if wanted else []
    values = {}
    for (field, name), raw in zip(wanted, replies):
        status, value = _accept(field, name, raw, log)
        if status == SET:
            values[field.key] = value
    return values


def read_one(conn: Any, field: Field, log: Log) -> tuple[str, Any]:
    """(status, value) of one runtime key: ``set``, ``absent`` or ``invalid`` (logged)."""
    name = redis_key(field.key)
    try:
        raw = conn.call("GET", name)
    except ReplyError as exc:
        raw = exc
    return _accept(field, name, raw, log)
