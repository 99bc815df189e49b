"""Where a Redis database is and how to reach it (``Endpoint``), and the errors of the Redis
client (``RedisError``, ``ReplyError``).

Standard library only, Python 3.8+, no relative imports: shipped to target hosts as
``module_utils/flashmm_redis_endpoint.py`` with ``redis/client.py``, which re-exports every public
name here (``from flashmm_deploy.redis.client import Endpoint`` stays the usual import).  URLs
are parsed and written by ``redis_ext.url`` (controller and stand-in only: modules never parse one).
No repr or message holds a password: ``Endpoint.label()`` and the repr leave it out, and
``_scrub`` masks it in any text.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import quote

__all__ = ["Endpoint", "KINDS", "MASK", "RedisError", "ReplyError"]

KINDS = ("input", "connect", "tls", "auth", "select", "protocol", "reply")
MASK = "***"

_HOST_RE = re.compile(r"[^\s\x00-\x1f\x7f/?#@\[\]\\]+\Z")


class RedisError(Exception):
    """A failure talking to Redis. ``.kind`` is one of: "input", "connect", "tls", "auth",
    "select", "protocol", "reply". The message names the endpoint label, never a password."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):          # picklable despite the second constructor argument
        return (type(self), (str(self), self.kind))


class ReplyError(Exception):
    """An error reply from the server; str() is the reply text without the leading '-'."""


def _scrub(text: str, secrets) -> str:
    """``text`` with every secret (raw and percent-encoded) replaced by ``MASK``."""
    for secret in secrets:
        if not secret:
            continue
        # Longest form first, so no form is half-replaced by a shorter one.
        for form in sorted({secret, quote(secret, safe=""), quote(secret)}, key=len,
                           reverse=True):
            text = text.replace(form, MASK)
    return text


# --------------------------------------------------------------------------------------------
# Endpoint


# Endpoint fields in positional order, with defaults.  A plain class, not a dataclass: importing
# dataclasses (and inspect through it) cost more than the rest of this module on a target.
_ENDPOINT_FIELDS = (
    ("host", "127.0.0.1"), ("port", 6379), ("db", 0),
    ("username", None), ("password", None),          # the password is never in repr
    ("tls", False),
    ("ca_file", None),       # CA bundle to verify the server; None = system defaults
    ("cert_file", None),     # client certificate (mutual TLS)
    ("key_file", None),
    ("verify", True),        # verify the server certificate and host name
    ("server_name", None),   # SNI / name to verify when it differs from host
    ("timeout", 5.0),
    # Verify the certificate but not the name in it (redis-py's ssl_check_hostname=false);
    # prefer server_name, which keeps the name check.
    ("check_hostname", True),
)


class Endpoint(object):
    """Where and how to reach one Redis database: immutable, validated on construction
    (``RedisError(kind="input")``); the password is never part of its repr."""

    __slots__ = tuple(name for name, _ in _ENDPOINT_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(_ENDPOINT_FIELDS):
            raise TypeError("Endpoint takes at most %d positional arguments"
                            % len(_ENDPOINT_FIELDS))
        values = dict(_ENDPOINT_FIELDS)
        for (name, _), value in zip(_ENDPOINT_FIELDS, args):
            values[name] = value
        for name, value in kwargs.items():
            if name not in values:
                raise TypeError("Endpoint got an unexpected keyword argument %r" % name)
            if name in dict(_ENDPOINT_FIELDS[:len(args)]):
                raise TypeError("Endpoint got multiple values for argument %r" % name)
            values[name] = value
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Endpoint is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Endpoint is read-only")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name, _ in _ENDPOINT_FIELDS)

    def __eq__(self, other: object) -> bool:
        return type(other) is Endpoint and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "Endpoint(%s)" % ", ".join("%s=%r" % (name, getattr(self, name))
                                          for name, _ in _ENDPOINT_FIELDS
                                          if name != "password")

    def __post_init__(self) -> None:
        def bad(problem: str) -> RedisError:
            return RedisError("bad redis endpoint: " + problem, "input")

        # Empty strings (an unset Ansible option, an empty URL part) mean "not set".
        for name in ("username", "password", "ca_file", "cert_file", "key_file", "server_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise bad("%s must be a string" % name)
            if value == "":
                object.__setattr__(self, name, None)
        if not isinstance(self.host, str) or not self.host:
            raise bad("host must be a non-empty string")
        if not _HOST_RE.match(self.host):
            raise bad("host holds characters a host name cannot have")
        for name in ("port", "db"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad("%s must be an integer" % name)
        if not 0 < self.port < 65536:
            raise bad("port must be from 1 to 65535")
        if self.db < 0:
            raise bad("db must not be negative")
        for name in ("tls", "verify", "check_hostname"):
            if not isinstance(getattr(self, name), bool):
                raise bad("%s must be true or false" % name)
        if (not isinstance(self.timeout, (int, float)) or isinstance(self.timeout, bool)
                or not math.isfinite(self.timeout) or self.timeout <= 0):
            raise bad("timeout must be a positive number of seconds")
        if self.username is not None and self.password is None:
            raise bad("a redis username needs a password")
        if not self.tls:
            given = [n for n in ("ca_file", "cert_file", "key_file", "server_name")
                     if getattr(self, n) is not None]
            if given:
                raise bad("%s given without tls" % ", ".join(given))
        if self.key_file is not None and self.cert_file is None:
            raise bad("key_file given without cert_file")

    def _host_text(self, in_url: bool = False) -> str:
        if ":" not in self.host:
            return self.host
        return "[%s]" % (self.host.replace("%", "%25") if in_url else self.host)

    def label(self) -> str:
        """``host:port/db`` plus `` tls`` and `` user NAME`` when set: for messages."""
        text = "%s:%d/%d" % (self._host_text(), self.port, self.db)
        if self.tls:
            text += " tls"
        if self.username:
            text += " user " + self.username
        return text
