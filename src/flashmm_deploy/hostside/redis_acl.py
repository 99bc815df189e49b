"""Make a running Redis serve the ACL file deploy just wrote, without a restart and without
dropping a client.

The stack's Redis reads ``redis/users.acl`` (a bind-mounted directory, so it sees the renamed
file) when it starts.  A change (a rotation adding the new passwords, then dropping the old
ones; an upgrade from the single ``default`` user) must reach the running server before any
client uses a new password, and must never disconnect a client.  ``ACL LOAD`` cannot do that
for named users: Redis 7.0 disconnects every client of every user but ``default`` on each
``ACL LOAD`` (measured: the app's connections and the loader's own).  So the file's users are
compared, one by one, with ``ACL LIST`` and each that differs is replaced in place with ``ACL
SETUSER <name> reset <its rules>`` (connections kept), users the file lacks are deleted, the
``default`` user last (it may be the connection's own).  The result is checked against the file
again with ``ACL LIST``.  A restart would drop every connection.

The users (``render.acl_file`` writes them; why each may do what it may: the README):

* ``default``: off where Redis needs a password (else ``nopass``, everything).
* ``flashmm`` (``APP_USER``): the app, named by REDIS_URL; ``APP_COMMANDS`` on
  ``flashmm:*`` keys and channels.
* ``flashmm-deploy`` (``DEPLOY_USER``): deploy's steps (seed, this reload, backup, restore,
  record re-encryption); ``DEPLOY_COMMANDS`` on ``flashmm:*`` keys and channels.
* ``healthcheck``: PING only.

Upgrade: a stack deployed before these users has only ``default`` (everything, the app's
password).  Deploy then authenticates as ``default`` with the app's password
(``legacy_passwords``), adds the new users and keeps that ``default`` while the app still
connects as it (``keep_legacy_default``: the write step that changes ``.env``); the seed step,
after compose recreated the app with its new REDIS_URL, turns it off.

Standard library only: shipped to targets as ``module_utils/flashmm_redis_acl.py``.
"""

from __future__ import annotations

import re
import socket
from typing import Any, List, Mapping, Optional, Sequence

try:
    from flashmm_deploy.redis.client import Connection, Endpoint, RedisError, ReplyError
    from flashmm_deploy.hostside.seed_apply import ENDPOINT_OPTIONS
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, Endpoint, RedisError, ReplyError)
    from ansible.module_utils.flashmm_seed_apply import ENDPOINT_OPTIONS  # type: ignore[no-redef]

_DIGEST = re.compile(r"#([0-9a-f]{64})")
# Where deploy writes the ACL file, relative to the host's root (render.ACL_PATH).
ACL_PATH = "redis/users.acl"
APP_USER = "flashmm"
DEPLOY_USER = "flashmm-deploy"
HEALTH_USER = "healthcheck"
# What the app does (src/flashmm_config, the stand-in, FlashMM's own use of its keys): its
# connection's handshake, reads and writes of its keys, SCAN (never KEYS), transactions, the
# runtime set's script (with its audit list: TIME LPUSH LTRIM), pub/sub on its channels.  Nothing
# keyless that changes the server (FLUSHALL, FLUSHDB, CONFIG, ACL, SHUTDOWN, DEBUG, MODULE,
# FUNCTION, SCRIPT FLUSH, CLIENT KILL).
APP_COMMANDS = (
    "ping", "echo", "select", "hello", "client|setname", "client|getname", "client|id",
    "get", "mget", "set", "setex", "psetex", "getdel", "incr", "incrby", "decr", "decrby",
    "del", "unlink", "exists", "type", "ttl", "pttl", "expire", "pexpire", "persist",
    "hget", "hmget", "hgetall", "hset", "hdel", "hexists", "hkeys", "hlen", "hincrby",
    "scan", "hscan", "multi", "exec", "discard", "watch", "unwatch", "lpush", "ltrim", "time",
    "eval", "evalsha", "script|load", "script|exists",
    "publish", "subscribe", "unsubscribe", "psubscribe", "punsubscribe")
