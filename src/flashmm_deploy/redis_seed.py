"""Seed the Redis runtime layer (``flashmm:config:<section>:<key>``) in one atomic script.

Stdlib only, no relative imports: this file is also shipped to target hosts inside the
``flashmm_redis_seed`` Ansible module (``module_utils/flashmm_redis_seed.py`` is a symlink to
it), where neither redis-py nor this package is installed.

``render_script(desired)`` turns the desired ``{redis key: JSON value}`` mapping into a per-host
Lua script (a header comment, a table literal of the desired pairs, then ``SEED_LUA_BODY``);
``apply()`` runs it over a minimal RESP2 client in one EVALSHA (EVAL when the script is not
cached yet) and returns the decoded JSON result.

Three-way semantics (like ``kubectl apply``'s last-applied record), computed and applied by the
script inside one EVAL, so nothing can interleave:

* ``flashmm:config:seeded`` (hash) records the value deploy last seeded for each key.
* desired key absent, or equal to what was last seeded -> takes the inventory value;
* desired key already equal to the inventory value -> only recorded as seeded;
* otherwise it is an operator override: kept and reported as drift (``keep``), or overwritten
  (``enforce``, reported under ``enforced``); a kept override leaves the record untouched;
* recorded but no longer desired: deleted when unchanged since seeding, else kept as drift;
* when a config key changed: INCR ``flashmm:config:version`` and PUBLISH one
  ``{"version", "changed", "source": "deploy"}`` message on ``flashmm:config:updates``.

The script reads everything (and fails on wrongly typed keys) before it writes anything, since
Redis does not roll a script back when it errors half way.
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any, Iterable, Mapping, Optional

PREFIX = "flashmm:config:"
SEEDED_KEY = PREFIX + "seeded"
VERSION_KEY = PREFIX + "version"
UPDATES_CHANNEL = PREFIX + "updates"
RESERVED_KEYS = frozenset({SEEDED_KEY, VERSION_KEY})
MODES = ("keep", "enforce")
REDACTED = "<redacted>"

__all__ = [
    "SEED_LUA_BODY", "SeedError", "render_script", "lua_string", "script_sha", "apply",
    "RespConnection", "PREFIX", "SEEDED_KEY", "VERSION_KEY", "UPDATES_CHANNEL", "MODES",
]


class SeedError(Exception):
    """Seeding failed.  ``kind`` is one of ``input``, ``connect``, ``auth``, ``select``,
    ``script``, ``protocol``.  The message names host, port and db, never a password."""

    def __init__(self, message: str, kind: str = "script"):
        super().__init__(message)
        self.kind = kind


# The generic part of every rendered script.  It expects two locals defined before it:
# DESIRED, a list of {key, json_value} pairs sorted by key, and SECRET, a list of key names whose
# values must never appear in the result or in a message.  ARGV[1] = keep|enforce,
# ARGV[2] = check|apply, ARGV[3..] = more secret key names.  Returns a JSON string.
# (No double braces or brace-percent in here: the script may pass through Jinja2 unharmed.)
SEED_LUA_BODY = r"""
local SEEDED = 'flashmm:config:seeded'
local VERSION = 'flashmm:config:version'
local CHANNEL = 'flashmm:config:updates'
local PREFIX = 'flashmm:config:'
local REDACTED = '<redacted>'
local NULL = cjson.null

local mode = ARGV[1] or 'keep'
local action = ARGV[2] or 'apply'
if mode ~= 'keep' and mode ~= 'enforce' then
  return redis.error_reply('ERR flashmm seed: mode must be keep or enforce')
end
if action ~= 'check' and action ~= 'apply' then
  return redis.error_reply('ERR flashmm seed: action must be check or apply')
end
local check = (action == 'check')

local secret = {}
for _, k in ipairs(SECRET) do secret[k] = true end
for i = 3, #ARGV do secret[ARGV[i]] = true end

local function fail(msg)
  return redis.error_reply('ERR flashmm seed: ' .. msg)
end

-- Read phase: nothing below writes until every read has succeeded.
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

