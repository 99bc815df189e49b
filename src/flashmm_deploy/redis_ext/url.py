"""Redis URLs: ``redis://`` and ``rediss://`` parsed into an ``Endpoint`` and written back,
and the password of any URL masked.

Standard library only, like ``redis/client.py``.  Not shipped to target hosts: modules never
parse a URL, and every module call compiles the client from source; the controller (CLI,
runtime reader), the client library and the stand-in app import this file.

URL forms (``endpoint_from_url``): ``redis://[[username]:password@]host[:port][/db][?params]``
and ``rediss://`` (TLS).  The userinfo ends at the *last* ``@`` before the host, so a password
may hold ``# / ? @ : %`` and spaces unencoded; it is percent-decoded when that yields UTF-8 (so
a literal ``%`` followed by two hex digits must be written ``%25``).  An ``@`` inside a query
value should be percent-encoded (``%40``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote, unquote, unquote_to_bytes

from flashmm_deploy.redis.endpoint import (_ENDPOINT_FIELDS, _HOST_RE, MASK, Endpoint,
                                           RedisError, _scrub)

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
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}\Z")
_QUERY_PASSWORD_RE = re.compile(r"([?&;][^=&;#?]*password=)[^&;#]*", re.IGNORECASE)


class _Bad(Exception):
    """Internal: one reason a URL candidate does not parse (text never holds a URL part that
    could be the password)."""


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
        import ipaddress    # only bracketed hosts need it

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


def endpoint_from_url(url: str, **overrides: Any) -> Endpoint:
    """Parse ``redis://`` / ``rediss://`` URLs (see the module docstring).  ``overrides``
    replace fields after parsing; an override that is None is ignored, so unset module
    options do not clear what the URL says.  Raises ``RedisError(kind="input")`` naming
    the problem, never the password."""
    names = {name for name, _ in _ENDPOINT_FIELDS}
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
            return Endpoint(**values)
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


def endpoint_url(endpoint: Endpoint, *, reveal: bool = False) -> str:
    """The canonical URL (``endpoint_from_url`` reads it back); the password shows as ``***``
    unless ``reveal``."""
    auth = ""
    if endpoint.password is not None:
        auth = "%s:%s@" % (quote(endpoint.username or "", safe=""),
                           quote(endpoint.password, safe="") if reveal else MASK)
    params = []
    for name, value in (("ssl_ca_certs", endpoint.ca_file), ("ssl_certfile", endpoint.cert_file),
                        ("ssl_keyfile", endpoint.key_file), ("server_name", endpoint.server_name)):
        if value is not None:
            params.append("%s=%s" % (name, quote(value, safe="/")))
    if endpoint.tls and not endpoint.verify:
        params.append("ssl_cert_reqs=none")
    if endpoint.tls and not endpoint.check_hostname:
        params.append("ssl_check_hostname=false")
    if endpoint.timeout != 5.0:
        params.append("timeout=%r" % float(endpoint.timeout))
    return "%s://%s%s:%d/%d%s" % ("rediss" if endpoint.tls else "redis", auth,
                                  endpoint._host_text(in_url=True),
                                  endpoint.port, endpoint.db,
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