# What deploy's steps run, directly or in their scripts: the seed (GET HGETALL SET HSET DEL
# HDEL INCR PUBLISH), backup (SCAN TYPE PTTL GET HGETALL LRANGE SMEMBERS ZRANGE), restore (DEL
# SET HSET RPUSH SADD ZADD PEXPIRE INCR PUBLISH), record re-encryption (SCAN GET SET), the
# audit log's copy of the runtime sets (LRANGE), this
# module (ACL LIST, GETUSER, CAT, SETUSER, DELUSER).  ACL SETUSER could grant this user more:
# it is given because ACL LOAD would drop the app's connections (above), and whoever holds
# this password (the controller's vault) writes the ACL file Redis starts from anyway.  No
# SHUTDOWN, FLUSHALL, FLUSHDB, CONFIG, DEBUG, MODULE, KEYS, SUBSCRIBE.
DEPLOY_COMMANDS = (
    "ping", "select", "get", "set", "del", "exists", "type", "pttl", "scan", "incr",
    "hgetall", "hset", "hdel", "lrange", "rpush", "smembers", "sadd", "zrange", "zadd",
    "pexpire", "publish", "eval", "evalsha", "script|load",
    "acl|list", "acl|getuser", "acl|cat", "acl|setuser", "acl|deluser", "acl|whoami")
# The secrets deploy's user authenticates with (env var names; never in the app's files, so
# never in a backup's .env either: a restore keeps the vault's)
DEPLOY_PASSWORD_ENVS = ("REDIS_DEPLOY_PASSWORD", "REDIS_DEPLOY_PASSWORD_PREVIOUS")
# Tokens ACL LIST adds that an ACL file line need not say (Redis 7.0's defaults)
_IMPLIED = frozenset({"sanitize-payload", "resetchannels"})
# The modules' option spec for a live reload (flashmm_files, flashmm_restore, flashmm_runtime):
# the connection options of the flashmm_runtime module (``username``: deploy's user), the
# passwords to try (deploy's user's), and the app's passwords to try as ``default`` on a
# stack deployed before the users existed.
ACL_RELOAD_OPTIONS = dict({k: v for k, v in ENDPOINT_OPTIONS.items() if k != "db"},
                          previous_password=dict(type="str", no_log=True),
                          legacy_passwords=dict(type="list", elements="str", default=[],
                                                no_log=True))


class AclError(Exception):
    """The running Redis could not be brought to the file's rules (message: no password)."""

    def __init__(self, message: str, kind: str = "acl"):
        super().__init__(message)
        self.kind = kind


def users(acl_text: str) -> dict:
    """user name -> (its other rules as a frozenset of words, the implied ones left out; its
    command rules in order) of an ACL file's text or of ``ACL LIST``'s lines."""
    out = {}
    for line in acl_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "user":
            rules = [w for w in words[2:] if w not in _IMPLIED]
            out[words[1]] = (frozenset(w for w in rules if w[:1] not in "+-"),
                             tuple(w for w in rules if w[:1] in "+-"))
    return out


def _allowed(commands, category) -> frozenset:
    """The commands a user's command rules allow (``category(name)``: a category's commands,
    as ``ACL CAT`` lists them).  Redis shows rules its own way (it folds commands into
    categories), so rules are compared by what they allow."""
    out: set = set()
    for rule in commands:
        sign, what = rule[0], rule[1:]
        names = ({"@all"} if what == "@all" else set(category(what[1:]))
                 if what.startswith("@") else {what})
        if what == "@all" and sign == "-":
            out.clear()
        elif sign == "+":
            out |= names
        else:
            out -= names
    return frozenset(out)


def _same(want: tuple, live: Optional[tuple], category) -> bool:
    return live is not None and want[0] == live[0] and \
        _allowed(want[1], category) == _allowed(live[1], category)


def file_rules(acl_text: str, user: str = "default") -> tuple:
    """(sorted password digests, nopass) of ``user`` in an ACL file's text."""
    rules = users(acl_text).get(user, (frozenset(), ()))[0]
    return tuple(sorted(_DIGEST.findall(" ".join(rules)))), "nopass" in rules


