"""The runtime layer as it is in Redis: ``flashmm:config:<section>:<key>`` JSON values.

``read_layer`` turns a live Redis database into the ``runtime`` LayerInput, so ``validate`` and
``explain`` show what the application really runs with (an operator's override wins over every
file).  Keys are found with SCAN, never KEYS; the URL's password never reaches a message.  A
value under a path the schema calls secret, or under an unknown path (which may be a
misplaced secret), is never shown.
"""

from __future__ import annotations

import json

from flashmm_deploy.core.errors import FlashmmError, Issue, Origin
from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.redis.client import Connection, RedisError
from flashmm_deploy.redis_ext.url import endpoint_from_url, mask_url
from flashmm_deploy.config.schema import FIELDS
from flashmm_deploy.redis.keys import CONFIG_PREFIX, UPDATES_CHANNEL

SCAN_COUNT = 500
MAX_KEYS = 10000        # a runtime layer has four keys: a prefix holding more is a mistake


def _shown(path: str, raw: str) -> str:
    spec = FIELDS.get(path)
    if spec is None or spec.secret:
        return "value hidden"
    return f"got {raw!r}"


def read_layer(url: str) -> tuple[LayerInput, list[Issue]]:
    """The runtime layer of the Redis database at ``url`` (redis[s]://[user:pass@]host:port/db)."""
    source = f"redis {mask_url(url)}"
    try:
        endpoint = endpoint_from_url(url)
        with Connection(endpoint) as conn:
            keys, cursor = [], b"0"
            while True:
                cursor, batch = conn.call("SCAN", cursor, "MATCH", CONFIG_PREFIX + "*",
                                          "COUNT", SCAN_COUNT)
                keys += [k.decode("utf-8", "replace") for k in batch]
                if cursor in (b"0", "0") or len(keys) > MAX_KEYS:
                    break
            keys = sorted(k for k in set(keys) if k != UPDATES_CHANNEL)[:MAX_KEYS]
            values = conn.pipeline(*[("GET", k) for k in keys]) if keys else []
    except RedisError as exc:
        raise FlashmmError(f"cannot read the runtime layer from {mask_url(url)}: {exc}") from None
    data, issues = {}, []
    for key, raw in zip(keys, values):
        path = key.removeprefix(CONFIG_PREFIX).replace(":", ".")
        if raw is None or not isinstance(raw, bytes):     # deleted since SCAN, or not a string
            if raw is not None:
                issues.append(Issue(path, "runtime key is not a string value",
                                    Origin("runtime", source)))
            continue
        text = raw.decode("utf-8", "replace")
        try:
            data[key] = json.loads(text)
        except ValueError:
            issues.append(Issue(path, f"runtime value is not JSON ({_shown(path, text)})",
                                Origin("runtime", source)))
    return LayerInput("runtime", source, data), issues
