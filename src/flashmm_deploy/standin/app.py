"""The stand-in app: ``StandIn`` ties the configuration layers to Redis, ``main`` runs it.

Start-up (fatal problems exit 2 before anything listens; every problem is logged by key):

1. the seed's required variables must be present (they may be empty): ``REQUIRED_ENV``;
2. the env and file layers must parse (``ConfigState.load``);
3. the Redis URL (effective ``storage.redis.url``, i.e. ``REDIS_URL`` over the file, default
   ``redis://localhost:6379/0``) must parse; it is only ever logged masked.

Then the API listens on ``api.host``:``api.port`` at once, and the Redis threads start: the
main connection (workload, runtime scans) and the subscriber.  ``/health`` turns 200 as soon as
the first workload operation succeeds.  SIGTERM/SIGINT stop everything within a few tenths of
a second (exit 0); SIGHUP re-reads the environment file now rather than at the next poll.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from flashmm_deploy.redis_client import Connection, Endpoint, RedisError
from flashmm_deploy.redis_url import mask_url
from flashmm_deploy.standin.config_layers import ConfigError, load_fields, missing_required
from flashmm_deploy.standin.config_state import ConfigState
from flashmm_deploy.standin.event_log import EventLog, utc_now
from flashmm_deploy.standin.http_api import make_server
from flashmm_deploy.standin.redis_link import RedisLink, RedisUnavailable
from flashmm_deploy.standin.runtime_keys import ABSENT, SET, read_one, read_runtime, shown_raw
from flashmm_deploy.standin.secure_records import Keyring, count_records
from flashmm_deploy.standin.subscriber import CONFIG_CHANNEL, META_CHANNEL, Subscriber

DEFAULT_CONFIG_DIR = "/app/config"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
FILE_POLL = 1.0                 # seconds between checks of the environment file
MAIN_WAIT = 0.2                 # the main thread's wake-up period (signals, file poll)
JOIN_WAIT = 0.3


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class StandIn:
    """One process's configuration manager.  ``connect`` and ``clock`` are for the unit tests
    (a fake Connection factory, a fake clock)."""

    def __init__(self, environ: Mapping[str, str], log: EventLog, config_dir: Path,
                 connect: Callable[[Endpoint], Any] = Connection,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.environ = dict(environ)
        self.log = log
        self.fields = load_fields()
        self.state = ConfigState(self.fields, self.environ, Path(config_dir), log)
        self.keyring = Keyring(self.environ)
        self.started_at = utc_now()
        self.updates_received = 0
        self.redis_url = DEFAULT_REDIS_URL
        self.link: RedisLink | None = None
        self.subscriber: Subscriber | None = None
        self._connect = connect
        self._clock = clock
        log.add_secrets(self.environ.get(f.env) for f in self.fields.values() if f.secret)

    # ---- start-up ------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Everything that must hold before serving; returns the problems (empty: ready)."""
        missing = missing_required(self.environ)
        if missing:
            return ["missing required environment variable(s) (they may be empty): "
                    + ", ".join(missing)]
        try:
            self.state.load()
        except ConfigError as exc:
            return exc.problems
        self.redis_url = self.state.value("storage.redis.url") or DEFAULT_REDIS_URL
        try:
            endpoint = Endpoint.from_url(self.redis_url)
        except RedisError as exc:
            return ["redis URL %s: %s" % (mask_url(self.redis_url), exc)]
        self.log.add_secrets([endpoint.password])
        self.link = RedisLink(endpoint, self.log, on_connect=self.rescan,
                              connect=self._connect, clock=self._clock)
        self.subscriber = Subscriber(endpoint, self.log, self.on_message, self.rescan,
                                     connect=self._connect)
        if self.keyring.problem:
            self.log.warning("secure records: %s" % self.keyring.problem)
        return []

    # ---- runtime layer -------------------------------------------------------------------

    def rescan(self) -> None:
        """Replace the runtime layer by a full scan (after every (re)connect)."""
        def scan(conn: Any) -> dict:
            return self.state.replace_runtime(read_runtime(conn, self.fields, self.log))
        try:
            changes = self.link.use(scan)
        except (RedisUnavailable, RedisError):
            return                          # re-scanned on the next reconnect
        for key, value in changes.items():
            self.log("runtime value (scan): %s %s" % (
                key, "removed" if value is None else "= " + _json(value)))

    def on_message(self, channel: str, data: bytes) -> None:
        if channel == CONFIG_CHANNEL:
            self.config_update(data)
        elif channel == META_CHANNEL:
            self.meta_update(data)

    def config_update(self, data: bytes) -> None:
        """Reload the one key a ``flashmm:config:updates`` message names."""
        self.updates_received += 1
        key = data.decode("utf-8", "replace")
        field = self.fields.get(key)
        if field is None or not field.runtime:
            self.log.warning("config update ignored: %s is not a %s" % (
                shown_raw(data), "runtime config key" if field else "config key"))
            return

        def reload(conn: Any) -> None:
            status, value = read_one(conn, field, self.log)
            if status == SET:
                self.state.set_runtime(key, value)
                self.log("config update: %s = %s" % (key, _json(value)))
            else:
                self.state.drop_runtime(key)
                if status == ABSENT:
                    self.log("config update: %s removed" % key)
        try:
            self.link.use(reload)
        except (RedisUnavailable, RedisError) as exc:
            self.log.warning("config update of %s not applied now (%s); it is re-read on "
                             "reconnect" % (key, exc))

    def meta_update(self, data: bytes) -> None:
        try:
            summary = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.log.warning("meta update ignored: not JSON: %s" % shown_raw(data))
            return
        self.log("meta update: %s" % _json(summary))

    # ---- views for the API ---------------------------------------------------------------

    def secure_counts(self) -> dict:
        return self.link.use(lambda conn: count_records(conn, self.keyring))

    def close(self) -> None:
        for part in (self.subscriber, self.link):
            if part is not None:
                part.close()


def main() -> int:
    log = EventLog()
    environ = dict(os.environ)
    app = StandIn(environ, log, Path(environ.get("FLASHMM_CONFIG_DIR") or DEFAULT_CONFIG_DIR))
    problems = app.prepare()
    if problems:
        for problem in problems:
            log.error(problem)
        log.error("not starting: fix the configuration above")
        return 2
    host, port = app.state.value("api.host"), app.state.value("api.port")
    try:
        server = make_server(app, host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s" % (host, port, exc.strerror or exc))
        return 1

    stop, reload_now = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_now.set())
    threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                name="http", daemon=True),
               threading.Thread(target=app.link.run, args=(stop,), name="redis", daemon=True),
               threading.Thread(target=app.subscriber.run, args=(stop,), name="subscriber",
                                daemon=True)]
    for thread in threads:
        thread.start()
    log("flashmm stand-in listening on http://%s:%d (environment %s, redis %s)"
        % (host, server.server_address[1], app.state.environment, mask_url(app.redis_url)))

    next_poll = time.monotonic() + FILE_POLL
    while not stop.wait(MAIN_WAIT):
        if reload_now.is_set() or time.monotonic() >= next_poll:
            reload_now.clear()
            app.state.reload_file_if_changed()
            next_poll = time.monotonic() + FILE_POLL
    log("stopping")
    server.shutdown()
    server.server_close()
    app.close()
    for thread in threads:
        thread.join(JOIN_WAIT)
    log("stopped")
    return 0
