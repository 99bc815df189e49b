"""A small blocking Redis client (RESP2) with TLS and ACL users, standard library only.

Contract:

* Standard library only, no relative imports, no import from ``flashmm_deploy``, Python 3.8+:
  Ansible ships this file to target hosts inside modules (``module_utils/flashmm_redis_client.py``)
  and the stand-in app container imports it; neither has redis-py or this package.
* Never prints.  No message, exception string or repr holds a password: ``Endpoint.label()``
  and ``Endpoint.url()`` leave it out, every error text (including server error replies, which
  may echo arguments) is scrubbed, and exceptions are raised ``from None`` so no chained
  traceback carries a password either.
* ``RedisError.kind`` says what failed (``input``, ``connect``, ``tls``, ``auth``, ``select``,
  ``protocol``, ``reply``); timeouts and socket errors are ``connect``.
* Replies: simple string -> str, bulk string -> bytes, integer -> int, null -> None,
  array -> list; an error reply is a ``ReplyError`` (raised by ``call``, returned by
  ``pipeline``).  Bulk strings may be any size, but no line (status, error, integer, length
  header) may exceed ``MAX_LINE`` bytes: nothing is buffered without a known length.

URL forms (``Endpoint.from_url``): ``redis://[[username]:password@]host[:port][/db][?params]``
and ``rediss://`` (TLS).  The userinfo ends at the *last* ``@`` before the host, so a password
may hold ``# / ? @ : %`` and spaces unencoded; it is percent-decoded when that yields UTF-8 (so
a literal ``%`` followed by two hex digits must be written ``%25``).  An ``@`` inside a query
value should be percent-encoded (``%40``).
"""

from __future__ import annotations

import math
import re
import socket
import sys
import time
from collections import deque
from typing import Any, Deque, Optional  # noqa: F401 (Deque: a type comment)
from urllib.parse import quote

__all__ = ["Connection", "Endpoint", "KINDS", "MASK", "RedisError", "ReplyError", "mask_url"]

KINDS = ("input", "connect", "tls", "auth", "select", "protocol", "reply")
MASK = "***"
MAX_LINE = 1 << 20     # longest status/error/integer/header line accepted (1 MiB)
_RECV = 1 << 16

_HOST_RE = re.compile(r"[^\s\x00-\x1f\x7f/?#@\[\]\\]+\Z")
_INT_RE = re.compile(rb"-?[0-9]+\Z")


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

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> "Endpoint":
        """Parse a ``redis://`` / ``rediss://`` URL: see ``redis_url.endpoint_from_url``."""
        return _url_module().endpoint_from_url(url, **overrides)

    def url(self, *, reveal: bool = False) -> str:
        """The canonical URL; the password shows as ``***`` unless ``reveal``."""
        return _url_module().endpoint_url(self, reveal=reveal)

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

def mask_url(url: str) -> str:
    """Any URL with its password replaced by ``***``: see ``redis_url.mask_url``."""
    return _url_module().mask_url(url)


def _url_module():
    # URL parsing lives apart: every module call on a target compiles this file from source,
    # and modules never parse URLs.
    try:
        from flashmm_deploy import redis_url
    except ImportError:         # a bare copy of the two files side by side
        import redis_url        # type: ignore[no-redef]
    return redis_url


# --------------------------------------------------------------------------------------------
# Connection


class _NeedMore(Exception):
    """Internal: the buffer holds no complete item yet (``size``: bytes still missing, or 0)."""

    def __init__(self, size: int = 0):
        super().__init__(size)
        self.size = size


class _SoftTimeout(Exception):
    """Internal: a read_message wait ran out; the connection stays usable."""


class _ArrayStart(object):
    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count


def _encode_command(args) -> bytes:
    if not isinstance(args, (tuple, list)) or not args:
        raise RedisError("a command is a non-empty tuple of arguments", "input")
    parts = [b"*%d\r\n" % len(args)]
    for index, arg in enumerate(args):
        if isinstance(arg, str):
            try:
                data = arg.encode("utf-8")
            except UnicodeEncodeError:
                raise RedisError("argument %d of a command is not valid UTF-8 text" % index,
                                 "input") from None
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            data = bytes(arg)
        elif isinstance(arg, bool) or not isinstance(arg, (int, float)):
            raise RedisError("argument %d of a command has unsupported type %s (use str, "
                             "bytes, int or float)" % (index, type(arg).__name__), "input")
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(float(arg)).encode("ascii")
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def _ssl():
    """The ssl module, imported on first TLS use only: it is the costliest import here, and
    every module call on a target imports this file."""
    import ssl
    return ssl


