"""flashmm-config secrets generate: sandbox/development secrets, never for testnet/production."""

from __future__ import annotations

import yaml


def vault_of(inv):
    path = inv / "group_vars" / "all" / "vault.yml"
    return path, (yaml.safe_load(path.read_text())["flashmm_secrets"] if path.exists() else None)