def _live_users(conn: "Connection") -> dict:
    reply = conn.call("ACL", "LIST")
    return users("\n".join(line.decode("utf-8", "replace") for line in reply or []))


def _is_legacy_default(rules) -> bool:
    """The ``default`` user of a stack deployed before the app and deploy users: on, with a
    password, every command."""
    flags, commands = rules
    return "on" in flags and "nopass" not in flags and "+@all" in commands and \
        any(_DIGEST.fullmatch(r) for r in flags)


def _connect(endpoint_args: Mapping[str, Any], logins: Sequence[tuple]):
    """A connection authenticated with the first (user, password) that works, or None when
    nothing listens (the stack is not up yet: it will start from the file).  Only a refused
    connection counts as nothing listening: a Redis that hangs or resets is an error, since
    the app is about to restart with a password it may not accept yet."""
    last = None
    for username, password in logins:
        args = dict(endpoint_args, password=password or None,
                    username=username if password else None)
        try:
            conn = Connection(Endpoint(**args))
            conn.call("PING")
            return conn
        except RedisError as exc:
            if exc.kind == "connect" and _refused(endpoint_args):
                return None
            if exc.kind != "auth":
                raise AclError(str(exc), exc.kind) from None
            last = exc
    raise AclError("no password this deploy knows is accepted by redis %s (%s), so its ACL "
                   "file cannot be reloaded: a Redis password is changed by "
                   "playbooks/rotate_secrets.yml -e rotate=redis (which keeps the old one "
                   "valid meanwhile), not by editing the vault; if its current password is "
                   "lost, deploy once with -e flashmm_stack_redis_restart_on_acl_change=true "
                   "(Redis restarts, its clients are dropped)"
                   % (Endpoint(**dict(endpoint_args, password=None, username=None)).label(),
                      last), "auth")


def _refused(endpoint_args: Mapping[str, Any]) -> bool:
    try:
        socket.create_connection((endpoint_args["host"], endpoint_args["port"]),
                                 timeout=endpoint_args.get("timeout") or 5.0).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def logins(endpoint_args: Mapping[str, Any], passwords: Sequence[Optional[str]],
           legacy_passwords: Sequence[Optional[str]] = ()) -> List[tuple]:
    """(user, password) to try: deploy's user (``endpoint_args["username"]``; ``default`` when
    None) with each of ``passwords``, then ``default`` with each legacy password, then no
    AUTH (an unprotected Redis)."""
    user = endpoint_args.get("username")
    out = [(user, p) for p in passwords if p] + [(None, p) for p in legacy_passwords if p]
    return out + [(None, None)]


