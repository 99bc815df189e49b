"""``flashmm-config runtime get|list|set|unset|watch``: the runtime layer of one host's Redis,
through the client library (``flashmm_config``), so the CLI and FlashMM write and read it the
same way.

Every command takes the inventory and ``--host`` (default: its first host).  Redis is
``--redis URL``, else ``$FLASHMM_REDIS_URL``, else derived from the inventory where that is
certain: ``flashmm_runtime_redis_host`` (127.0.0.1) and the stack's published port
(``flashmm_runtime_redis_port`` or ``flashmm_stack_redis_port``), ``storage.redis.db``, and the
vault's Redis password when ``storage.redis.password_required``.  A URL's password is never
printed.

``set``/``unset`` validate the change with the host's whole configuration (its inventory
layers plus the live runtime layer: ranges, cross-field and production rules) and write it as
deploy does (one script: the value, the version bump, the dotted key on
``flashmm:config:updates`` and a JSON summary with version and actor on
``flashmm:meta:updates``).  A refused change is one line on stderr naming the key and the
rule, exit 1, nothing written or published.  ``watch`` prints each change live with the layer
that now serves the key.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import time
from typing import Any

from flashmm_deploy.cli import common as cli_common
from flashmm_deploy.config import env_strings
from flashmm_deploy.config.effective import explain
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.redis.client import Connection, RedisError, ReplyError
from flashmm_deploy.redis_ext.pubsub import PubSubConnection
from flashmm_deploy.redis_ext.url import endpoint_from_url, mask_url
from flashmm_deploy.config.schema import FIELDS, RUNTIME_FIELDS

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2



def _library():
    """The client library's pieces (imported when a runtime command runs)."""
    import flashmm_config.layers as layers
    import flashmm_config.runtime_keys as keys
    import flashmm_config.validation as validation
    from flashmm_config.log import Log
    return layers, keys, validation, Log


class _Quiet:
    """The library's log for the CLI: problems on stderr, nothing else."""

    def __call__(self, message: str, level: str = "INFO") -> None:
        if level != "INFO":
            print(f"flashmm-config: {level.lower()}: {message}", file=sys.stderr)

    def warning(self, message: str) -> None:
        self(message, "WARNING")

    def error(self, message: str) -> None:
        self(message, "ERROR")

    def once(self, tag: Any, message: str, level: str = "WARNING") -> None:
        self(message, level)


def _derived_url(inv, host: str, values: dict) -> str | None:
    hv = inv.host_variables(host)
    port = hv.get("flashmm_runtime_redis_port") or hv.get("flashmm_stack_redis_port")
    where = hv.get("flashmm_runtime_redis_host", "127.0.0.1")
    db = hv.get("flashmm_runtime_redis_db") or values.get("storage.redis.db", 0)
    if not isinstance(port, int) or not isinstance(where, str) or "{" in where \
            or not isinstance(db, int):
        return None
    url = f"redis://{where}:{port}/{db}"
    password = values.get("secrets.redis_password")
    if values.get("storage.redis.password_required") and password:
        from flashmm_deploy.secrets.secret_files import redis_url_with_password
        from flashmm_deploy.hostside.redis_acl import APP_USER     # what the app does, as the app's user
        url = redis_url_with_password(url, password, APP_USER)
    return url


class Target:
    """One host: its inventory layers, its validation result and its Redis endpoint."""

    def __init__(self, args) -> None:
        from flashmm_deploy.inventory import host_validation

        cli = cli_common
        self.inv = cli.load_inventory(args, args.inventory)
        self.host = cli.select_hosts(self.inv, args.host)[0]
        self.layers = list(self.inv.host_layers(self.host).layers)
        self.result = host_validation.validate_host(self.inv, self.host)
        url = args.redis or os.environ.get("FLASHMM_REDIS_URL") or _derived_url(
            self.inv, self.host, self.result.resolution.values)
        if not url:
            raise cli.UsageError(f"host {self.host}: where its Redis is cannot be derived from "
                                 "the inventory (no literal flashmm_stack_redis_port or "
                                 "flashmm_runtime_redis_port): give --redis URL or "
                                 "FLASHMM_REDIS_URL")
        try:
            self.endpoint = endpoint_from_url(url)
        except RedisError as exc:
            raise cli.UsageError(f"--redis {mask_url(url)}: {exc}") from None

    def connect(self, kind: type[Connection] = Connection) -> Connection:
        try:
            return kind(self.endpoint)
        except RedisError as exc:
            raise FlashmmError(f"redis {self.endpoint.label()}: {exc}") from None

    def live(self, conn: Connection) -> tuple[Any, dict[str, Any]]:
        """(version, runtime layer) as the library reads them."""
        layers, keys, _, _ = _library()
        fields = layers.load_fields()
        return keys.read_version(conn), keys.read_runtime(conn, fields, _Quiet())

    def resolution(self, runtime: dict[str, Any]):
        from flashmm_deploy.config.layers import LayerInput, resolve
        data = {FIELDS[k].redis_key: v for k, v in runtime.items()}
        return resolve([*self.layers, LayerInput("runtime", f"redis {self.endpoint.label()}",
                                                 data)])


def _runtime_key(key: str):
    if key not in FIELDS or not FIELDS[key].runtime:
        _, _, validation, _ = _library()
        try:
            validation.check_key(_library()[0].load_fields(), key)
        except validation.RuntimeSetRefused as exc:
            raise cli_common.UsageError(str(exc)) from None
    return FIELDS[key]


def _line(info: dict) -> str:
    return (f"{info['key']} = {json.dumps(info['value'])}   (layer '{info['layer']}', "
            f"{info['source']})")


