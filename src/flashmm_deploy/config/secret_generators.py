"""The secrets the toolkit mints itself, and how: name (a ``flashmm_secrets`` key) -> a function
returning a new value.  URL-safe alphabets, so every value survives every .env dialect; the
encryption key is a Fernet key (32 random bytes, URL-safe base64, as
``cryptography.fernet.Fernet.generate_key`` makes it).

A leaf (standard library only): validation asks which secrets are generatable without importing
the vault code that generates them (``secret_gen``, ``rotation``).
"""

from __future__ import annotations

import base64
import secrets as _random


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(_random.token_bytes(32)).decode("ascii")


GENERATORS = {
    "secret_key": lambda: _random.token_urlsafe(48),
    "api_auth_token": lambda: _random.token_urlsafe(32),
    "encryption_key": _fernet_key,
    "redis_password": lambda: _random.token_urlsafe(32),
    "redis_deploy_password": lambda: _random.token_urlsafe(32),
    "influxdb_token": lambda: _random.token_urlsafe(48),
    "influxdb_admin_password": lambda: _random.token_urlsafe(24),
}