def _is_ssl_error(exc: BaseException, *names: str) -> bool:
    # Without TLS, ssl was never imported and no exception can be one of its types.
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return False
    return isinstance(exc, tuple(getattr(ssl, n) for n in (names or ("SSLError",))))


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    if reason:
        return reason
    if _is_ssl_error(exc, "SSLEOFError", "SSLZeroReturnError"):
        return "the server closed the TLS connection"
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or ""))
    return text or exc.__class__.__name__


def _os_reason(exc: BaseException) -> str:
    if _is_ssl_error(exc):
        return _ssl_reason(exc)
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def _tls_hint(reason: str) -> str:
    upper = reason.upper()
    if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER_FAILURE" in upper:
        return " (is that port speaking TLS? a plain redis port answers in clear text)"
    if "CERTIFICATE_REQUIRED" in upper or "HANDSHAKE_FAILURE" in upper:
        return " (the server may require a client certificate: set cert_file and key_file)"
    if any(word in upper for word in ("UNKNOWN_CA", "BAD_CERTIFICATE", "UNSUPPORTED_CERTIFICATE",
                                      "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED")):
        return " (the server rejected the client certificate)"
    return ""


class Connection:
    """One blocking connection.  The constructor connects, wraps in TLS when the endpoint
    says so, and then, in one pipelined round trip, authenticates (AUTH [username] password,
    when a password is set) and selects the db (when not 0); when neither applies it sends a
    PING instead, so a server that refuses us (NOAUTH, a TLS client-certificate alert, no
    answer) fails here rather than at the first command.

    After a timeout or an I/O or protocol error the reply stream can no longer be trusted:
    the connection is closed and later calls raise ``RedisError(kind="connect")``.  A
    ``read_message`` timeout is the exception: it returns None and keeps the connection."""

    def __init__(self, endpoint: Endpoint):
        if not isinstance(endpoint, Endpoint):
            raise RedisError("Connection needs an Endpoint", "input")
        self.endpoint = endpoint
        self._where = endpoint.label()
        self._secrets = (endpoint.password,) if endpoint.password else ()
        self._sock = None            # type: Optional[socket.socket]
        self._buf = bytearray()
        self._pos = 0
        self._stack = []             # type: List[list]
        self._broken = None          # type: Optional[str]
        self._subscribed = False
        self._pending = deque()      # type: Deque[tuple]
        self._in_setup = True
        deadline = time.monotonic() + endpoint.timeout
        context = self._tls_context() if endpoint.tls else None
        sock = self._connect(deadline)
        try:
            if context is not None:
                sock = self._handshake(context, sock, deadline)
            self._sock = sock
            self._setup(deadline)
            self._sock.settimeout(endpoint.timeout)
            self._in_setup = False
        except BaseException:
            self.close()
            sock.close()
            raise

    # ---- errors ------------------------------------------------------------------------------

    def _error(self, message: str, kind: str) -> RedisError:
        return RedisError(_scrub(message, self._secrets), kind)

    def _broke(self, message: str, kind: str) -> RedisError:
        """Close the connection (its stream is no longer trusted) and return the error."""
        error = self._error(message, kind)
        if self._broken is None:
            self._broken = str(error)
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        return error

    def _io_error(self, exc: BaseException, doing: str) -> RedisError:
        ep = self.endpoint
        if isinstance(exc, socket.timeout):
            return self._broke("timed out after %gs %s redis at %s"
                               % (ep.timeout, doing, self._where), "connect")
        closed = (_is_ssl_error(exc, "SSLEOFError", "SSLZeroReturnError")
                  or isinstance(exc, (ConnectionResetError, BrokenPipeError)))
        if closed and ep.tls and self._in_setup:
            # Redis refuses a missing or unacceptable client certificate with an alert and a
            # close; which of the two the client sees first is a race, so a close says the same.
            hint = ("it may require a client certificate (set cert_file and key_file)"
                    if ep.cert_file is None else "it may have rejected the client certificate")
            return self._broke("redis at %s closed the TLS connection before answering (%s): %s"
                               % (self._where, _os_reason(exc), hint), "tls")
        if _is_ssl_error(exc) and not closed:
            reason = _ssl_reason(exc)
            return self._broke("TLS error %s redis at %s: %s%s"
                               % (doing, self._where, reason, _tls_hint(reason)), "tls")
        reason = _os_reason(exc)
        if closed and not ep.tls and self._in_setup:
            reason += " (if that port expects TLS, use rediss:// / tls)"
        return self._broke("connection to redis at %s failed %s it: %s"
                           % (self._where, doing, reason), "connect")

    # ---- connecting --------------------------------------------------------------------------

    def _tls_context(self) -> Any:  # ssl.SSLContext
        ssl = _ssl()
        ep = self.endpoint
        try:
            context = ssl.create_default_context(cafile=ep.ca_file)
        except (OSError, ValueError) as exc:     # ssl.SSLError is an OSError
            reason = _os_reason(exc)
            raise self._error("cannot load the CA bundle %s for redis at %s: %s"
                              % (ep.ca_file, self._where, reason), "tls") from None
        if not ep.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif not ep.check_hostname:
            context.check_hostname = False
        if ep.cert_file is not None:
            try:
                # A callable password: an encrypted key fails instead of prompting on a TTY.
                context.load_cert_chain(ep.cert_file, ep.key_file, password=lambda: b"")
            except (OSError, ValueError) as exc:
                reason = _os_reason(exc)
                if "PEM lib" in reason:
                    reason += " (not a PEM certificate and key, or an encrypted key, which is " \
                              "not supported)"
                raise self._error("cannot load the client certificate %s (key %s) for redis at "
                                  "%s: %s" % (ep.cert_file, ep.key_file or ep.cert_file,
                                              self._where, reason), "tls") from None
        return context

    def _remaining(self, deadline: float) -> float:
        return max(deadline - time.monotonic(), 0.001)

    def _connect(self, deadline: float) -> socket.socket:
        ep = self.endpoint
        error = None
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=self._remaining(deadline))
        except socket.timeout:
            error = self._error("timed out after %gs connecting to redis at %s"
                                % (ep.timeout, self._where), "connect")
        except socket.gaierror as exc:
            error = self._error("cannot resolve the host of redis at %s: %s"
                                % (self._where, _os_reason(exc)),
                                "connect")
        except OSError as exc:
            error = self._error("cannot connect to redis at %s: %s"
                                % (self._where, _os_reason(exc)),
                                "connect")
        if error is not None:
            raise error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return sock

    def _handshake(self, context: Any, sock: socket.socket,
                   deadline: float) -> Any:  # ssl.SSLSocket
        ssl = _ssl()
        ep = self.endpoint
        error = None
        sock.settimeout(self._remaining(deadline))
        try:
            return context.wrap_socket(sock, server_hostname=ep.server_name or ep.host)
        except ssl.SSLCertVerificationError as exc:
            error = self._error(
                "TLS certificate verification failed for redis at %s: %s (check ca_file, and "
                "server_name when the certificate names another host)"
                % (self._where, _ssl_reason(exc)), "tls")
        except socket.timeout:
            error = self._error("timed out after %gs in the TLS handshake with redis at %s "
                                "(is that port speaking TLS?)" % (ep.timeout, self._where),
                                "connect")
        except ssl.SSLError as exc:
            reason = _ssl_reason(exc)
            error = self._error("TLS handshake with redis at %s failed: %s%s"
                                % (self._where, reason, _tls_hint(reason)), "tls")
        except OSError as exc:
            error = self._error("connection to redis at %s failed during the TLS handshake: %s"
                                % (self._where, _os_reason(exc)), "tls")
        raise error

    def _setup(self, deadline: float) -> None:
        ep = self.endpoint
        commands = []
        if ep.password is not None:
            commands.append(("AUTH", ep.username, ep.password) if ep.username
                            else ("AUTH", ep.password))
        if ep.db:
            commands.append(("SELECT", ep.db))
        if not commands:
            commands.append(("PING",))
        self._send(b"".join(_encode_command(c) for c in commands), "sending to")
        replies = [self._read_reply(deadline) for _ in commands]
        for command, reply in zip(commands, replies):
            if not isinstance(reply, ReplyError):
                continue
            text = str(reply)
            code = text.split(" ", 1)[0].upper()
            if command[0] == "AUTH":          # the label names the user, if any
                raise self._broke("redis at %s refused authentication: %s"
                                  % (self._where, text), "auth")
            if code == "NOAUTH":
                raise self._broke("redis at %s requires a password: %s" % (self._where, text),
                                  "auth")
            if code in ("WRONGPASS", "NOPERM"):
                raise self._broke("redis at %s denied %s: %s"
                                  % (self._where, command[0], text), "auth")
            if command[0] == "SELECT":
                raise self._broke("redis at %s: SELECT %d failed: %s"
                                  % (self._where, ep.db, text), "select")
            raise self._broke("redis at %s answered %s with an error: %s"
                              % (self._where, command[0], text), "reply")

    # ---- I/O ---------------------------------------------------------------------------------

    def _usable(self) -> socket.socket:
        if self._broken is not None:
            raise self._error("connection to redis at %s is unusable after an earlier error (%s)"
                              % (self._where, self._broken), "connect")
        if self._sock is None:
            raise self._error("connection to redis at %s is closed" % self._where, "connect")
        return self._sock

    def _send(self, payload: bytes, doing: str) -> None:
        sock = self._usable()
        try:
            sock.sendall(payload)
        except OSError as exc:
            raise self._io_error(exc, doing) from None

    def _fill(self, need: int, deadline: Optional[float], soft: bool) -> None:
        """Receive more bytes into the buffer (until ``deadline`` when given)."""
        sock = self._usable()
        if self._pos and (self._pos == len(self._buf) or self._pos > _RECV):
            del self._buf[:self._pos]
            self._pos = 0
        error = None
        try:
            if deadline is not None:
                sock.settimeout(self._remaining(deadline))
            chunk = sock.recv(min(max(need, _RECV), 1 << 22))
        except socket.timeout:
            if soft:
                raise _SoftTimeout() from None
            error = self._io_error(socket.timeout(), "waiting for")
        except OSError as exc:
            error = self._io_error(exc, "reading from")
        finally:
            if deadline is not None and self._sock is not None:
                self._sock.settimeout(self.endpoint.timeout)
        if error is not None:
            raise error
        if not chunk:
            if self._stack or self._pos < len(self._buf):
                raise self._broke("redis at %s closed the connection in the middle of a reply"
                                  % self._where, "protocol")
            ep = self.endpoint
            if ep.tls and self._in_setup:
                raise self._io_error(_ssl().SSLZeroReturnError(), "reading from")
            hint = "" if ep.tls else " (if that port expects TLS, use rediss:// / tls)"
            raise self._broke("redis at %s closed the connection%s" % (self._where, hint),
                              "connect")
        self._buf += chunk

    def _protocol(self, problem: str) -> RedisError:
        return self._broke("bad reply from redis at %s: %s" % (self._where, problem), "protocol")

    def _int(self, text: bytes, what: str) -> int:
        if not _INT_RE.match(text):
            raise self._protocol("malformed %s" % what)
        return int(text)

    def _take_item(self) -> Any:
        """Consume one complete item (scalar, or an array header) from the buffer."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_LINE:
                raise self._protocol("a reply line longer than %d bytes" % MAX_LINE)
            raise _NeedMore()
        if end - pos > MAX_LINE:
            raise self._protocol("a reply line longer than %d bytes" % MAX_LINE)
        kind, body = buf[pos:pos + 1], bytes(buf[pos + 1:end])
        after = end + 2
        if kind == b"+":
            value = body.decode("utf-8", "replace")   # type: Any
        elif kind == b"-":
            value = ReplyError(_scrub(body.decode("utf-8", "replace"), self._secrets))
        elif kind == b":":
            value = self._int(body, "integer reply")
        elif kind == b"$":
            size = self._int(body, "bulk length")
            if size == -1:
                value = None
            elif size < 0:
                raise self._protocol("negative bulk length")
            else:
                if len(buf) < after + size + 2:
                    raise _NeedMore(after + size + 2 - len(buf))
                if buf[after + size:after + size + 2] != b"\r\n":
                    raise self._protocol("bulk string longer than its length")
                value = bytes(buf[after:after + size])
                after += size + 2
        elif kind == b"*":
            count = self._int(body, "array length")
            if count < -1:
                raise self._protocol("negative array length")
            value = None if count == -1 else _ArrayStart(count)
        elif not kind:
            raise self._protocol("an empty line")
        else:
            raise self._protocol("unexpected reply type %r (is it a Redis server?)"
                                 % bytes(kind))
        self._pos = after
        return value

    def _read_reply(self, deadline: Optional[float] = None, soft: bool = False) -> Any:
        """Read one whole reply.  Resumable: partial input and half-built arrays stay in
        ``self._buf`` / ``self._stack`` when a soft timeout interrupts."""
        while True:
            try:
                value = self._take_item()
            except _NeedMore as need:
                missing = need.size      # type: Optional[int]
            else:
                missing = None
            if missing is not None:      # outside the except: no chained context
                self._fill(missing, deadline, soft)
                continue
            while True:
                if isinstance(value, _ArrayStart):
                    if value.count:
                        self._stack.append([[], value.count])
                        break
                    value = []
                if not self._stack:
                    return value
                top = self._stack[-1]
                top[0].append(value)
                top[1] -= 1
                if top[1]:
                    break
                self._stack.pop()
                value = top[0]

    # ---- public ------------------------------------------------------------------------------

    def _check_commands_allowed(self) -> None:
        if self._subscribed:
            raise self._error("connection to redis at %s is subscribed: only read_message, "
                              "subscribe and close are possible" % self._where, "input")

    def call(self, *args: Any) -> Any:
        """Run one command; raise ``ReplyError`` on an error reply."""
        reply = self.pipeline(args)[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, *commands: tuple) -> list:
        """Send several commands in one write and read their replies; error replies come back
        as ``ReplyError`` instances in the list."""
        if not commands:
            return []
        self._check_commands_allowed()
        payload = b"".join(_encode_command(c) for c in commands)
        self._send(payload, "sending to")
        return [self._read_reply() for _ in commands]

    @staticmethod
    def _message(reply: Any) -> Optional[tuple]:
        if (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"
                and isinstance(reply[1], bytes)):
            return ("message", reply[1].decode("utf-8", "replace"), reply[2])
        return None

    def subscribe(self, *channels: str) -> None:
        """SUBSCRIBE to ``channels`` and consume the confirmations (messages that arrive
        meanwhile are kept for ``read_message``).  Afterwards only ``read_message``,
        ``subscribe`` and ``close`` are possible."""
        if not channels:
            raise self._error("subscribe needs at least one channel", "input")
        payload = _encode_command(("SUBSCRIBE",) + tuple(channels))
        waiting = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in channels]
        self._send(payload, "sending to")
        confirmed = False
        while waiting:
            reply = self._read_reply()
            if isinstance(reply, ReplyError):
                if not confirmed:
                    raise reply                     # refused as a whole (e.g. NOPERM)
                raise self._broke("redis at %s answered SUBSCRIBE with an error: %s"
                                  % (self._where, reply), "reply")
            message = self._message(reply)
            if message is not None:
                self._pending.append(message)
            elif (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"subscribe"
                  and reply[1] in waiting):
                waiting.remove(reply[1])
                confirmed = self._subscribed = True
            else:
                raise self._protocol("unexpected reply to SUBSCRIBE")

    def read_message(self, timeout: Optional[float] = None) -> Optional[tuple]:
        """The next pub/sub message as ``("message", channel, data)`` (channel str, data
        bytes), or None when none arrives within ``timeout`` seconds (None: the endpoint's
        timeout; 0: only what has already arrived).  A timeout keeps the connection usable."""
        if not self._subscribed:
            raise self._error("read_message needs subscribe() first", "input")
        if self._pending:
            return self._pending.popleft()
        wait = self.endpoint.timeout if timeout is None else timeout
        if (not isinstance(wait, (int, float)) or isinstance(wait, bool)
                or not wait >= 0 or math.isinf(wait)):
            raise self._error("read_message timeout must be a finite number >= 0", "input")
        deadline = time.monotonic() + wait
        while True:
            try:
                reply = self._read_reply(deadline, soft=True)
            except _SoftTimeout:
                return None
            if isinstance(reply, ReplyError):
                raise reply
            message = self._message(reply)
            if message is not None:
                return message
            # A late (un)subscribe confirmation or a pong: not a message, keep waiting.

    def close(self) -> None:
        """Close the socket; idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("broken" if self._broken else "closed" if self._sock is None
                 else "subscribed" if self._subscribed else "open")
        return "<Connection to redis at %s, %s>" % (self._where, state)
