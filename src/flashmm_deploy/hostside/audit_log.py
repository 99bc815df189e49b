"""The host's audit trail: one JSON line per change, appended to ``<root>/.flashmm/audit.log``.

With ``security.audit_logging`` on, every host module that changes something (files written
by deploy, rotation or restore; runtime keys seeded; Redis restored; records re-encrypted; a
backup taken) appends what it changed, under the host's lock, after the change succeeded::

    {"time": "...Z", "host": "mm-1", "actor": "ops@laptop", "action": "deploy",
     "run": "<run id>", "commit": "<toolkit commit>", "change": "file",
     "file": ".env", "state": "updated", "keys": ["CAMBRIAN_API_SECRET"]}

Only names: file paths, environment variable names, dotted config keys, counts and version
numbers; never a value (a changed ``.env`` line logs its variable's name).  The file is 0600
in a 0700 directory, only ever appended to (``O_APPEND``, one ``write`` per line), and rotated
by size: ``audit.log`` -> ``audit.log.1`` ... ``audit.log.<keep>``, the oldest dropped.  A
second lock file (``audit.lock``) serialises appenders that hold no host lock (a backup).

Stdlib only, no relative imports: shipped to target hosts as ``module_utils/flashmm_audit_log.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

try:
    from flashmm_deploy.redis.keys import AUDIT_RUNTIME_LIST
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_keys import AUDIT_RUNTIME_LIST  # type: ignore[no-redef]

AUDIT_DIR = ".flashmm"
AUDIT_FILE = AUDIT_DIR + "/audit.log"
_LOCK_FILE = AUDIT_DIR + "/audit.lock"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
# What the controller passes (the modules' ``audit`` option) beyond the rotation settings
CONTEXT_KEYS = ("host", "actor", "action", "run", "commit")
# Bounds on what one line may carry: a restore of 10,000 keys logs a count, not 10,000 names
MAX_NAMES = 50


def _now() -> str:
    moment = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + ".%03dZ" % (
        int(moment * 1000) % 1000)


def names(items) -> dict:
    """``keys`` (sorted, at most MAX_NAMES) and, when there were more, ``keys_total``."""
    items = sorted({str(i) for i in items})
    out = {"keys": items[:MAX_NAMES]}
    if len(items) > MAX_NAMES:
        out["keys_total"] = len(items)
    return out


def entry(audit: dict, change: str, **details) -> dict:
    """One line: time, the run's context from ``audit``, what changed and its details."""
    line = {"time": _now()}
    line.update((k, audit[k]) for k in CONTEXT_KEYS if audit.get(k) not in (None, ""))
    line["change"] = change
    line.update((k, v) for k, v in details.items() if v not in (None, [], {}))
    return line


def runtime_lines(audit: dict | None, applied: dict) -> list[dict]:
    """The line of a seed that changed the runtime layer (``seed_apply.apply_for_module``'s
    result): the keys written, the overrides it overwrote, the version before and after (a
    seed that changes anything bumps ``flashmm:meta:version`` once)."""
    if not audit or not applied.get("changed"):
        return []
    version = applied.get("version")
    return [entry(audit, "runtime", **names(applied.get("changed_keys") or []),
                  enforced=sorted(applied.get("enforced") or {}),
                  version=[version - 1, version] if isinstance(version, int) else None)]


def _rotate(root: str, keep: int) -> None:
    base = os.path.join(root, AUDIT_FILE)
    if keep < 1:
        os.unlink(base)
        return
    for n in range(keep - 1, 0, -1):
        older = "%s.%d" % (base, n)
        if os.path.exists(older):
            os.replace(older, "%s.%d" % (base, n + 1))
    os.replace(base, base + ".1")


class _Locked:
    """The log's own lock (``audit.lock``): appends, rotation and the runtime sets' watermark
    change under it, so two runs never interleave or copy the same set twice."""

    def __init__(self, root: str):
        self.root = root

    def __enter__(self):
        os.makedirs(os.path.join(self.root, AUDIT_DIR), mode=0o700, exist_ok=True)
        self.fd = os.open(os.path.join(self.root, _LOCK_FILE), os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)           # closing releases the flock


def append(root: str, audit: dict | None, lines: list[dict]) -> int:
    """Append ``lines`` (from ``entry``) to the host's audit log when ``audit`` is set (the
    option is None when audit logging is off).  Returns the number of lines written."""
    if not audit or not lines:
        return 0
    with _Locked(root):
        return _append_locked(root, audit, lines)


