"""RESP2, the Redis wire protocol: commands encoded, reply items decoded from a buffer.

Standard library only, Python 3.8+, no relative imports: shipped to target hosts as
``module_utils/flashmm_redis_resp.py`` for ``redis_client.Connection``, which does the I/O.
Replies: simple string -> str, bulk string -> bytes, integer -> int, null -> None, an array
header -> ``ArrayStart`` (the connection assembles the array), an error -> ``ReplyError`` with
every secret masked.  Bulk strings may be any size, but no line (status, error, integer, length
header) may exceed ``MAX_LINE`` bytes: nothing is buffered without a known length.
"""

from __future__ import annotations

import re
from typing import Any, Tuple

try:
    from flashmm_deploy.redis.endpoint import RedisError, ReplyError, _scrub
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_endpoint import (  # type: ignore[no-redef]
        RedisError, ReplyError, _scrub)

MAX_LINE = 1 << 20     # longest status/error/integer/header line accepted (1 MiB)

_INT_RE = re.compile(rb"-?[0-9]+\Z")


class NeedMore(Exception):
    """The buffer holds no complete item yet (``size``: bytes still missing, or 0)."""

    def __init__(self, size: int = 0):
        super().__init__(size)
        self.size = size


class BadReply(Exception):
    """The bytes are not RESP2; str() says what is wrong (never the bytes themselves)."""


class ArrayStart(object):
    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count


def encode_command(args) -> bytes:
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


def _int(text: bytes, what: str) -> int:
    if not _INT_RE.match(text):
        raise BadReply("malformed %s" % what)
    return int(text)


def take_item(buf: bytearray, pos: int, secrets) -> Tuple[Any, int]:
    """One complete item (scalar, or an array header) at ``buf[pos:]`` and the position after
    it.  Raises ``NeedMore`` when it is not all there yet, ``BadReply`` when it is not RESP2."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > MAX_LINE:
            raise BadReply("a reply line longer than %d bytes" % MAX_LINE)
        raise NeedMore()
    if end - pos > MAX_LINE:
        raise BadReply("a reply line longer than %d bytes" % MAX_LINE)
    kind, body = buf[pos:pos + 1], bytes(buf[pos + 1:end])
    after = end + 2
    if kind == b"+":
        value = body.decode("utf-8", "replace")   # type: Any
    elif kind == b"-":
        value = ReplyError(_scrub(body.decode("utf-8", "replace"), secrets))
    elif kind == b":":
        value = _int(body, "integer reply")
    elif kind == b"$":
        size = _int(body, "bulk length")
        if size == -1:
            value = None
        elif size < 0:
            raise BadReply("negative bulk length")
        else:
            if len(buf) < after + size + 2:
                raise NeedMore(after + size + 2 - len(buf))
            if buf[after + size:after + size + 2] != b"\r\n":
                raise BadReply("bulk string longer than its length")
            value = bytes(buf[after:after + size])
            after += size + 2
    elif kind == b"*":
        count = _int(body, "array length")
        if count < -1:
            raise BadReply("negative array length")
        value = None if count == -1 else ArrayStart(count)
    elif not kind:
        raise BadReply("an empty line")
    else:
        raise BadReply("unexpected reply type %r (is it a Redis server?)" % bytes(kind))
    return value, after
