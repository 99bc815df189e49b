"""The stand-in app: ``StandIn`` is the client library's ``ConfigManager`` (``flashmm_config``,
what FlashMM imports) plus the stand-in's workload and API; ``main`` runs it.

Start-up (fatal problems exit 2 before anything listens; every problem is logged by key):

1. the seed's required variables must be present (they may be empty): ``REQUIRED_ENV``;
2. the env and file layers must parse (``ConfigManager.load``);
3. the Redis URL (effective ``storage.redis.url``, i.e. ``REDIS_URL`` over the file, default
   ``redis://localhost:6379/0``) must parse; it is only ever logged masked.

Then the API listens on ``api.host``:``api.port`` at once, and the library's threads start:
the main connection (workload, runtime scans), the subscriber and the file poller.
``/health`` turns 200 as soon as the first workload operation succeeds.  SIGTERM/SIGINT stop
everything within a few tenths of a second (exit 0); SIGHUP re-reads the environment file
now rather than at the next poll.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from flashmm_deploy.redis.client import Endpoint
from flashmm_deploy.redis_ext.pubsub import PubSubConnection
from flashmm_deploy.redis_ext.url import mask_url
from flashmm_config.layers import ConfigError, missing_required
from flashmm_config.link import RedisLink
from flashmm_config.manager import ConfigManager
from flashmm_deploy.standin.event_log import EventLog, utc_now
from flashmm_deploy.standin.http_api import make_server
from flashmm_deploy.standin.secure_records import Keyring, count_records

DEFAULT_CONFIG_DIR = "/app/config"
FILE_POLL = 1.0                 # seconds between checks of the environment file
MAIN_WAIT = 0.2                 # the main thread's wake-up period (signals, file poll)
JOIN_WAIT = 0.3
WORKLOAD_INTERVAL = 0.1         # the workload's GET, what rotations are measured against


class StandIn(ConfigManager):
    """One process's configuration (``flashmm_config.ConfigManager``, the library FlashMM
    imports) plus the stand-in's own parts: the workload counters on the manager's command
    connection, the secure records, the API.  ``connect`` and ``clock`` are for the unit
    tests (a fake Connection factory, a fake clock)."""

    link_class = RedisLink

    def __init__(self, environ: Mapping[str, str], log: EventLog, config_dir: Path,
                 connect: Callable[[Endpoint], Any] = PubSubConnection,  # link, subscriber
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(environ, Path(config_dir), log=log, connect=connect, clock=clock,
                         check_interval=WORKLOAD_INTERVAL, file_poll=FILE_POLL)
        self.keyring = Keyring(self.environ)
        self.started_at = utc_now()
        log.add_secrets(self.environ.get(f.env) for f in self.fields.values() if f.secret)

    # ---- start-up ------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Everything that must hold before serving; returns the problems (empty: ready)."""
        if self.environ_problems:           # a <VAR>_FILE that cannot be read, or both given
            return list(self.environ_problems)
        missing = missing_required(self.environ)
        if missing:
            return ["missing required environment variable(s) (they may be empty): "
                    + ", ".join(missing)]
        try:
            self.load()
        except ConfigError as exc:
            return exc.problems
        if self.keyring.problem:
            self.log.warning("secure records: %s" % self.keyring.problem)
        return []

    # ---- views for the API ---------------------------------------------------------------

    def secure_counts(self) -> dict:
        return self.link.use(lambda conn: count_records(conn, self.keyring))


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
    http = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                            name="http", daemon=True)
    http.start()
    app.start()
    log("flashmm stand-in listening on http://%s:%d (environment %s, redis %s)"
        % (host, server.server_address[1], app.state.environment, mask_url(app.redis_url)))

    while not stop.wait(MAIN_WAIT):
        if reload_now.is_set():
            reload_now.clear()
            app.reload_file()
    log("stopping")
    server.shutdown()
    server.server_close()
    app.close(JOIN_WAIT)
    http.join(JOIN_WAIT)
    log("stopped")
    return 0
