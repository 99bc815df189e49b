"""The host side of backup and restore: read a host's deployed files and dump its Redis runtime
keys (one call, under the host's lock), and put both back (one call, atomic per part).

Standard library only, no relative imports, Python 3.8+: Ansible ships this file to target
hosts as ``module_utils/flashmm_backup_host.py`` for ``library/flashmm_backup.py`` and
``library/flashmm_restore.py``.  On the controller (tests, the CLI) the package's own modules
are imported instead; both are the same files.

Redis keys backed up: ``flashmm:config:*`` (the runtime layer), ``flashmm:meta:*`` (the seed's
bookkeeping: seeded record, version) and ``flashmm:secure:*`` (the app's encrypted records,
kept as opaque values).  The dump is one Lua script (``backup_lua``; nothing interleaves): every key with its
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
    from flashmm_deploy.hostside.audit_log import entry, names
    from flashmm_deploy.hostside.filesync import HostLock, SyncError, read_state
    from flashmm_deploy.redis.client import Connection, RedisError, ReplyError
    from flashmm_deploy.redis.keys import PREFIXES, SECURE_PREFIX, UPDATES_CHANNEL, VERSION_KEY
    from flashmm_deploy.hostside.seed_apply import ENDPOINT_OPTIONS, SeedError, endpoint_from_params
    from flashmm_deploy.hostside.backup_lua import DUMP_LUA, RESTORE_LUA
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_audit_log import entry, names  # type: ignore[no-redef]
    from ansible.module_utils.flashmm_filesync import (  # type: ignore[no-redef]
        HostLock, SyncError, read_state)
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, RedisError, ReplyError)
    from ansible.module_utils.flashmm_redis_keys import (  # type: ignore[no-redef]
        PREFIXES, SECURE_PREFIX, UPDATES_CHANNEL, VERSION_KEY)
    from ansible.module_utils.flashmm_seed_apply import (  # type: ignore[no-redef]
        ENDPOINT_OPTIONS, SeedError, endpoint_from_params)
    from ansible.module_utils.flashmm_backup_lua import (  # type: ignore[no-redef]
        DUMP_LUA, RESTORE_LUA)

TYPES = ("string", "hash", "list", "set", "zset")
CHANNEL = UPDATES_CHANNEL
MAX_TTL_MS = 100 * 365 * 86400 * 1000       # a remaining TTL beyond a century is not data
INT64_MAX = (1 << 63) - 1
# A zset score as Redis prints it (ZRANGE ... WITHSCORES) and ZADD reads it back; never NaN.
_SCORE = re.compile(rb"[+-]?(?:inf|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
MAX_FILE = 16 << 20          # a deployed file is a few KB; refuse to ship anything huge

# Where the module reaches Redis: the options of every module that talks to Redis.
REDIS_OPTIONS = ENDPOINT_OPTIONS


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


class RestoreStep:
    """A backup's Redis data as the Redis step of a converge (``converge.RedisStep``): the
    restore script's dry run, then its write.  ``endpoints``: deploy's login first, then the
    fallbacks tried when Redis refuses it (an ACL reload in between may change which one it
    accepts, so every call starts from the first).  In check mode a Redis that is not running
    is a warning (``warn``): every key of the backup would be written."""

    def __init__(self, endpoints, entries, backup_id, *, check_mode, warn):
        self.endpoints, self.entries, self.backup_id = endpoints, entries, backup_id
        self.check_mode, self.warn = check_mode, warn

    def _run(self, dry: bool) -> dict:
        for n, where in enumerate(self.endpoints):
            try:
                return restore_redis(where, self.entries, self.backup_id, dry)
            except BackupHostError as exc:
                if exc.kind != "auth" or n == len(self.endpoints) - 1:
                    raise
        raise BackupHostError("no Redis endpoint to restore to", "input")

    def check(self) -> dict:
        try:
            return self._run(True)
        except BackupHostError as exc:
            if not (self.check_mode and exc.kind == "connect"):
                raise
            self.warn("%s; once Redis runs, every key of the backup would be written" % exc)
            keys = sorted(e["key"] for e in self.entries)
            return {"changed": False, "would_change": True, "changed_keys": keys,
                    "before": {}, "after": {k: None for k in keys}, "unreachable": True}

    def apply(self, report: dict) -> dict:
        return self._run(False) if report["would_change"] else report

    def audit_lines(self, report: dict, audit: dict) -> list:
        if not report.get("changed"):
            return []
        return [entry(audit, "redis restored", backup=self.backup_id,
                      version=[report.get("version_before"), report.get("version")],
                      **names(report.get("changed_keys") or []))]
