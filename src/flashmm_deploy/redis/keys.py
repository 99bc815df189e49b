"""The Redis key and channel names deploy, the app and the client library share, in one place.

* ``flashmm:config:<section>:<key>``  the runtime layer: JSON values of the runtime keys;
* ``flashmm:config:updates``          channel: the dotted name of each changed key;
* ``flashmm:meta:seeded``             hash: the value deploy last seeded for each key;
* ``flashmm:meta:version``            integer, bumped once per change of the runtime layer;
* ``flashmm:meta:updates``            channel: one JSON summary per change;
* ``flashmm:secure:<name>``           the app's encrypted records;
* ``flashmm:audit:runtime``           list: who set which runtime key (no value), newest first
                                      (not backed up: a restore must not rewind it).

Standard library only, no imports at all, Python 3.8+: shipped to target hosts as
``module_utils/flashmm_redis_keys.py``.  Lua scripts take the names through ``lua_locals``.
"""

from __future__ import annotations

CONFIG_PREFIX = "flashmm:config:"
META_PREFIX = "flashmm:meta:"
SECURE_PREFIX = "flashmm:secure:"
# Every key deploy owns (what a backup holds and a restore may write).
PREFIXES = (CONFIG_PREFIX, META_PREFIX, SECURE_PREFIX)
PUBLIC_PREFIXES = (CONFIG_PREFIX, META_PREFIX)        # the ones holding no secret
UPDATES_CHANNEL = CONFIG_PREFIX + "updates"
SEEDED_KEY = META_PREFIX + "seeded"
VERSION_KEY = META_PREFIX + "version"
SUMMARY_CHANNEL = META_PREFIX + "updates"
SECURE_MATCH = SECURE_PREFIX + "*"
AUDIT_RUNTIME_LIST = "flashmm:audit:runtime"


def config_key(dotted: str) -> str:
    """``trading.quote_frequency_hz`` -> ``flashmm:config:trading:quote_frequency_hz``."""
    return CONFIG_PREFIX + dotted.replace(".", ":")


def dotted_key(key: str) -> str:
    """``flashmm:config:trading:quote_frequency_hz`` -> ``trading.quote_frequency_hz`` (a key
    without the prefix: its colons become dots)."""
    return (key[len(CONFIG_PREFIX):] if key.startswith(CONFIG_PREFIX) else key).replace(":", ".")


def lua_locals(**names: str) -> str:
    """``local NAME = 'value'`` lines, one per keyword (in order), for a Lua script's head."""
    return "".join("local %s = '%s'\n" % item for item in names.items())