def _append_locked(root: str, audit: dict, lines: list[dict]) -> int:
    max_bytes = int(audit.get("max_bytes") or DEFAULT_MAX_BYTES)
    keep = int(audit.get("keep") if audit.get("keep") is not None else DEFAULT_KEEP)
    data = "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"
                   for line in lines).encode("utf-8")
    path = os.path.join(root, AUDIT_FILE)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        size = 0
    if size and size + len(data) > max_bytes:
        _rotate(root, keep)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)        # also one an operator loosened by hand
        written = 0
        while written < len(data):  # one write() in practice; a short write continues
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(lines)


def read(root: str, *, max_bytes: int = 64 * 1024 * 1024) -> tuple[list[dict], int]:
    """The host's audit log, oldest line first (rotated files included), at most its newest
    ``max_bytes``, and the number of lines that were not JSON objects (skipped: a torn line
    after a full disk)."""
    base = os.path.join(root, AUDIT_FILE)
    paths = [base]
    while os.path.exists("%s.%d" % (base, len(paths))):
        paths.append("%s.%d" % (base, len(paths)))
    chunks, budget = [], max_bytes
    for path in paths:              # newest first: the budget keeps the newest lines
        if budget <= 0:
            break
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > budget:   # only its tail, from the first whole line
                    fh.seek(size - budget)
                    data = fh.read(budget)
                    data = data[data.find(b"\n") + 1:]
                else:
                    data = fh.read()
        except OSError:
            continue
        budget -= size
        chunks.append(data)
    out, bad = [], 0
    for data in reversed(chunks):
        for raw in data.splitlines():
            try:
                line = json.loads(raw.decode("utf-8"))
            except ValueError:
                bad += 1
                continue
            if isinstance(line, dict):
                out.append(line)
            else:
                bad += 1
    return out, bad


# Runtime sets (``flashmm-config runtime set``, FlashMM's own client) reach Redis, not the
# host's disk: their script pushes who/which key/versions (no value), newest first, onto this
# list (``flashmm_config.runtime_keys.WRITE_LUA``, capped at 1,000), where drift reads who made
# an override.  A host step copies the ones it has not copied yet into the host's log: the
# config version each set produced is the watermark (``RUNTIME_MARK``; a list whose newest
# version is below it belongs to a Redis that started over, and is copied whole).
RUNTIME_LIST = AUDIT_RUNTIME_LIST
RUNTIME_MARK = AUDIT_DIR + "/audit-runtime.json"


def _version_of(data: dict) -> int:
    version = data.get("version")
    if isinstance(version, list) and version and isinstance(version[-1], int):
        return version[-1]
    return -1


def _read_mark(root: str) -> int:
    try:
        with open(os.path.join(root, RUNTIME_MARK), "rb") as fh:
            mark = json.loads(fh.read(4096)).get("version")
        return mark if isinstance(mark, int) else -1
    except (OSError, ValueError, AttributeError):
        return -1


def take_over_runtime(conn, root: str, audit: dict) -> int:
    """Copy the runtime sets on ``RUNTIME_LIST`` that the host's log lacks into it (oldest
    first, each with this host's name and its own actor and time).  ``conn``: a connection
    with ``call``.  Returns how many lines were copied."""
    entries = []
    for item in conn.call("LRANGE", RUNTIME_LIST, 0, -1) or []:
        try:
            data = json.loads(item.decode("utf-8") if isinstance(item, bytes) else item)
        except ValueError:
            data = None
        entries.append(data if isinstance(data, dict) else {})
    if not entries:
        return 0
    with _Locked(root):
        return _copy_locked(root, audit, entries)


def _copy_locked(root: str, audit: dict, entries: list) -> int:
    newest = max(_version_of(e) for e in entries)
    mark = _read_mark(root)
    if newest < mark:
        mark = -1                       # Redis started over: its list is all new
    lines = []
    for data in reversed(entries):
        if _version_of(data) <= mark:
            continue
        stamp = data.pop("time", None)
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stamp))
                if isinstance(stamp, (int, float)) else _now(), "host": audit.get("host")}
        line.update((k, v) for k, v in data.items() if k != "host")
        line.setdefault("change", "runtime (unreadable audit entry)")
        lines.append(line)
    if lines:
        _append_locked(root, audit, lines)
    _write_mark(root, newest)
    return len(lines)


def _write_mark(root: str, version: int) -> None:
    path = os.path.join(root, RUNTIME_MARK)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps({"version": version}).encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
