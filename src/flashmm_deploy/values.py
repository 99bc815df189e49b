"""Plain Python values of what Ansible hands plugins.  Light on purpose (standard library
only): the per-host action plugins import it in every forked worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

def plain(value: Any) -> Any:
    """Deep copy into plain Python types.  Ansible 2.19 hands plugins tagged subclasses of str,
    dict, int...; pydantic strict mode and json.dumps must see the plain types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def native(value: Any) -> Any:
    """Like ``plain``, for variables read raw from Ansible: an inline-vaulted value becomes its
    plaintext (decrypted, never templated)."""
    if type(value).__name__ == "EncryptedString":
        return str(value)
    if isinstance(value, Mapping):
        return {native(k): native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [native(v) for v in value]
    return plain(value)
