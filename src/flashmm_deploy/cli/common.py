"""What every ``flashmm-config`` command module shares: exit codes, the usage error, the run's
vault passwords, the inventory and host selection.  A leaf: ``cli.app`` and the subcommand
modules (``cli.backup``, ``cli.runtime``, ``cli.drift``) import it, and it imports none of them."""

from __future__ import annotations

from flashmm_deploy.inventory import host_validation
from flashmm_deploy.inventory.vault import VaultKeys

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def vault_keys(args) -> VaultKeys:
    """The vault passwords of this run: --vault-id and --vault-password-file (repeatable, as
    for ansible-playbook) after ansible.cfg's vault_identity_list, read on first use."""
    if getattr(args, "_vault_keys", None) is None:
        args._vault_keys = VaultKeys.given(args.vault_id, args.vault_password_file)
    return args._vault_keys


def load_inventory(args, path: str):
    return host_validation.load_inventory(path, vault_keys(args))


def select_hosts(inv, host: str | None) -> list[str]:
    if host is None:
        if not inv.hosts:
            raise UsageError(f"{inv.hosts_file}: the inventory has no hosts")
        return inv.hosts
    if host not in inv.hosts:
        raise UsageError(f"host {host!r} is not in {inv.path} (hosts: {', '.join(inv.hosts)})")
    return [host]
