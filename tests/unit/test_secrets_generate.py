"""flashmm-config secrets generate: sandbox/development secrets, never for testnet/production."""

from __future__ import annotations

from support import read_vault


def vault_of(inv):
    path = inv / "group_vars" / "all" / "vault.yml"
    return path, (read_vault(path)["flashmm_secrets"] if path.exists() else None)
