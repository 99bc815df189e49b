"""Make a running Redis serve the ACL file deploy just wrote, without a restart.

The stack's Redis reads ``redis/users.acl`` (a bind-mounted directory, so it sees the renamed
file).  A password change (a rotation adding the new password, then dropping the old one)
must reach the running server before any client uses the new password, and must never
disconnect a client: ``ACL LOAD`` replaces the rules all or nothing and keeps the connections
of the ``default`` user (Redis copies the new rules into the same user).  A restart would
drop every connection.

Standard library only: shipped to targets as ``module_utils/flashmm_redis_acl.py``.
"""

from __future__ import annotations

import re
import socket
from typing import Any, List, Mapping, Optional, Sequence

try:
    from flashmm_deploy.redis_client import Connection, Endpoint, RedisError, ReplyError
    from flashmm_deploy.seed_apply import ENDPOINT_OPTIONS
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, Endpoint, RedisError, ReplyError)
    from ansible.module_utils.flashmm_seed_apply import ENDPOINT_OPTIONS  # type: ignore[no-redef]

_DIGEST = re.compile(r"#([0-9a-f]{64})")
# Where deploy writes the ACL file, relative to the host's root (render.ACL_PATH).
ACL_PATH = "redis/users.acl"
# The modules' option spec for a live reload (flashmm_files, flashmm_restore): the connection
# options of the flashmm_runtime module, plus the passwords to try.
ACL_RELOAD_OPTIONS = dict({k: v for k, v in ENDPOINT_OPTIONS.items() if k != "db"},
                          previous_password=dict(type="str", no_log=True))


class AclError(Exception):
    """The running Redis could not be brought to the file's rules (message: no password)."""

    def __init__(self, message: str, kind: str = "acl"):
        super().__init__(message)
        self.kind = kind


def file_rules(acl_text: str, user: str = "default") -> tuple:
    """(sorted password digests, nopass) of ``user`` in an ACL file's text."""
    for line in acl_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "user" and words[1] == user:
            return tuple(sorted(_DIGEST.findall(line))), "nopass" in words
    return (), False


def _live_rules(conn: "Connection", user: str) -> tuple:
    reply = conn.call("ACL", "GETUSER", user)
    fields = dict(zip(reply[0::2], reply[1::2])) if isinstance(reply, list) else {}
    digests = tuple(sorted(d.decode("ascii") for d in fields.get(b"passwords") or []))
    flags = [f.decode("ascii") for f in fields.get(b"flags") or []]
    return digests, "nopass" in flags


def _connect(endpoint_args: Mapping[str, Any], passwords: Sequence[Optional[str]]):
    """A connection authenticated with the first password that works, or None when nothing
    listens (the stack is not up yet: it will start from the file).  Only a refused
    connection counts as nothing listening: a Redis that hangs or resets is an error, since
    the app is about to restart with a password it may not accept yet."""
    last = None
    for password in passwords:
        args = dict(endpoint_args, password=password or None)
        if not password:
            args["username"] = None
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


def ensure_loaded(endpoint_args: Mapping[str, Any], passwords: Sequence[Optional[str]],
                  acl_text: str, *, check: bool = False) -> dict:
    """Compare the running server's rules for the ``default`` user with ``acl_text`` and
    ``ACL LOAD`` when they differ.  ``passwords``: those to try, the file's first (a previous
    deploy may have left either live).  Returns ``{"running": bool, "reloaded": bool}``
    (``reloaded``: would be, in check mode)."""
    conn = _connect(endpoint_args, list(passwords) + [None])
    if conn is None:
        return {"running": False, "reloaded": False}
    try:
        want = file_rules(acl_text)
        if _live_rules(conn, "default") == want:
            return {"running": True, "reloaded": False}
        if check:
            return {"running": True, "reloaded": True}
        try:
            conn.call("ACL", "LOAD")
        except ReplyError as exc:
            raise AclError("ACL LOAD refused by redis %s: %s" % (conn_label(endpoint_args),
                                                                str(exc).split("\n")[0])) from None
        got = _live_rules(conn, "default")
        if got != want:
            raise AclError("redis %s still serves other passwords after ACL LOAD: is its "
                           "--aclfile the deployed redis/users.acl (a directory mount)?"
                           % conn_label(endpoint_args))
        return {"running": True, "reloaded": True}
    except RedisError as exc:
        raise AclError(str(exc), exc.kind) from None
    finally:
        conn.close()


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


def acl_passwords(primary: Optional[str], previous: Optional[str]) -> List[str]:
    return [p for p in (primary, previous) if p]
