"""Encrypted records: the contract the encryption-key rotation relies on, and the counts
``GET /secure`` reports.

Contract:

* A record is a Redis string at ``flashmm:secure:<name>`` (any name) whose value is a Fernet
  token (``cryptography.fernet``: URL-safe base64 text) of the record's plaintext bytes.  No TTL
  is applied when decrypting.  The app only reads records; whoever writes one encrypts it under
  the current ``ENCRYPTION_KEY``.
* The app decrypts with ``MultiFernet([Fernet(ENCRYPTION_KEY)] + ([Fernet(OLD_ENCRYPTION_KEY)]
  if OLD_ENCRYPTION_KEY is set))``: the new key first, the old one only as a fallback.  Both
  come from the environment (``.env``); an empty variable is unset.
* Rotation: put the new key in ``ENCRYPTION_KEY`` and the previous one in
  ``OLD_ENCRYPTION_KEY``, restart the app (every record stays readable), re-encrypt each record
  under the new key (``MultiFernet.rotate`` with the same key list does exactly that), and drop
  ``OLD_ENCRYPTION_KEY`` only when ``/secure`` reports ``readable_with_old_key_only == 0`` and
  ``unreadable == 0``.
* ``GET /secure`` scans ``flashmm:secure:*`` (SCAN) and reports counts only, never a name or
  content: ``records`` (keys found), ``readable`` (the MultiFernet decrypts it),
  ``unreadable`` (``records - readable``: wrong key, not a token, not a string), and
  ``readable_with_old_key_only`` (a subset of ``readable``: the new key fails, the old one
  works), plus ``key_problem``: null, or why a key is unusable (``ENCRYPTION_KEY is not set``,
  ``... is not a valid Fernet key``; then nothing is readable with it).  Key values never
  appear anywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from flashmm_deploy.redis.client import ReplyError
from flashmm_deploy.redis.keys import SECURE_PREFIX
from flashmm_config.runtime_keys import scan_keys

NEW_KEY_ENV = "ENCRYPTION_KEY"
OLD_KEY_ENV = "OLD_ENCRYPTION_KEY"


def _fernet(environ: Mapping[str, str], name: str) -> tuple[Fernet | None, str | None]:
    """(Fernet or None, problem or None); the problem never holds the key."""
    raw = environ.get(name) or ""
    if not raw:
        return None, None
    try:
        return Fernet(raw.encode("utf-8")), None
    except (ValueError, TypeError):
        return None, "%s is not a valid Fernet key (32 url-safe base64-encoded bytes)" % name


class Keyring:
    """The record keys of this process, from its environment."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._new, new_problem = _fernet(environ, NEW_KEY_ENV)
        self._old, old_problem = _fernet(environ, OLD_KEY_ENV)
        if self._new is None and new_problem is None:
            new_problem = "%s is not set" % NEW_KEY_ENV
        problems = [p for p in (new_problem, old_problem) if p]
        self.problem = "; ".join(problems) or None
        self.multi = (MultiFernet([self._new] + ([self._old] if self._old else []))
                      if self._new is not None else None)

    def decrypt(self, token: bytes | str) -> bytes:
        """A record's plaintext (the contract's MultiFernet).  Raises InvalidToken, or
        LookupError when ENCRYPTION_KEY is unusable."""
        if self.multi is None:
            raise LookupError(self.problem)
        return self.multi.decrypt(token)

    def classify(self, token: Any) -> str:
        """``new`` (the new key reads it), ``old`` (only the old key does) or ``unreadable``.
        Same outcome as ``decrypt``, which tries the new key first, then the old one."""
        if self._new is None or not isinstance(token, (bytes, str)):
            return "unreadable"
        for name, key in (("new", self._new), ("old", self._old)):
            if key is None:
                continue
            try:
                key.decrypt(token)
                return name
            except (InvalidToken, ValueError, TypeError):
                continue
        return "unreadable"


def count_records(conn: Any, keyring: Keyring) -> dict[str, Any]:
    """The ``/secure`` body for the records behind ``conn`` (counts only)."""
    names = scan_keys(conn, SECURE_PREFIX + "*")
    replies = conn.pipeline(*[("GET", name) for name in names]) if names else []
    kinds = [("unreadable" if isinstance(raw, ReplyError) else keyring.classify(raw))
             for raw in replies if raw is not None]       # None: deleted since the SCAN
    readable = sum(1 for k in kinds if k != "unreadable")
    return {"records": len(kinds), "readable": readable, "unreadable": len(kinds) - readable,
            "readable_with_old_key_only": kinds.count("old"), "key_problem": keyring.problem}
