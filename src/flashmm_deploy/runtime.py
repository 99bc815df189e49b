"""The runtime layer as it is in Redis: ``flashmm:config:<section>:<key>`` JSON values.

``read_layer`` turns a live Redis database into the ``runtime`` LayerInput, so ``validate`` and
``explain`` can show what the application really runs with (an operator's override wins over
every file).  Keys are found with SCAN, never KEYS.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import redis

from .errors import FlashmmError, Issue, Origin
from .layers import LayerInput

PREFIX = "flashmm:config:"
BOOKKEEPING = {PREFIX + "seeded", PREFIX + "version"}   # written by the seed, not config


def public_url(url: str) -> str:
    """``url`` without its password, fit for messages and provenance."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def read_layer(url: str) -> tuple[LayerInput, list[Issue]]:
    """The runtime layer of the Redis database at ``url`` (redis://[user:pass@]host:port/db)."""
    source = f"redis {public_url(url)}"
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
        values = {key: client.get(key) for key in client.scan_iter(match=PREFIX + "*", count=500)
                  if key not in BOOKKEEPING}
    except (redis.RedisError, ValueError) as exc:
        raise FlashmmError(f"cannot read the runtime layer from {public_url(url)}: "
                           f"{type(exc).__name__}") from None
    data, issues = {}, []
    for key, raw in sorted(values.items()):
        if raw is None:            # deleted between SCAN and GET
            continue
        try:
            data[key] = json.loads(raw)
        except ValueError:
            issues.append(Issue(key.removeprefix(PREFIX).replace(":", "."),
                                f"runtime value is not JSON (got {raw!r})", Origin("runtime", source)))
    return LayerInput("runtime", source, data), issues