def ensure_loaded(endpoint_args: Mapping[str, Any], passwords: Sequence[Optional[str]],
                  acl_text: str, *, check: bool = False,
                  legacy_passwords: Sequence[Optional[str]] = (),
                  keep_legacy_default: bool = False) -> dict:
    """Compare every user of the running server (``ACL LIST``) with ``acl_text``'s and replace
    each that differs live (``ACL SETUSER``; ``ACL DELUSER`` for users the file lacks).
    ``passwords``: deploy's user's to try, the file's first (a previous deploy may have left
    either live); ``legacy_passwords``: the app's, tried as ``default`` (an upgrade).
    ``keep_legacy_default``: leave a ``default`` user that is still the old all-powerful one
    (the app connects as it until it restarts).  Returns ``{"running", "reloaded",
    "default_kept"}`` (``reloaded``: would be, in check mode)."""
    conn = _connect(endpoint_args, logins(endpoint_args, passwords, legacy_passwords))
    if conn is None:
        return {"running": False, "reloaded": False, "default_kept": False}
    try:
        want = users(acl_text)
        live = _live_users(conn)
        cats: dict = {}

        def category(name):
            if name not in cats:
                cats[name] = [c.decode("ascii") for c in conn.call("ACL", "CAT", name)]
            return cats[name]

        kept = (keep_legacy_default and "default" in live and _is_legacy_default(live["default"])
                and not _same(want.get("default", (frozenset(), ())), live["default"], category))
        if kept:
            want["default"] = live["default"]
        changes = [u for u in want if not _same(want[u], live.get(u), category)]
        gone = [u for u in live if u not in want and u != "default"]
        if not changes and not gone:
            return {"running": True, "reloaded": False, "default_kept": kept}
        if check:
            return {"running": True, "reloaded": True, "default_kept": kept}
        rules = {u: next(ln.split()[2:] for ln in acl_text.splitlines()
                         if ln.split()[:2] == ["user", u]) for u in changes}
        for u in sorted(changes, key=lambda u: u == "default"):   # default last
            if u == "default" and conn.call("ACL", "WHOAMI") == b"default":
                # the legacy login is about to lose every command: go on as deploy's user
                conn.close()
                conn = _connect(endpoint_args, logins(endpoint_args, passwords))
            _acl(conn, endpoint_args, "SETUSER", u, "reset", *rules[u])
        for u in gone:
            _acl(conn, endpoint_args, "DELUSER", u)
        got = _live_users(conn)
        if set(got) != set(want) or not all(_same(want[u], got[u], category) for u in want):
            raise AclError("redis %s serves other users than its ACL file after ACL SETUSER"
                           % conn_label(endpoint_args))
        return {"running": True, "reloaded": True, "default_kept": kept}
    except RedisError as exc:
        raise AclError(str(exc), exc.kind) from None
    finally:
        if conn is not None:
            conn.close()


def _acl(conn: "Connection", endpoint_args: Mapping[str, Any], *args: str) -> None:
    try:
        conn.call("ACL", *args)
    except ReplyError as exc:
        raise AclError("redis %s refused ACL %s %s of its ACL file: %s"
                       % (conn_label(endpoint_args), args[0], args[1],
                          str(exc).split("\n")[0])) from None


def reload_args(connection: Mapping[str, Any], secrets: Mapping[str, str]) -> dict:
    """A module's ``acl_reload`` option (``ACL_RELOAD_OPTIONS``): the plan's connection and
    the passwords from the host's secrets (env var -> value)."""
    return dict(connection, password=secrets.get(DEPLOY_PASSWORD_ENVS[0]),
                previous_password=secrets.get(DEPLOY_PASSWORD_ENVS[1]),
                legacy_passwords=[p for p in (secrets.get("REDIS_PASSWORD"),
                                              secrets.get("REDIS_PASSWORD_PREVIOUS")) if p])


def app_digests(acl_text: str) -> List[str]:
    """The password digests of the app's user in an ACL file (of ``default`` in a file written
    before the app had its own user)."""
    rules = users(acl_text)
    own = rules.get(APP_USER, rules.get("default", (frozenset(), ())))[0]
    return sorted(r for r in own if _DIGEST.fullmatch(r))


def with_app_digests(acl_text: str, digests: Sequence[str]) -> str:
    """``acl_text`` with the app user's passwords replaced by ``digests``."""
    out = []
    for line in acl_text.splitlines(True):
        words = line.split()
        if words[:2] == ["user", APP_USER] and digests:
            rest = [w for w in words[2:] if not _DIGEST.fullmatch(w)]
            line = " ".join(words[:2] + rest[:1] + list(digests) + rest[1:]) + "\n"
        out.append(line)
    return "".join(out)


def conn_label(endpoint_args: Mapping[str, Any]) -> str:
    return Endpoint(**dict(endpoint_args, password=None, username=None)).label()


def endpoint_args_from(runtime: Mapping[str, Any]) -> dict:
    """The connection part of the runtime options (``RUNTIME_OPTIONS``), db 0: ACLs are
    server-wide."""
    return dict(host=runtime["host"], port=runtime["port"], db=0,
                username=runtime.get("username"), tls=runtime.get("tls", False),
                ca_file=runtime.get("ca_file"), cert_file=runtime.get("cert_file"),
                key_file=runtime.get("key_file"), verify=runtime.get("tls_verify", True),
                timeout=runtime.get("timeout", 5.0))

