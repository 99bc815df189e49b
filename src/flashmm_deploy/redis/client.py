"""A small blocking Redis client (RESP2) with TLS and ACL users, standard library only: what
modules on target hosts need (connect, TLS, AUTH/SELECT, commands, pipelines, EVAL/EVALSHA).

Contract:

* Standard library only, no relative imports, Python 3.8+: Ansible ships this file to target
  hosts inside modules (``module_utils/flashmm_redis_client.py``, with its siblings
  ``redis/endpoint.py``: the ``Endpoint`` and the errors, ``redis/resp.py``: the wire protocol,
  ``redis/tls.py``: TLS and what its failures mean), and the stand-in app container imports
  it; neither has redis-py.  Not shipped:
  URLs (``redis_ext.url``) and pub/sub (``redis_ext.pubsub``), which only the controller, the
  client library and the stand-in use.
* Never prints.  No message, exception string or repr holds a password: ``Endpoint.label()``
  leaves it out, every error text (including server error replies, which may echo arguments)
  is scrubbed, and exceptions are raised ``from None`` so no chained traceback carries a
  password either.
* ``RedisError.kind`` says what failed (``input``, ``connect``, ``tls``, ``auth``, ``select``,
  ``protocol``, ``reply``); timeouts and socket errors are ``connect``.
* Replies: see ``redis.resp``; an error reply is a ``ReplyError`` (raised by ``call``, returned
  by ``pipeline``).
"""

from __future__ import annotations

import socket
import time
from typing import Any, Optional

try:
    from flashmm_deploy.redis.endpoint import (KINDS, MASK, Endpoint, RedisError, ReplyError,
                                               _scrub)
    from flashmm_deploy.redis.resp import (MAX_LINE, ArrayStart, BadReply, NeedMore,
                                           encode_command, take_item)
    from flashmm_deploy.redis.tls import (handshake, is_ssl_error, os_reason, ssl_module,
                                          ssl_reason, tls_context, tls_hint)
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_endpoint import (  # type: ignore[no-redef]
        KINDS, MASK, Endpoint, RedisError, ReplyError, _scrub)
    from ansible.module_utils.flashmm_redis_resp import (  # type: ignore[no-redef]
        MAX_LINE, ArrayStart, BadReply, NeedMore, encode_command, take_item)
    from ansible.module_utils.flashmm_redis_tls import (  # type: ignore[no-redef]
        handshake, is_ssl_error, os_reason, ssl_module, ssl_reason, tls_context, tls_hint)

__all__ = ["Connection", "Endpoint", "KINDS", "MASK", "MAX_LINE", "RedisError", "ReplyError"]

_encode_command = encode_command
_RECV = 1 << 16


class _SoftTimeout(Exception):
    """Internal: a wait with ``soft`` set ran out; the connection stays usable."""


class Connection:
    """One blocking connection.  The constructor connects, wraps in TLS when the endpoint
    says so, and then, in one pipelined round trip, authenticates (AUTH [username] password,
    when a password is set) and selects the db (when not 0); when neither applies it sends a
    PING instead, so a server that refuses us (NOAUTH, a TLS client-certificate alert, no
    answer) fails here rather than at the first command.

    After a timeout or an I/O or protocol error the reply stream can no longer be trusted:
    the connection is closed and later calls raise ``RedisError(kind="connect")``.  A wait
    with ``soft`` set is the exception (pub/sub's ``read_message``, in ``redis_ext.pubsub``): it
    raises ``_SoftTimeout`` and keeps the connection."""

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
        self._in_setup = True
        deadline = time.monotonic() + endpoint.timeout
        context = tls_context(endpoint, self._where, self._error) if endpoint.tls else None
        sock = self._connect(deadline)
        try:
            if context is not None:
                sock = handshake(context, sock, endpoint, self._where,
                                 self._remaining(deadline), self._error)
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
        closed = (is_ssl_error(exc, "SSLEOFError", "SSLZeroReturnError")
                  or isinstance(exc, (ConnectionResetError, BrokenPipeError)))
        if closed and ep.tls and self._in_setup:
            # Redis refuses a missing or unacceptable client certificate with an alert and a
            # close; which of the two the client sees first is a race, so a close says the same.
            hint = ("it may require a client certificate (set cert_file and key_file)"
                    if ep.cert_file is None else "it may have rejected the client certificate")
            return self._broke("redis at %s closed the TLS connection before answering (%s): %s"
                               % (self._where, os_reason(exc), hint), "tls")
        if is_ssl_error(exc) and not closed:
            reason = ssl_reason(exc)
            return self._broke("TLS error %s redis at %s: %s%s"
                               % (doing, self._where, reason, tls_hint(reason)), "tls")
        reason = os_reason(exc)
        if closed and not ep.tls and self._in_setup:
            reason += " (if that port expects TLS, use rediss:// / tls)"
        return self._broke("connection to redis at %s failed %s it: %s"
                           % (self._where, doing, reason), "connect")

    # ---- connecting --------------------------------------------------------------------------

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
                                % (self._where, os_reason(exc)),
                                "connect")
        except OSError as exc:
            error = self._error("cannot connect to redis at %s: %s"
                                % (self._where, os_reason(exc)),
                                "connect")
        if error is not None:
            raise error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return sock

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
        self._send(b"".join(encode_command(c) for c in commands), "sending to")
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
                raise self._io_error(ssl_module().SSLZeroReturnError(), "reading from")
            hint = "" if ep.tls else " (if that port expects TLS, use rediss:// / tls)"
            raise self._broke("redis at %s closed the connection%s" % (self._where, hint),
                              "connect")
        self._buf += chunk

    def _protocol(self, problem: str) -> RedisError:
        return self._broke("bad reply from redis at %s: %s" % (self._where, problem), "protocol")

    def _take_item(self) -> Any:
        """Consume one complete item (scalar, or an array header) from the buffer."""
        try:
            value, self._pos = take_item(self._buf, self._pos, self._secrets)
            return value
        except BadReply as exc:
            problem = str(exc)
        raise self._protocol(problem)       # outside the except: no chained context

    def _read_reply(self, deadline: Optional[float] = None, soft: bool = False) -> Any:
        """Read one whole reply.  Resumable: partial input and half-built arrays stay in
        ``self._buf`` / ``self._stack`` when a soft timeout interrupts."""
        while True:
            try:
                value = self._take_item()
            except NeedMore as need:
                missing = need.size      # type: Optional[int]
            else:
                missing = None
            if missing is not None:      # outside the except: no chained context
                self._fill(missing, deadline, soft)
                continue
            while True:
                if isinstance(value, ArrayStart):
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
        payload = b"".join(encode_command(c) for c in commands)
        self._send(payload, "sending to")
        return [self._read_reply() for _ in commands]

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

    def _state(self) -> str:
        return "broken" if self._broken else "closed" if self._sock is None else "open"

    def __repr__(self) -> str:
        return "<Connection to redis at %s, %s>" % (self._where, self._state())
