# Over 350 lines: ConfigManager, the library's one public class (load, threads, get/set).
"""``ConfigManager``: the seed's configuration manager, corrected (sync API; ``aio`` wraps it).

    config = ConfigManager()          # environ: os.environ; config dir: $FLASHMM_CONFIG_DIR
    config.initialize()               # or ./config; raises ConfigError on a bad file or env
    config.get("trading.max_position_usdc")         # from memory, typed per the schema
    config.on_change(lambda key, value, layer: ...)
    config.set_runtime_config("trading.quote_frequency_hz", 2.5, actor="alice")

Layers (lowest first): ``default`` (the schema), ``file`` (``<config dir>/environments/
<ENVIRONMENT>.yml``, what deploy writes), ``env`` (the variables the schema names, e.g.
``FLASHMM_DEBUG``, ``HEALTH_CHECK_INTERVAL_SECONDS``), ``runtime`` (Redis
``flashmm:config:<section>:<key>``, runtime keys only).

Threads (``initialize`` starts them, ``close`` stops them): the command connection with its
periodic check (``Link``), the subscriber (``Subscriber``) and the file poller (the mounted
file is re-read when it changes; an invalid file keeps the last good layer and says why).
Redis down: start-up serves the lower layers and says so once; an outage keeps the last
runtime values; both connections retry with a backoff up to 1 s and catch up by
``flashmm:meta:version`` when they are back.  No thread ever ends in a traceback: a failing
``on_change`` callback is logged by type and message.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from flashmm_deploy.redis.client import Endpoint, RedisError, ReplyError
from flashmm_deploy.redis.keys import config_key
from flashmm_deploy.redis_ext.pubsub import PubSubConnection
from flashmm_deploy.redis_ext.url import endpoint_from_url, mask_url
from flashmm_config.layers import ConfigError, load_fields, read_secret_files
from flashmm_config.link import Link, RedisUnavailable
from flashmm_config.log import Log
from flashmm_config.runtime_keys import (ABSENT, SET, read_one, read_runtime, read_version,
                                         shown_raw, write)
from flashmm_config.state import ConfigState
from flashmm_config.subscriber import CONFIG_CHANNEL, META_CHANNEL, Subscriber
from flashmm_config.validation import RuntimeSetRefused, check_change, check_key, check_value

DEFAULT_CONFIG_DIR = "config"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
CHECK_INTERVAL = 1.0            # seconds between the command connection's checks
FILE_POLL = 1.0                 # seconds between checks of the environment file
WRITE_ATTEMPTS = 5              # validations of a set whose version moved under it
REDACTED = "<redacted>"
_UNKNOWN = object()

Callback = Callable[[str, Any, str], Any]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def default_actor() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or "uid %d" % os.getuid()
    return "%s@%s (flashmm_config, pid %d)" % (user, socket.gethostname(), os.getpid())


class ConfigManager:
    """One process's configuration.  ``connect`` and ``clock`` are for tests (a fake
    Connection factory, a fake clock); ``log`` any object with the ``Log`` interface."""

    link_class: type = Link

    def __init__(self, environ: Mapping[str, str] | None = None,
                 config_dir: str | os.PathLike | None = None, *,
                 log: Any = None,
                 connect: Callable[[Endpoint], Any] = PubSubConnection,   # link and subscriber
                 clock: Callable[[], float] = time.monotonic,
                 check_interval: float = CHECK_INTERVAL, file_poll: float = FILE_POLL) -> None:
        self.log = log if log is not None else Log()
        self.fields = load_fields()
        # <VAR>_FILE resolved to <VAR> (compose secrets); problems are raised by load()
        self.environ, self.environ_problems = read_secret_files(
            self.fields, os.environ if environ is None else environ)
        config_dir = config_dir or self.environ.get("FLASHMM_CONFIG_DIR") or DEFAULT_CONFIG_DIR
        self.state = ConfigState(self.fields, self.environ, Path(config_dir), self.log)
        self.state.listener = self._dispatch
        self.redis_url = DEFAULT_REDIS_URL
        self.endpoint: Endpoint | None = None
        self.link: Any = None
        self.subscriber: Subscriber | None = None
        self.updates_received = 0
        self.version_seen: Any = _UNKNOWN     # flashmm:meta:version the runtime layer is at
        self._stale = True                    # an update could not be applied: scan
        self._callbacks: list[Callback] = []
        self._connect = connect
        self._clock = clock
        self._check_interval = check_interval
        self.file_poll = file_poll
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._catch_up_lock = threading.Lock()

    # ---- start-up ------------------------------------------------------------------------

    def load(self) -> None:
        """Read the default, file and env layers and make the Redis parts (no connection
        yet).  Raises ConfigError with every problem, each naming its key or variable."""
        if self.environ_problems:
            raise ConfigError(list(self.environ_problems))
        self.state.load()
        self.redis_url = self.state.value("storage.redis.url") or DEFAULT_REDIS_URL
        try:
            endpoint = endpoint_from_url(self.redis_url)
        except RedisError as exc:
            raise ConfigError(["redis URL %s: %s" % (mask_url(self.redis_url), exc)]) from None
        self.endpoint = endpoint
        if hasattr(self.log, "add_secrets"):
            self.log.add_secrets([endpoint.password])
        self.link = self.link_class(endpoint, self.log, on_connect=self.catch_up,
                                    connect=self._connect, clock=self._clock,
                                    interval=self._check_interval)
        self.subscriber = Subscriber(endpoint, self.log, self.on_message, self.catch_up,
                                     connect=self._connect)

    def initialize(self) -> "ConfigManager":
        """``load``, one connection attempt (the runtime layer, when Redis answers), then the
        background threads.  Redis down is no error: see the module's docstring."""
        self.load()
        self.link.connect_once()
        self.start()
        return self

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self.link.run, args=(self._stop,), name="flashmm-config-redis",
                             daemon=True),
            threading.Thread(target=self.subscriber.run, args=(self._stop,),
                             name="flashmm-config-subscriber", daemon=True)]
        if self.file_poll:
            self._threads.append(threading.Thread(target=self._poll_file, args=(self._stop,),
                                                  name="flashmm-config-file", daemon=True))
        for thread in self._threads:
            thread.start()

    def _poll_file(self, stop: threading.Event) -> None:
        while not stop.wait(self.file_poll):
            self.reload_file()

    def reload_file(self) -> bool:
        """Re-read the environment file if it changed; True when a value changed."""
        try:
            return self.state.reload_file_if_changed()
        except Exception as exc:   # noqa: BLE001 - a poller must outlive any surprise
            self.log.error("environment file check failed: %s: %s" % (type(exc).__name__, exc))
            return False

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        for part in (self.subscriber, self.link):
            if part is not None:
                part.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads = []

    def __enter__(self) -> "ConfigManager":
        return self.initialize()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The effective value of a dotted key (``default`` when unset or unknown); a section
        (``"trading"``, ``"storage.redis"``) gives a dict of its keys.  From memory."""
        item = self.state._effective.get(key)
        if item is not None:
            value = item[0]
            if value is None:
                return default
            return list(value) if type(value) is list else value
        prefix = key + "."
        section = {k[len(prefix):]: v for k, (v, _) in self.state._effective.items()
                   if k.startswith(prefix)}
        if not section:
            return default
        out: dict[str, Any] = {}
        for path, value in section.items():
            node = out
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    def explain(self, key: str) -> dict[str, Any]:
        """Value and layer of a key, and what each layer holds for it (secrets redacted, URL
        passwords masked).  KeyError for an unknown key."""
        field = self.fields[key]
        value, layer = self.state._effective[key]
        layers = self.state.layers()

        def shown(v: Any) -> Any:
            if field.secret and v is not None:
                return REDACTED
            return mask_url(v) if isinstance(v, str) and "://" in v else v

        where = {"default": "schema default", "file": str(self.state.path),
                 "env": "environment variable %s" % field.env,
                 "runtime": "redis %s key %s" % (self.endpoint.label() if self.endpoint
                                                 else "(not connected)",
                                                 config_key(key))}
        return {"key": key, "value": shown(value), "layer": layer, "source": where[layer],
                "env": field.env, "secret": field.secret, "runtime_overridable": field.runtime,
                "layers": {"default": shown(field.default),
                           **{name: shown(values[key]) for name, values in layers.items()
                              if key in values}}}

    def snapshot(self) -> dict[str, tuple[Any, str]]:
        """Every key's (value, layer), secrets included: for the process itself."""
        return self.state.effective()

    @property
    def environment(self) -> str:
        return self.state.environment

    # ---- change notification -------------------------------------------------------------

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """``callback(key, value, layer)`` after each change of a key's effective value (a
        runtime update, a scan, a reloaded file), on the thread that applied it.  Returns a
        function that removes it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return remove

    def _dispatch(self, changes: Mapping[str, tuple[Any, str]]) -> None:
        if not self._callbacks:
            return
        view = self.state._effective
        for key in sorted(changes):
            value, layer = view.get(key, changes[key])   # the newest, whatever the order
            for callback in list(self._callbacks):
                try:
                    callback(key, value, layer)
                except Exception as exc:   # noqa: BLE001 - a callback's bug is the app's
                    self.log.error("on_change callback %s failed for %s: %s: %s" % (
                        getattr(callback, "__name__", "callback"), key,
                        type(exc).__name__, exc))

    # ---- runtime layer -------------------------------------------------------------------

    def rescan(self) -> None:
        """Replace the runtime layer by a full scan."""
        def scan(conn: Any) -> tuple[Any, dict]:
            version = read_version(conn)        # before the scan: a later write re-scans
            return version, read_runtime(conn, self.fields, self.log)
        try:
            version, values = self.link.use(scan)
        except (RedisUnavailable, RedisError, ReplyError):
            self._stale = True
            return                          # re-scanned on the next reconnect
        self._stale = False
        self.version_seen = version
        changes = self.state.replace_runtime(values)
        for key, value in changes.items():
            self.log("runtime value (scan): %s %s" % (
                key, "removed" if value is None else "= " + _json(value)))

    def catch_up(self) -> None:
        """After a (re)connect or (re)subscription: a full scan when ``flashmm:meta:version``
        is not the version the runtime layer was read at (or an update was missed)."""
        with self._catch_up_lock:
            if not self._stale:
                try:
                    version = self.link.use(read_version)
                except (RedisUnavailable, RedisError, ReplyError):
                    self._stale = True
                    return
                if version == self.version_seen:
                    return
                self.log("runtime layer catching up: version %s -> %s" % (
                    "unknown" if self.version_seen is _UNKNOWN else self.version_seen, version))
            self.rescan()

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
            self._stale = True
            self.log.warning("config update of %s not applied now (%s); it is re-read on "
                             "reconnect" % (key, exc))

    def meta_update(self, data: bytes) -> None:
        try:
            summary = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.log.warning("meta update ignored: not JSON: %s" % shown_raw(data))
            return
        if isinstance(summary, dict) and isinstance(summary.get("version"), int) \
                and not isinstance(summary["version"], bool) and not self._stale:
            self.version_seen = summary["version"]   # its config messages came before it
        self.log("meta update: %s" % _json(summary))

    # the seed's names
    def reload_key(self, key: str) -> None:
        self.config_update(key.encode("utf-8"))

    def reload(self) -> None:
        """Re-read the environment file (if it changed) and the whole runtime layer now."""
        self.reload_file()
        if self.link is not None:
            self.rescan()

    # ---- writing -------------------------------------------------------------------------

    def _lower_layers(self) -> list:
        """The file and env layers as the deploy toolkit's validator takes them."""
        from flashmm_deploy.config.layers import LayerInput

        nested: dict[str, Any] = {}
        for path, value in self.state.layers()["file"].items():
            node = nested
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        env = {f.env: self.environ[f.env] for f in self.fields.values() if f.env in self.environ}
        return [LayerInput("environment", str(self.state.path), nested),
                LayerInput("env", "process environment", env)]

    def set_runtime_config(self, key: str, value: Any, actor: str | None = None) -> dict:
        """Set a runtime key, validated with the whole configuration (``validation``), written
        with the version bump and published as deploy does.  Returns ``{"key", "value",
        "changed", "version"}``.  Raises RuntimeSetRefused (nothing written) or
        RedisUnavailable."""
        field = check_key(self.fields, key)
        if value is None:
            raise RuntimeSetRefused("%s: a value is needed (unset_runtime_config removes the "
                                    "runtime value)" % key)
        return self._write(field, check_value(field, value), actor)

    def unset_runtime_config(self, key: str, actor: str | None = None) -> dict:
        """Remove a runtime value (the key falls back to env, file, default), validated and
        published like a set."""
        return self._write(check_key(self.fields, key), None, actor)

    def _write(self, field: Any, value: Any, actor: str | None) -> dict:
        if self.link is None:
            raise RedisUnavailable("not initialized: call initialize() first")
        actor = actor or default_actor()
        lower = self._lower_layers()
        try:
            outcome, new_version = self._attempts(field, value, actor, lower)
        except RedisError as exc:
            raise RedisUnavailable("redis unavailable: %s; %s not written" % (exc, field.key)) \
                from None
        except ReplyError as exc:
            raise RuntimeSetRefused("%s: not written: redis refused it: %s" % (field.key, exc)) \
                from None
        what = "set" if value is not None else "unset"
        if outcome == "changed":                  # read your writes; the message agrees
            if value is None:
                self.state.drop_runtime(field.key)
            else:
                self.state.set_runtime(field.key, value)
            self.log("runtime %s: %s%s by %s (version %s)" % (
                what, field.key, " = " + _json(value) if value is not None else "", actor,
                new_version))
        return {"key": field.key, "value": value, "changed": outcome == "changed",
                "version": new_version}

    def _attempts(self, field: Any, value: Any, actor: str, lower: list) -> tuple[str, int]:
        """Validate against the runtime layer at version V, write if Redis is still at V."""
        for _ in range(WRITE_ATTEMPTS):
            version, runtime = self.link.use(
                lambda conn: (read_version(conn), read_runtime(conn, self.fields, self.log)))
            check_change(lower, runtime, field.key, value)
            outcome, new_version = self.link.use(
                lambda conn, seen=version: write(conn, field, value, actor=actor, seen=seen))
            if outcome != "moved":
                return outcome, new_version
        raise RuntimeSetRefused("%s: not written: the runtime layer changed under %d "
                                "validations in a row; try again" % (field.key, WRITE_ATTEMPTS))