def cmd_get(args) -> int:
    _runtime_key(args.key)
    target = Target(args)
    with target.connect() as conn:
        version, runtime = target.live(conn)
    print(_line(explain(target.resolution(runtime), args.key)))
    print(f"  runtime layer version {version if version is not None else 0}")
    return EXIT_OK


def cmd_list(args) -> int:
    target = Target(args)
    with target.connect() as conn:
        version, runtime = target.live(conn)
    res = target.resolution(runtime)
    for spec in RUNTIME_FIELDS:
        print(_line(explain(res, spec.path)))
    print(f"runtime layer version {version if version is not None else 0} on redis "
          f"{target.endpoint.label()} (host {target.host})")
    return EXIT_OK


def _actor(args) -> str:
    if args.actor:
        return args.actor
    return f"{getpass.getuser()}@{socket.gethostname()} (flashmm-config)"


def _write(args, value: Any) -> int:
    spec = _runtime_key(args.key)
    layers, keys, validation, _ = _library()
    field = layers.load_fields()[spec.path]
    if value is not None:
        try:
            value = validation.check_value(field, env_strings.parse(spec, value))
        except (ValueError, validation.RuntimeSetRefused) as exc:
            print(f"flashmm-config: refused: {spec.path}: {exc}", file=sys.stderr)
            return EXIT_INVALID
    target = Target(args)
    with target.connect() as conn:
        try:
            for _ in range(5):
                version, runtime = target.live(conn)
                validation.check_change(target.layers, runtime, spec.path, value)
                outcome, new_version = keys.write(conn, field, value, actor=_actor(args),
                                                  seen=version)
                if outcome != "moved":
                    break
            else:
                raise FlashmmError(f"{spec.path}: the runtime layer kept changing; try again")
        except validation.RuntimeSetRefused as exc:
            print(f"flashmm-config: refused: {exc}; nothing written", file=sys.stderr)
            return EXIT_INVALID
        except ReplyError as exc:
            raise FlashmmError(f"redis {target.endpoint.label()}: {exc}") from None
        _, runtime = target.live(conn)
    info = explain(target.resolution(runtime), spec.path)
    if outcome == "changed":
        print(f"{'set' if value is not None else 'unset'} {spec.path} on host {target.host}: "
              f"version {new_version}, published on flashmm:config:updates")
    else:
        print(f"{spec.path} unchanged on host {target.host} (version {new_version})")
    print("  " + _line(info))
    return EXIT_OK


def cmd_set(args) -> int:
    return _write(args, args.value)


def cmd_unset(args) -> int:
    return _write(args, None)


def cmd_watch(args) -> int:
    """Print each change live: ``<time> <key> = <value> (layer ...)``; meta summaries too."""
    target = Target(args)
    layers, keys, _, _ = _library()
    seen = 0
    with target.connect(PubSubConnection) as sub, target.connect() as conn:
        try:
            sub.subscribe(keys.UPDATES_CHANNEL, keys.SUMMARY_CHANNEL)
        except (RedisError, ReplyError) as exc:
            raise FlashmmError(f"redis {target.endpoint.label()}: {exc}") from None
        print(f"watching {keys.UPDATES_CHANNEL} on redis {target.endpoint.label()} "
              f"(host {target.host}); Ctrl-C ends", flush=True)
        while args.count is None or seen < args.count:
            try:
                message = sub.read_message(timeout=1.0)
            except (RedisError, ReplyError) as exc:
                raise FlashmmError(f"redis {target.endpoint.label()}: {exc}") from None
            if message is None:
                continue
            _, channel, data = message
            stamp = time.strftime("%H:%M:%S")
            text = data.decode("utf-8", "replace")
            if channel == keys.SUMMARY_CHANNEL:
                print(f"{stamp} version: {text}", flush=True)
                continue
            seen += 1
            if text not in FIELDS or not FIELDS[text].runtime:
                print(f"{stamp} ignored: {text!r} is not a runtime key", flush=True)
                continue
            _, runtime = target.live(conn)
            print(f"{stamp} {_line(explain(target.resolution(runtime), text))}", flush=True)
    return EXIT_OK


def register(sub) -> None:
    """Add ``runtime get|list|set|unset|watch`` to the CLI's subcommands."""
    redis_help = ("the host's Redis, redis[s]://[:password@]host:port/db (default: "
                  "$FLASHMM_REDIS_URL, else derived from the inventory)")
    r = sub.add_parser("runtime", help="the runtime layer in a host's Redis: get, list, set, "
                       "unset, watch (validated and published as deploy does)")
    rsub = r.add_subparsers(dest="runtime_command", required=True)

    def common(p):
        p.add_argument("inventory")
        p.add_argument("--host", help="default: the inventory's first host")
        p.add_argument("--redis", metavar="URL", help=redis_help)
        return p

    g = common(rsub.add_parser("get", help="a runtime key's value and the layer serving it"))
    g.add_argument("key")
    g.set_defaults(func=cmd_get)
    common(rsub.add_parser("list", help="every runtime key, value and layer")).set_defaults(
        func=cmd_list)
    s = common(rsub.add_parser("set", help="set a runtime key (validated with the whole "
                               "configuration, published)"))
    s.add_argument("key")
    s.add_argument("value", help="spelt as in .env: 2.5, true, ...")
    s.add_argument("--actor", help="who, in the flashmm:meta:updates summary (default: "
                   "user@machine)")
    s.set_defaults(func=cmd_set)
    u = common(rsub.add_parser("unset", help="remove a runtime value (the inventory's serves)"))
    u.add_argument("key")
    u.add_argument("--actor")
    u.set_defaults(func=cmd_unset)
    w = common(rsub.add_parser("watch", help="print changes live, with the layer serving each"))
    w.add_argument("--count", type=int, help="end after this many changes")
    w.set_defaults(func=cmd_watch)