local version, verr = read(VERSION)
if verr then return fail(VERSION .. ': ' .. verr) end
if version ~= nil and not string.match(version, '^%-?%d+$') then
  return fail(VERSION .. ' is not an integer')
end
version = tonumber(version or '0')

local desired = {}
for _, kv in ipairs(DESIRED) do
  local k = kv[1]
  if k == SEEDED or k == VERSION or string.sub(k, 1, #PREFIX) ~= PREFIX then
    return fail('refusing to seed reserved or foreign key ' .. k)
  end
  desired[k] = kv[2]
end

local function shown(k, v)
  if v == nil then return NULL end
  if secret[k] then return REDACTED end
  return v
end

local sets, records, dels, forgets = {}, {}, {}, {}
local changed_keys, drift, enforced = {}, {}, {}
local before, after = {}, {}
local ndrift, nenforced, nchanged = 0, 0, 0

local function change(k, cur, new)
  changed_keys[#changed_keys + 1] = k
  before[k] = shown(k, cur)
  after[k] = shown(k, new)
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
    enforced[k] = {runtime = shown(k, cur), inventory = shown(k, want)}
    nenforced = nenforced + 1
  else
    drift[k] = {runtime = shown(k, cur), inventory = shown(k, want)}
    ndrift = ndrift + 1
  end
end

local stale = {}
for k, _ in pairs(seeded) do
  if desired[k] == nil then stale[#stale + 1] = k end
end
table.sort(stale)
for _, k in ipairs(stale) do
  if k == SEEDED or k == VERSION or string.sub(k, 1, #PREFIX) ~= PREFIX then
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
      drift[k] = {runtime = shown(k, cur), inventory = NULL}
      ndrift = ndrift + 1
    end
  end
end
table.sort(changed_keys)

local writes = #sets + #records + #dels + #forgets

-- Write phase.
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
    version = redis.call('INCR', VERSION)
    redis.call('PUBLISH', CHANNEL, '{"version":' .. string.format('%d', version) ..
      ',"changed":' .. cjson.encode(changed_keys) .. ',"source":"deploy"}')
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
table.sort(records)
table.sort(forgets)

return '{"changed":' .. tostring((not check) and writes > 0) ..
  ',"would_change":' .. tostring(writes > 0) ..
  ',"check":' .. tostring(check) ..
  ',"mode":' .. cjson.encode(mode) ..
  ',"changed_keys":' .. jlist(changed_keys) ..
  ',"recorded":' .. jlist(records) ..
  ',"forgotten":' .. jlist(forgets) ..
  ',"drift":' .. jmap(drift, ndrift) ..
  ',"enforced":' .. jmap(enforced, nenforced) ..
  ',"before":' .. jmap(before, nchanged) ..
  ',"after":' .. jmap(after, nchanged) ..
  ',"version":' .. string.format('%d', version) .. '}'
"""


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


def _check_desired(desired: Mapping[str, str]) -> list[tuple[str, str]]:
    pairs = []
    for key, value in desired.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SeedError("desired keys and values must be strings (JSON-encoded values)",
                            "input")
        if not key.startswith(PREFIX) or key in RESERVED_KEYS or key == UPDATES_CHANNEL:
            raise SeedError(f"not a seedable runtime key: {key!r}", "input")
        try:
            json.loads(value)
        except ValueError:
            raise SeedError(f"value of {key} is not JSON", "input") from None
        pairs.append((key, value))
    return sorted(pairs)


def render_script(desired: Mapping[str, str], secret_keys: Iterable[str] = ()) -> str:
    """The per-host seed script: header comment, the desired pairs as a Lua table literal
    (sorted by key), the secret key names, then ``SEED_LUA_BODY``.  Byte-identical for
    identical input; holds no timestamp."""
    pairs = _check_desired(desired)
    secrets = sorted(set(secret_keys))
    digest = hashlib.sha256(
        json.dumps([pairs, secrets], separators=(",", ":")).encode("utf-8")).hexdigest()
    lines = [
        "-- flashmm-deploy: Redis runtime-layer seed (generated, do not edit).",
        "-- Run with EVAL <script> 0 <keep|enforce> <check|apply> [secret key...];",
        "-- returns a JSON report.  Keys: %d, secret keys: %d, input sha256: %s"
        % (len(pairs), len(secrets), digest),
        "local DESIRED = {",
    ]
    lines += ["  {%s, %s}," % (lua_string(k), lua_string(v)) for k, v in pairs]
    lines.append("}")
    lines.append("local SECRET = {")
    lines += ["  %s," % lua_string(k) for k in secrets]
    lines.append("}")
    return "\n".join(lines) + "\n" + SEED_LUA_BODY.lstrip("\n")


def script_sha(script: str) -> str:
    """The SHA1 Redis uses for EVALSHA."""
    return hashlib.sha1(script.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Minimal RESP2 client


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RespConnection:
    """One blocking RESP2 connection: ``call`` sends one command, ``pipeline`` several in one
    write.  Replies: str (simple), bytes (bulk), int, None (null), list; error replies are
    returned as ``RedisReplyError`` instances by ``pipeline`` and raised by ``call``."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, label: Optional[str] = None):
        self.where = label or "%s:%s" % (host, port)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SeedError("cannot connect to redis at %s: %s"
                            % (self.where, exc.strerror or exc.__class__.__name__),
                            "connect") from None
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def __enter__(self) -> "RespConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def encode(*args: Any) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode("utf-8")
            elif isinstance(arg, int):
                arg = str(arg).encode("ascii")
            elif not isinstance(arg, bytes):
                raise TypeError("RESP arguments are str, bytes or int")
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)

    def _io_error(self, exc: BaseException) -> SeedError:
        if isinstance(exc, socket.timeout):
            return SeedError("timed out talking to redis at %s" % self.where, "connect")
        return SeedError("connection to redis at %s failed: %s"
                         % (self.where, getattr(exc, "strerror", None) or exc.__class__.__name__),
                         "connect")

    def send(self, *commands: tuple) -> None:
        try:
            self.sock.sendall(b"".join(self.encode(*cmd) for cmd in commands))
        except OSError as exc:
            raise self._io_error(exc) from None

    def _line(self) -> bytes:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise SeedError("connection to redis at %s closed mid-reply" % self.where,
                            "protocol")
        return line[:-2]

    def read_reply(self) -> Any:
        try:
            return self._parse()
        except (OSError, socket.timeout) as exc:
            raise self._io_error(exc) from None

    def _parse(self) -> Any:
        line = self._line()
        if not line:
            raise SeedError("empty reply line from redis at %s" % self.where, "protocol")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            if len(data) != size + 2 or data[-2:] != b"\r\n":
                raise SeedError("connection to redis at %s closed mid-reply" % self.where,
                                "protocol")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._parse() for _ in range(count)]
        raise SeedError("unexpected reply type %r from redis at %s" % (kind, self.where),
                        "protocol")

    def pipeline(self, *commands: tuple) -> list:
        self.send(*commands)
        return [self.read_reply() for _ in commands]

    def call(self, *args: Any) -> Any:
        reply = self.pipeline(args)[0]
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply


def _scrub(text: str, password: Optional[str]) -> str:
    if password:
        text = text.replace(password, "********")
    return text


def apply(host: str, port: int, db: int, script: str, *, mode: str = "keep",
          check: bool = False, username: Optional[str] = None,
          password: Optional[str] = None, timeout: float = 5.0,
          secret_keys: Iterable[str] = ()) -> dict:
    """Run a rendered seed script against ``host:port`` database ``db`` and return its decoded
    JSON report.  Round trips: one for AUTH + SELECT (pipelined), then one EVALSHA, plus one
    EVAL only when the script is not in the server's script cache yet.  Raises ``SeedError``
    (message without the password) on any failure."""
    if mode not in MODES:
        raise SeedError("mode must be one of %s, not %r" % ("/".join(MODES), mode), "input")
    if not isinstance(db, int) or isinstance(db, bool) or db < 0:
        raise SeedError("db must be a non-negative integer", "input")
    if username and not password:
        raise SeedError("a redis username needs a password", "input")
    where = "%s:%s/%s" % (host, port, db)
    argv = [mode, "check" if check else "apply", *sorted(set(secret_keys))]
    with RespConnection(host, port, timeout, label=where) as conn:
        try:
            setup = []
            if password:
                setup.append(("AUTH", username, password) if username else ("AUTH", password))
            setup.append(("SELECT", db))
            replies = conn.pipeline(*setup)
            if password and isinstance(replies[0], RedisReplyError):
                raise SeedError("redis at %s refused authentication%s: %s" % (
                    where, " as user %r" % username if username else "",
                    _scrub(str(replies[0]), password)), "auth")
            if isinstance(replies[-1], RedisReplyError):
                err = str(replies[-1])
                kind = "auth" if err.startswith(("NOAUTH", "WRONGPASS", "NOPERM")) else "select"
                raise SeedError("redis at %s: SELECT %d failed: %s"
                                % (where, db, _scrub(err, password)), kind)
            reply = conn.pipeline(("EVALSHA", script_sha(script), 0, *argv))[0]
            if isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT"):
                reply = conn.pipeline(("EVAL", script, 0, *argv))[0]
        except SeedError as exc:
            raise SeedError(_scrub(str(exc), password), exc.kind) from None
    if isinstance(reply, RedisReplyError):
        err = str(reply)
        kind = "auth" if err.startswith(("NOAUTH", "WRONGPASS", "NOPERM")) else "script"
        raise SeedError("seed script failed on redis at %s: %s" % (where, _scrub(err, password)),
                        kind)
    if not isinstance(reply, bytes):
        raise SeedError("seed script on redis at %s returned %r, not JSON" % (where, type(reply)),
                        "protocol")
    try:
        return json.loads(reply.decode("utf-8", "replace"))
    except ValueError:
        raise SeedError("seed script on redis at %s returned invalid JSON" % where,
                        "protocol") from None


# ---- the Ansible face (used by library/flashmm_host.py through module_utils) ----------------

# Argument spec of the module's ``seed`` option.
SEED_OPTIONS = dict(
    # Not no_log: the script holds runtime keys only, which the schema forbids to be secrets
    # (schema.py asserts it).  Marking it no_log would make Ansible mask every copy of it in
    # the result, which blanks the --diff of redis/seed.lua written in the same call.
    script=dict(type="str", required=True, no_log=False),
    host=dict(type="str", default="127.0.0.1"),
    port=dict(type="int", default=6379),
    db=dict(type="int", default=0),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    mode=dict(type="str", choices=list(MODES), default="keep"),
    timeout=dict(type="float", default=5.0),
    secret_keys=dict(type="list", elements="str", default=[], no_log=False),
)


def _lines(values: Mapping[str, Any]) -> str:
    return "".join("%s = %s\n" % (k, v) for k, v in sorted(values.items()) if v is not None)


def apply_for_module(params: Mapping[str, Any], check: bool) -> tuple[dict, dict, list[str]]:
    """Run the seed described by module ``params`` (``SEED_OPTIONS``).  Returns the result to
    report, its ``--diff`` entry, and warnings (one per runtime override kept, key names only).
    Raises SeedError."""
    where = "redis://%s:%s/%s" % (params["host"], params["port"], params["db"])
    result = apply(params["host"], params["port"], params["db"], params["script"],
                   mode=params["mode"], check=check, username=params["username"],
                   password=params["password"], timeout=params["timeout"],
                   secret_keys=params["secret_keys"])
    warnings = ["runtime override kept in %s: %s (inventory value not applied; "
                "flashmm_runtime_mode=enforce overwrites it)" % (where, key)
                for key in sorted(result["drift"])]
    out = dict(
        changed=result["would_change"] if check else result["changed"],
        changed_keys=result["changed_keys"],
        drift=result["drift"],
        enforced=result["enforced"],
        version=result["version"],
    )
    diff = dict(before=_lines(result["before"]), after=_lines(result["after"]),
                before_header=where, after_header=where)
    return out, diff, warnings
