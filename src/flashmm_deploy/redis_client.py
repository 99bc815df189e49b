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

import ipaddress
import math
import re
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import quote, unquote, unquote_to_bytes

__all__ = ["Connection", "Endpoint", "KINDS", "MASK", "RedisError", "ReplyError", "mask_url"]

KINDS = ("input", "connect", "tls", "auth", "select", "protocol", "reply")
MASK = "***"
MAX_LINE = 1 << 20     # longest status/error/integer/header line accepted (1 MiB)
_RECV = 1 << 16

# redis-py query parameters that tune its pool or client and mean nothing to a single blocking
# connection: accepted and ignored, so an application's REDIS_URL parses here too.
_IGNORED_PARAMS = frozenset({
    "client_name", "decode_responses", "encoding", "encoding_errors", "health_check_interval",
    "max_connections", "protocol", "readonly", "retry_on_timeout", "single_connection_client",
    "socket_connect_timeout", "socket_keepalive",
})
_TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
               "ssl_check_hostname", "server_name")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_HOST_RE = re.compile(r"[^\s\x00-\x1f\x7f/?#@\[\]\\]+\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}\Z")
_INT_RE = re.compile(rb"-?[0-9]+\Z")
_QUERY_PASSWORD_RE = re.compile(r"([?&;][^=&;#?]*password=)[^&;#]*", re.IGNORECASE)


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


class _Bad(Exception):
    """Internal: one reason a URL candidate does not parse (text never holds a URL part that
    could be the password)."""


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


def _pct_decode(text: str) -> str:
    """Percent-decode ``text`` when the result is UTF-8, else keep it as written (a password
    such as ``100%`` or ``a%zz`` was not encoded)."""
    if "%" not in text:
        return text
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return text


