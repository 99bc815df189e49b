"""The backups' signatures: HMAC-SHA256 keyed from the environment's vault password (why:
``backup_store``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from flashmm_deploy.inventory.vault import VaultError, VaultKeys
from flashmm_deploy.backup.layout import (_KDF_SALT, _SIGNED_AS, FORMAT, KDF_ITERATIONS,
                                          LEGACY_FORMAT, SIGNATURE)


# ---- signatures -----------------------------------------------------------------------------

def _secret_bytes(secret: Any) -> bytes:
    raw = secret.bytes
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


@lru_cache(maxsize=16)           # a restore verifies once, then once per host
def _derive(password: bytes, environment: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, _KDF_SALT + environment.encode("utf-8"),
                               KDF_ITERATIONS, dklen=32)


def signing_key(keys: VaultKeys, environment: str, where: str) -> bytes:
    """The key that signs the backups of ``environment``: derived from the password of the
    environment's vault id (the one its ``secrets.vault`` files are encrypted with)."""
    secret = keys.secret_for(environment)
    if secret is None:
        raise VaultError(f"{where}: no vault password for vault id {environment!r} to sign the "
                         f"backup with ({keys.describe()}); give --vault-id "
                         f"{environment}@FILE or {environment}@prompt")
    return _derive(_secret_bytes(secret), environment)


def _checking_keys(keys: VaultKeys, environment: str) -> list[bytes]:
    """Every key a signature may have been made with: the environment's vault id first, then
    the other passwords given (as ansible-vault tries every password to decrypt)."""
    try:
        given = keys.secrets()
    except VaultError:
        return []
    ordered = sorted(given, key=lambda item: item[0] != environment)
    return [_derive(_secret_bytes(secret), environment) for _, secret in ordered]


def _message(kind: str, doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != SIGNATURE}
    return _SIGNED_AS[kind] + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=True).encode("ascii")


def sign(kind: str, doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``doc`` (an index or a manifest) with its signature."""
    mac = hmac.new(key, _message(kind, doc), hashlib.sha256).hexdigest()
    return dict(doc, **{SIGNATURE: {"alg": "hmac-sha256", "kdf": "pbkdf2-sha256",
                                    "iterations": KDF_ITERATIONS, "value": mac}})


def _signature_problem(kind: str, doc: dict[str, Any], where: str, keys: list[bytes],
                       environment: str, accept_unsigned: bool) -> str | None:
    sig = doc.get(SIGNATURE)
    if sig is None and doc.get("format") == LEGACY_FORMAT:
        if accept_unsigned:
            return None
        return (f"{where}: not signed (a backup taken before backups were signed): nothing "
                "tells it from a forgery.  Take a new backup; to use this one anyway, after "
                "checking where it came from, give --accept-unsigned (flashmm-config) or "
                "-e flashmm_restore_accept_unsigned=true (playbooks/restore.yml)")
    if doc.get("format") != FORMAT:
        return f"{where}: format {doc.get('format')!r}, expected {FORMAT} (or {LEGACY_FORMAT})"
    value = sig.get("value") if isinstance(sig, dict) else None
    if not isinstance(value, str):
        return f"{where}: no signature (expected one: changed without the vault password?)"
    if not keys:
        return (f"{where}: signed, and no vault password is given to check it with (give "
                f"--vault-id {environment}@FILE or {environment}@prompt)")
    message = _message(kind, doc)
    if any(hmac.compare_digest(hmac.new(k, message, hashlib.sha256).hexdigest(), value)
           for k in keys):
        return None
    return (f"{where}: signature does not match: changed since the backup was taken (an edit "
            f"without the vault password), or signed with another password for vault id "
            f"{environment!r}")
