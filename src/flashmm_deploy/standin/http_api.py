"""The JSON API (stdlib ``ThreadingHTTPServer``).  ``build`` makes each body from the app's
state; ``respond`` is what the server sends: the same body with every string passed through
the log's secret scrubber (defence in depth: no body is built from a secret in the first
place).  The unit tests call both.

* ``GET /health``  200 ``{"status": "ok", "environment", "config_version",
  "redis_checked_seconds_ago"}`` once the configuration loaded and the last Redis operation
  (at most 1 s old) succeeded; else 503 ``{"status": "unavailable", "reason",
  "environment", "config_version"}``.
* ``GET /config``  ``{"environment", "config_version", "values": {dotted key: {"value",
  "layer"}}}`` for every non-secret key; a URL's password shows as ``***``.
* ``GET /stats``   ``{"redis_ops", "redis_failures", "reconnects", "updates_received",
  "started_at"}``: the workload's successful and failed GETs, connections re-established after
  a failure, messages received on ``flashmm:config:updates``, start time (ISO 8601 UTC).
* ``GET /secure``  ``{"records", "readable", "unreadable", "readable_with_old_key_only",
  "key_problem"}`` (see ``secure_records``), 503 ``{"error"}`` while Redis is unavailable.
* anything else: 404 ``{"error": "not found"}``; another method on a known path: 405.
"""

from __future__ import annotations

import json
import socket
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

from flashmm_deploy.redis.client import RedisError
from flashmm_deploy.redis_ext.url import mask_url
from flashmm_config.link import RedisUnavailable

Body = tuple[int, dict]


def _public(value: Any) -> Any:
    """A non-secret value as /config shows it: a URL's userinfo password masked."""
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def health_body(app: Any) -> Body:
    base = {"environment": app.state.environment, "config_version": app.link.version}
    if not app.state.loaded:
        return 503, {"status": "unavailable", "reason": "configuration not loaded", **base}
    ok, reason = app.link.health()
    if not ok:
        return 503, {"status": "unavailable", "reason": reason, **base}
    return 200, {"status": "ok", **base, "redis_checked_seconds_ago": app.link.age()}


def config_body(app: Any) -> Body:
    values = {key: {"value": _public(value), "layer": layer}
              for key, (value, layer) in app.state.effective().items()
              if not app.fields[key].secret}
    return 200, {"environment": app.state.environment, "config_version": app.link.version,
                 "values": values}


def stats_body(app: Any) -> Body:
    link = app.link
    return 200, {"redis_ops": link.ops, "redis_failures": link.failures,
                 "reconnects": link.reconnects, "updates_received": app.updates_received,
                 "started_at": app.started_at}


def secure_body(app: Any) -> Body:
    try:
        return 200, app.secure_counts()
    except (RedisUnavailable, RedisError) as exc:
        return 503, {"error": str(exc)}


ROUTES: dict[str, Callable[[Any], Body]] = {
    "/health": health_body, "/config": config_body, "/stats": stats_body,
    "/secure": secure_body,
}


def build(app: Any, path: str) -> Body:
    route = ROUTES.get(path)
    return (404, {"error": "not found"}) if route is None else route(app)


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k): _scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, scrub) for v in value]
    return value


def respond(app: Any, path: str) -> tuple[int, bytes]:
    """(status, JSON bytes) exactly as served."""
    status, body = build(app, path)
    return status, json.dumps(_scrubbed(body, app.log.scrub), sort_keys=True).encode() + b"\n"


class _Handler(BaseHTTPRequestHandler):
    server_version = "flashmm-standin"
    sys_version = ""

    def _send(self, status: int, payload: bytes, with_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(payload)

    def _reply(self, with_body: bool) -> None:
        app = self.server.app
        try:
            status, payload = respond(app, urlsplit(self.path).path)
        except Exception as exc:          # a bug: say so without a traceback on stderr
            app.log.error("%s %s failed: %s: %s" % (self.command, urlsplit(self.path).path,
                                                     type(exc).__name__, exc))
            status, payload = 500, b'{"error": "internal error"}\n'
        self._send(status, payload, with_body)

    def do_GET(self) -> None:
        self._reply(True)

    def do_HEAD(self) -> None:
        self._reply(False)

    def _not_allowed(self) -> None:
        known = urlsplit(self.path).path in ROUTES
        self._send(405 if known else 404,
                   b'{"error": "method not allowed"}\n' if known else b'{"error": "not found"}\n')

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        pass        # a line per request (health checks every 2 s) would drown the events


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer's own looks the host up with getfqdn(): a reverse DNS query that can
        # stall a container's start by seconds.  The name is only used for CGI variables.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(app: Any, host: str, port: int) -> ThreadingHTTPServer:
    server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
    server.app = app
    return server