def _split_hostport(text: str) -> Tuple[str, Optional[int]]:
    """``host[:port]`` or ``[ipv6][:port]`` -> (host, port or None).  Raises _Bad."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Bad("unclosed '[' around the IPv6 host")
        host, rest = unquote(text[1:end]), text[end + 1:]     # a zone is written %25eth0
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise _Bad("bad IPv6 address in brackets") from None
        if rest and not rest.startswith(":"):
            raise _Bad("unexpected text after the bracketed IPv6 host")
        port_text = rest[1:] if rest else None
    else:
        host, colon, after = text.partition(":")
        if ":" in after:
            raise _Bad("an IPv6 host must be written in brackets, e.g. [::1]")
        port_text = after if colon else None
        if not host:
            raise _Bad("missing host")
        if not _HOST_RE.match(host):
            raise _Bad("bad host name")
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise _Bad("bad port (expected a number from 1 to 65535)")
    return host, int(port_text)


def _is_hostport(text: str) -> bool:
    try:
        _split_hostport(text)
    except _Bad:
        return False
    return True


def _authority_end(text: str) -> int:
    """Index of the first ``/``, ``?`` or ``#`` in ``text`` (its length when there is none)."""
    ends = [i for i in (text.find(c) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(text)


def _parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Bad("bad %s (expected true or false)" % name)


def _parse_timeout(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _Bad("bad %s (expected a number of seconds)" % name) from None
    if not math.isfinite(number) or number <= 0:
        raise _Bad("bad %s (expected a positive number of seconds)" % name)
    return number


def _parse_tail(scheme: str, text: str) -> Dict[str, Any]:
    """Endpoint fields from ``host[:port][/db][?query][#fragment]``.  Raises _Bad."""
    cut = _authority_end(text)
    host, port = _split_hostport(text[:cut])
    tail = text[cut:].split("#", 1)[0]          # a fragment means nothing to Redis
    path, _, query = tail.partition("?")
    out = {"host": host, "tls": scheme == "rediss"}  # type: Dict[str, Any]
    if port is not None:
        out["port"] = port
    if path not in ("", "/"):
        db_text = path[1:]
        if not (db_text.isascii() and db_text.isdigit()):
            raise _Bad("bad db in the path (expected /<number>)")
        out["db"] = int(db_text)
    seen = set()
    timeout_name = None
    for item in query.split("&") if query else ():
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = unquote(name)
        value = unquote(value)
        if not eq:
            raise _Bad("query parameter %r has no value" % name)
        if name in seen:
            raise _Bad("query parameter %r given twice" % name)
        seen.add(name)
        if name in _TLS_PARAMS and scheme != "rediss":
            raise _Bad("TLS parameter %r in a redis:// URL (use rediss://)" % name)
        if name in ("password", "username"):
            raise _Bad("put the %s in the userinfo (redis://user:password@host), not in a "
                       "query parameter" % name)
        if name == "ssl_ca_certs":
            out["ca_file"] = value or None
        elif name == "ssl_certfile":
            out["cert_file"] = value or None
        elif name == "ssl_keyfile":
            out["key_file"] = value or None
        elif name == "server_name":
            out["server_name"] = value or None
        elif name == "ssl_cert_reqs":
            low = value.strip().lower()
            if low in ("none", "cert_none"):
                out["verify"] = False
            elif low in ("required", "cert_required"):
                out["verify"] = True
            else:
                raise _Bad("bad ssl_cert_reqs (expected none or required)")
        elif name == "ssl_check_hostname":
            out["check_hostname"] = _parse_bool(name, value)
        elif name in ("timeout", "socket_timeout"):
            if timeout_name is not None:
                raise _Bad("both %s and %s given" % (timeout_name, name))
            timeout_name = name
            out["timeout"] = _parse_timeout(name, value)
        elif name == "db":
            if not (value.isascii() and value.isdigit()):
                raise _Bad("bad db query parameter (expected a number)")
            if "db" in out and out["db"] != int(value):
                raise _Bad("db given both in the path and as a query parameter, differently")
            out["db"] = int(value)
        elif name not in _IGNORED_PARAMS:
            raise _Bad("unknown query parameter %r" % name)
    return out


def _userinfo_fields(userinfo: str) -> Dict[str, Any]:
    user, colon, password = userinfo.partition(":")
    return {"username": _pct_decode(user) or None,
            "password": (_pct_decode(password) or None) if colon else None}


def _redis_split_candidates(rest: str) -> List[Optional[int]]:
    """Where the userinfo may end in ``rest`` (text after ``://``): the last ``@`` (the rule),
    then, only for the case where the later ``@``s sit in a query value (a certificate path),
    each earlier ``@`` and None (no userinfo)."""
    ats = [i for i in range(len(rest) - 1, -1, -1) if rest[i] == "@"]
    out = ats[:1]        # type: List[Optional[int]]
    for cut in ats[1:] + [None]:
        tail = rest if cut is None else rest[cut + 1:]
        after_host = tail[_authority_end(tail):]
        query = after_host.split("#", 1)[0].partition("?")[2]
        if after_host.count("@") == query.count("@"):
            out.append(cut)
    return out


# --------------------------------------------------------------------------------------------
# Endpoint


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one Redis database.  Validated on construction
    (``RedisError(kind="input")``); the password is never part of its repr."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)   # never in repr
    tls: bool = False
    ca_file: Optional[str] = None      # CA bundle to verify the server; None = system defaults
    cert_file: Optional[str] = None    # client certificate (mutual TLS)
    key_file: Optional[str] = None
    verify: bool = True                # verify the server certificate and host name
    server_name: Optional[str] = None  # SNI / name to verify when it differs from host
    timeout: float = 5.0
    # Extension: verify the certificate but not the name in it (redis-py's
    # ssl_check_hostname=false); prefer server_name, which keeps the name check.
    check_hostname: bool = True

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
        """Parse ``redis://`` / ``rediss://`` URLs (see the module docstring).  ``overrides``
        replace fields after parsing; an override that is None is ignored, so unset module
        options do not clear what the URL says.  Raises ``RedisError(kind="input")`` naming
        the problem, never the password."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise RedisError("unknown Endpoint option(s): %s" % ", ".join(unknown), "input")
        given = {k: v for k, v in overrides.items() if v is not None}
        if not isinstance(url, str):
            raise RedisError("a redis URL must be a string", "input")
        scheme, sep, rest = url.strip().partition("://")
        if not sep:
            raise RedisError("not a redis URL (expected redis://[[user]:password@]host[:port]"
                             "[/db] or rediss://...)", "input")
        if scheme.lower() not in ("redis", "rediss"):
            shown = " %r" % scheme if _SCHEME_RE.match(scheme) else ""
            raise RedisError("bad scheme%s in a redis URL (expected redis:// or rediss://)"
                             % shown, "input")
        scheme = scheme.lower()
        # Try the split at the last '@' first (the rule); an earlier '@' or none at all only
        # when that fails and every later '@' sits in the query (an unencoded file path).
        first_problem = None
        secrets = []
        for cut in _redis_split_candidates(rest):
            userinfo = rest[:cut] if cut is not None else None
            if userinfo is not None:
                secrets.append(userinfo.partition(":")[2])
            try:
                values = _parse_tail(scheme, rest if cut is None else rest[cut + 1:])
                if userinfo is not None:
                    values.update(_userinfo_fields(userinfo))
                values.update(given)
                return cls(**values)
            except (_Bad, RedisError) as exc:
                if first_problem is None:
                    first_problem = str(exc)
        secrets += [_pct_decode(s) for s in secrets]
        if given.get("password"):
            secrets.append(given["password"])
        problem = _scrub(first_problem or "unparsable", secrets)
        if problem.startswith("bad redis endpoint: "):
            problem = problem[len("bad redis endpoint: "):]
        raise RedisError("bad redis URL: " + problem, "input")

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

    def url(self, *, reveal: bool = False) -> str:
        """The canonical URL (``from_url`` reads it back); the password shows as ``***``
        unless ``reveal``."""
        auth = ""
        if self.password is not None:
            auth = "%s:%s@" % (quote(self.username or "", safe=""),
                               quote(self.password, safe="") if reveal else MASK)
        params = []
        for name, value in (("ssl_ca_certs", self.ca_file), ("ssl_certfile", self.cert_file),
                            ("ssl_keyfile", self.key_file), ("server_name", self.server_name)):
            if value is not None:
                params.append("%s=%s" % (name, quote(value, safe="/")))
        if self.tls and not self.verify:
            params.append("ssl_cert_reqs=none")
        if self.tls and not self.check_hostname:
            params.append("ssl_check_hostname=false")
        if self.timeout != 5.0:
            params.append("timeout=%r" % float(self.timeout))
        return "%s://%s%s:%d/%d%s" % ("rediss" if self.tls else "redis", auth,
                                      self._host_text(in_url=True),
                                      self.port, self.db,
                                      "?" + "&".join(params) if params else "")


# --------------------------------------------------------------------------------------------
# mask_url


def _mask_query(tail: str) -> str:
    """``tail`` (what follows the host) with ``...password=VALUE`` query values masked."""
    query_at = tail.find("?")
    if query_at < 0:
        return tail
    return tail[:query_at] + _QUERY_PASSWORD_RE.sub(lambda m: m.group(1) + MASK,
                                                    tail[query_at:])


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    # Without a ':' the whole userinfo may be a token used as the user name: mask it all.
    return user + ":" + MASK if colon else MASK


def _userinfo_end(scheme: str, rest: str) -> Optional[int]:
    """Index of the '@' that ends the userinfo in ``rest`` (after ``://``), None when there is
    no userinfo; raises _Bad when it cannot tell."""
    if "@" not in rest:
        return None
    if scheme.lower() in ("redis", "rediss"):
        # The from_url rule (the last '@', or an earlier one when the later ones sit in a
        # query value), else the last '@' before a plausible host: mask rather than show.
        for cut in _redis_split_candidates(rest):
            try:
                _parse_tail(scheme.lower(), rest if cut is None else rest[cut + 1:])
                return cut
            except _Bad:
                continue
    else:
        authority = rest[:_authority_end(rest)]
        if not authority or ("@" not in authority and _is_hostport(authority)):
            return None          # e.g. https://example.com/@user, file:///a@b
    for cut in [i for i in range(len(rest) - 1, -1, -1) if rest[i] == "@"]:
        after = rest[cut + 1:]
        if _is_hostport(after[:_authority_end(after)]):
            return cut
    raise _Bad("no host after any '@'")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, however it is written (unencoded
    ``# / ? @`` included), plus the value of any ``...password=`` query parameter.  A URL
    without userinfo comes back unchanged; a userinfo without ``:`` (a bare token) is masked
    whole.  Never raises: what cannot be parsed has everything from ``://`` (or the start) to
    the last ``@`` masked."""
    try:
        if not isinstance(url, str):
            return MASK
        sep = url.find("://")
        if sep < 0:
            at = url.rfind("@")
            return url if at < 0 else MASK + url[at:]
        head, rest = url[:sep + 3], url[sep + 3:]
        try:
            cut = _userinfo_end(url[:sep], rest)
        except _Bad:
            return head + MASK + rest[rest.rfind("@"):]
        if cut is None:
            return head + _mask_query(rest)
        after = rest[cut + 1:]
        return head + _mask_userinfo(rest[:cut]) + "@" + _mask_query(after)
    except Exception:           # never raise, never leak
        return MASK


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


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    if reason:
        return reason
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the TLS connection"
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or ""))
    return text or exc.__class__.__name__


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
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
        closed = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError,
                                  ConnectionResetError, BrokenPipeError))
        if closed and ep.tls and self._in_setup:
            # Redis refuses a missing or unacceptable client certificate with an alert and a
            # close; which of the two the client sees first is a race, so a close says the same.
            hint = ("it may require a client certificate (set cert_file and key_file)"
                    if ep.cert_file is None else "it may have rejected the client certificate")
            return self._broke("redis at %s closed the TLS connection before answering (%s): %s"
                               % (self._where, _os_reason(exc), hint), "tls")
        if isinstance(exc, ssl.SSLError) and not closed:
            reason = _ssl_reason(exc)
            return self._broke("TLS error %s redis at %s: %s%s"
                               % (doing, self._where, reason, _tls_hint(reason)), "tls")
        reason = _os_reason(exc)
        if closed and not ep.tls and self._in_setup:
            reason += " (if that port expects TLS, use rediss:// / tls)"
        return self._broke("connection to redis at %s failed %s it: %s"
                           % (self._where, doing, reason), "connect")

    # ---- connecting --------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
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

    def _handshake(self, context: ssl.SSLContext, sock: socket.socket,
                   deadline: float) -> ssl.SSLSocket:
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
                raise self._io_error(ssl.SSLZeroReturnError(), "reading from")
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
