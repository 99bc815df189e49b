"""Reading the runtime layer from Redis, over any object with the ``Connection`` interface
(``call`` and ``pipeline``; the unit tests pass a fake).

Keys are found with SCAN (never KEYS, which blocks the server).  Only keys whose fields.json
entry says ``runtime: true`` count; anything else under ``flashmm:config:`` is logged once and
ignored.  A value that is not JSON, or not valid for its key's kind, is ignored and logged with
key and value (runtime keys are never secret).
"""

from __future__ import annotations

from typing import Any, Mapping

from flashmm_deploy.redis_client import ReplyError
from flashmm_deploy.standin.config_layers import (CONFIG_PREFIX, Field, dotted_key, redis_key,
                                                  runtime_value)
from flashmm_deploy.standin.event_log import EventLog

SCAN_COUNT = 200
MAX_SHOWN = 200                     # longest value text shown in a log line
SET, ABSENT, INVALID = "set", "absent", "invalid"


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


def _accept(field: Field, name: str, raw: Any, log: EventLog) -> tuple[str, Any]:
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


def read_runtime(conn: Any, fields: Mapping[str, Field], log: EventLog) -> dict[str, Any]:
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


def read_one(conn: Any, field: Field, log: EventLog) -> tuple[str, Any]:
    """(status, value) of one runtime key: ``set``, ``absent`` or ``invalid`` (logged)."""
    name = redis_key(field.key)
    try:
        raw = conn.call("GET", name)
    except ReplyError as exc:
        raw = exc
    return _accept(field, name, raw, log)
