"""Re-encrypt the app's encrypted records under a new key: the encryption-key rotation's
migration, run on the host against its Redis.

The contract (``standin/secure_records.py`` documents the app's side): a record is a Redis
string at ``flashmm:secure:<name>`` holding a Fernet token.  During a rotation the app holds
``ENCRYPTION_KEY`` (new) and ``OLD_ENCRYPTION_KEY`` and decrypts with both.  This moves every
record still readable only with the old key to the new one (``MultiFernet.rotate``), in
batches: one SCAN page, one read of its values, one Lua call that replaces each value only if
it is still the one read (a record the app rewrote meanwhile is left for the next pass) and
keeps its TTL.  Killed halfway, a rerun moves what is left; a record already under the new key
is never rewritten, so a finished migration reruns with nothing changed.

Needs ``cryptography`` on the host (Debian: python3-cryptography); otherwise the standard
library.  Shipped to targets as ``module_utils/flashmm_record_keys.py``.
"""

from __future__ import annotations

import time
from typing import Optional

try:
    from flashmm_deploy.redis.client import Connection, Endpoint, RedisError, ReplyError
    from flashmm_deploy.redis.keys import SECURE_MATCH
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, Endpoint, RedisError, ReplyError)
    from ansible.module_utils.flashmm_redis_keys import SECURE_MATCH  # type: ignore[no-redef]
# KEYS: records; ARGV: 2n values (expected, replacement): compare-and-set, TTL kept.
_CAS = """
local moved = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[2 * i - 1] then
    redis.call('SET', key, ARGV[2 * i], 'KEEPTTL')
    moved = moved + 1
  end
end
return moved
"""


class RecordKeyError(Exception):
    def __init__(self, message: str, kind: str = "records"):
        super().__init__(message)
        self.kind = kind


def _fernets(new_key: str, old_key: Optional[str]):
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise RecordKeyError("the host's Python has no cryptography package (Debian: apt "
                             "install python3-cryptography)", "input") from None
    try:
        new = Fernet(new_key.encode("ascii"))
        old = Fernet(old_key.encode("ascii")) if old_key else None
    except (ValueError, TypeError, UnicodeEncodeError):
        raise RecordKeyError("an encryption key is not a Fernet key (32 url-safe base64 "
                             "bytes); value not shown", "input") from None
    return new, old, MultiFernet([new] + ([old] if old else []))


def migrate(endpoint: "Endpoint", new_key: str, old_key: Optional[str], *,
            batch: int = 500, check: bool = False, max_records: Optional[int] = None) -> dict:
    """Counts: ``records`` scanned, ``moved`` (or would move), ``current`` (already under the
    new key), ``old_only`` (still readable only with the old key afterwards: 0 after a full
    run), ``unreadable`` (neither key, or not a string), ``seconds``.  ``max_records`` stops
    after that many moves (a partial run, as a killed one would leave)."""
    from cryptography.fernet import InvalidToken

    new, old, both = _fernets(new_key, old_key)
    counts = dict(records=0, moved=0, current=0, old_only=0, unreadable=0)
    started = time.monotonic()
    try:
        with Connection(endpoint) as conn:
            cursor = b"0"
            while True:
                cursor, keys = conn.call("SCAN", cursor, "MATCH", SECURE_MATCH, "COUNT", batch)
                if keys:
                    values = conn.pipeline(*[("GET", k) for k in keys])
                    plan = []
                    for key, value in zip(keys, values):
                        counts["records"] += 1
                        if not isinstance(value, bytes):   # another type, or gone
                            counts["unreadable"] += 1
                            continue
                        try:
                            new.decrypt(value)
                            counts["current"] += 1
                            continue
                        except InvalidToken:
                            pass
                        if old is None:
                            counts["unreadable"] += 1
                            continue
                        try:
                            old.decrypt(value)
                        except InvalidToken:
                            counts["unreadable"] += 1
                            continue
                        if check or (max_records is not None
                                     and counts["moved"] + len(plan) >= max_records):
                            counts["old_only"] += 1
                            continue
                        plan.append((key, value, both.rotate(value)))
                    if plan:
                        argv = [v for _, expected, new_token in plan
                                for v in (expected, new_token)]
                        moved = conn.call("EVAL", _CAS, len(plan), *[k for k, _, _ in plan],
                                          *argv)
                        counts["moved"] += int(moved)
                        counts["old_only"] += len(plan) - int(moved)   # rewritten meanwhile
                if cursor in (b"0", 0, "0"):
                    break
    except RedisError as exc:
        raise RecordKeyError(str(exc), exc.kind) from None
    except ReplyError as exc:
        raise RecordKeyError("redis %s refused the migration: %s"
                             % (endpoint.label(), str(exc).split("\n")[0])) from None
    if check:
        counts["moved"], counts["old_only"] = counts["old_only"], counts["old_only"]
    counts["seconds"] = round(time.monotonic() - started, 3)
    return counts
