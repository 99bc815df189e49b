"""The client's one long-lived Redis command connection, the steady check on it, and its
counters.

The check (the stand-in's "workload", what secret rotations are measured against) is one
authenticated operation (``GET flashmm:meta:version``, which also keeps ``version`` current)
every ``interval`` (the stand-in: ~100 ms; the library's default: 1 s), each counted as a
success (``ops``) or a failure (``failures``).  A failure closes the
connection; the loop reconnects at once, then with a backoff doubling up to ``MAX_BACKOFF``
(1 s), and counts each re-established connection in ``reconnects``.  ``on_connect`` runs after
every successful (re)connect: the manager catches up there (``ConfigManager.catch_up``), since
updates may have been missed while Redis was away.  The outage is logged once, and its end once; an outage at
start-up says that the runtime layer is not loaded yet (the lower layers serve).

Health (``health()``) is good while the connection is up and the last successful operation is
at most ``HEALTH_WINDOW`` (1 s) old, so a Redis that hangs rather than refuses turns the app
unhealthy within a second too.  Other threads use the connection through ``use``, under the
same lock, so replies never interleave.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from flashmm_deploy.redis.client import Connection, Endpoint, RedisError, ReplyError
from flashmm_deploy.redis.keys import VERSION_KEY
from flashmm_config.log import Log

INTERVAL = 0.1
HEALTH_WINDOW = 1.0
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class RedisUnavailable(Exception):
    """No usable connection right now (the message says why, without a password)."""


def _version(raw: Any) -> Any:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return int(text) if text.isascii() and text.isdigit() else text


class Link:
    """Main connection, periodic check and counters.  ``connect`` is the Connection factory
    (the unit tests pass a fake); ``clock`` a monotonic clock."""

    def __init__(self, endpoint: Endpoint, log: Log,
                 on_connect: Callable[[], None] | None = None,
                 connect: Callable[[Endpoint], Any] = Connection,
                 clock: Callable[[], float] = time.monotonic,
                 interval: float = INTERVAL) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self._log = log
        self._on_connect = on_connect
        self._connect = connect
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: Any = None
        self._ever_connected = False
        self._outage_logged = False
        self.ops = 0
        self.failures = 0
        self.reconnects = 0
        self.version: Any = None
        self.last_ok: float | None = None
        self.last_error: str | None = None

    # ---- connection ----------------------------------------------------------------------

    def connect_once(self) -> bool:
        """One attempt to (re)connect; True when connected (then ``on_connect`` ran)."""
        try:
            conn = self._connect(self.endpoint)
        except RedisError as exc:
            self._down(str(exc))
            return False
        with self._lock:
            self._conn = conn
            if self._ever_connected:
                self.reconnects += 1
                self._log("redis reconnected to %s (reconnects: %d)"
                          % (self.endpoint.label(), self.reconnects))
            else:
                self._log("redis connected to %s" % self.endpoint.label())
            self._ever_connected = True
            self._outage_logged = False
        self.tick()
        if self._on_connect is not None and self.connected:
            try:
                self._on_connect()
            except (RedisError, RedisUnavailable):
                pass                    # the failure is handled (and logged) by use()
        return self.connected

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _down(self, reason: str) -> None:
        self.last_error = reason
        if not self._outage_logged:
            self._outage_logged = True
            if self._ever_connected:
                self._log.warning("redis unavailable: %s; serving the last known configuration, "
                                  "retrying at most %gs apart" % (reason, MAX_BACKOFF))
            else:
                self._log.warning("redis unavailable: %s; starting without the runtime layer "
                                  "(defaults, file and environment serve), retrying at most "
                                  "%gs apart" % (reason, MAX_BACKOFF))

    def _drop(self, reason: str) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._down(reason)

    def use(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(connection)`` under the lock.  Raises RedisUnavailable when there is no
        connection; a RedisError drops the connection (the loop reconnects) and propagates."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RedisUnavailable("redis unavailable: %s"
                                       % (self.last_error or "not connected yet"))
            try:
                return fn(conn)
            except RedisError as exc:
                self._drop(str(exc))
                raise

    # ---- workload ------------------------------------------------------------------------

    def tick(self) -> None:
        """One workload operation, counted."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            try:
                raw = conn.call("GET", VERSION_KEY)
            except RedisError as exc:
                self.failures += 1
                self._drop(str(exc))
                return
            except ReplyError as exc:      # e.g. WRONGTYPE: Redis answered, keep the link
                self.failures += 1
                self._log.once(("workload", str(exc)[:40]),
                               "workload GET %s failed: %s" % (VERSION_KEY, exc))
                return
            self.ops += 1
            self.version = _version(raw)
            self.last_ok = self._clock()

    def run(self, stop: threading.Event) -> None:
        """The workload loop, until ``stop`` is set."""
        backoff = 0.0
        while not stop.is_set():
            if self._conn is None:
                if self.connect_once():
                    backoff = 0.0
                else:
                    backoff = min(max(backoff * 2, FIRST_BACKOFF), MAX_BACKOFF)
                    stop.wait(backoff)
                continue
            if stop.wait(self.interval):
                break
            self.tick()

    def health(self) -> tuple[bool, str]:
        """(healthy, reason)."""
        if self._conn is None:
            return False, ("redis unavailable: %s" % self.last_error if self.last_error
                           else "redis not connected yet")
        if self.last_ok is None:
            return False, "no successful redis operation yet"
        age = self._clock() - self.last_ok
        if age > HEALTH_WINDOW:
            return False, "last successful redis operation %.1fs ago" % age
        return True, "ok"

    def age(self) -> float | None:
        return None if self.last_ok is None else round(self._clock() - self.last_ok, 3)

    def close(self) -> None:
        """Close without waiting for the lock: a thread stuck on a hung server must not delay
        shutdown (the threads are daemons)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


RedisLink = Link        # the stand-in's name for it
