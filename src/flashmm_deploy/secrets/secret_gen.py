"""Create and complete an environment's vault (``group_vars/all/vault.yml``, ansible-vault,
vault id = the environment's name) with the secrets the toolkit can mint itself.

Third-party credentials (Cambrian, Twitter, Grafana, a webhook) cannot be generated: ``init``
writes a placeholder for each, and both commands name the ones still missing.  Generated values
use URL-safe alphabets, so they survive every .env dialect; the encryption key is a Fernet key.
Every other variable and comment of the file is kept; a symlinked vault file is written through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flashmm_deploy.secrets import secret_generation
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.inventory.inventory import Inventory
from flashmm_deploy.core.paths import display_path
from flashmm_deploy.config.layers import resolve
from flashmm_deploy.config.secret_generators import GENERATORS
from flashmm_deploy.config.validate import is_placeholder, needed_secrets
from flashmm_deploy.inventory.vault import VaultFile, VaultKeys, edit_lock

PLACEHOLDER = "__PLACEHOLDER__"
HEADER = ("# Secrets of the {env} environment (ansible-vault, vault id {env}).\n"
          "# Edit: ansible-vault edit --vault-id {env}@... {path}\n"
          "# Generatable secrets: flashmm-config secrets generate; third-party ones by hand.\n")


class SecretsError(FlashmmError):
    pass


@dataclass
class VaultChange:
    path: Path
    environment: str
    generated: list[str] = field(default_factory=list)      # names only, never values
    missing: list[str] = field(default_factory=list)         # third-party, still to be set
    encrypted_now: bool = False                              # was plain text before
    created: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.generated or self.encrypted_now or self.created)

    def summary(self) -> str:
        done = []
        if self.created:
            done.append("created")
        if self.generated:
            done.append(f"generated {', '.join(self.generated)}")
        if self.encrypted_now:
            done.append(f"encrypted it (vault id {self.environment})")
        line = f"{display_path(self.path)}: " + ("; ".join(done) or "nothing to generate")
        if self.missing:
            line += (f"; still to set by hand (ansible-vault edit): {', '.join(self.missing)}")
        return line


def replace_warning(inv: Inventory, path: Path) -> str:
    """What ``secrets init --replace`` of an existing vault does to the hosts deployed from it
    (said before it is done, on stderr)."""
    return (f"warning: {display_path(path)} exists; --replace starts it over: every secret "
            "new, the Redis password and the encryption key included.\n"
            "  Hosts deployed from this vault still run the old Redis password, and their "
            "records (flashmm:secure:*) are encrypted with the old encryption key: the next "
            "deploy will be refused (a running Redis does not take a new password from a "
            "deploy), and the old key that reads those records would be gone from the vault.\n"
            "  To change the secrets of a live environment, rotate them instead: "
            f"ansible-playbook playbooks/rotate_secrets.yml -i {display_path(inv.path)} "
            "-e rotate=all (hosts stay up, records are re-encrypted).\n"
            "  --replace is for an environment no host runs yet (or whose hosts and Redis data "
            "are thrown away).")


def environment_of(inv: Inventory) -> str:
    """The one ``app.environment`` of the inventory's hosts: the vault id of its vault."""
    envs = {resolve(inv.host_layers(h).layers).values.get("app.environment") for h in inv.hosts}
    envs.discard(None)
    if len(envs) != 1:
        raise SecretsError(f"{display_path(inv.path)}: its hosts name "
                           f"{'no' if not envs else 'several'} environments "
                           f"({', '.join(sorted(map(str, envs))) or 'app.environment unset'}); "
                           "one vault serves one environment")
    return str(envs.pop())


def needed_secret_names(inv: Inventory) -> set[str]:
    """``flashmm_secrets`` keys some host of the inventory needs."""
    needed: set[str] = set()
    for host in inv.hosts:
        values = resolve(inv.host_layers(host).layers).values
        needed |= {path.split(".", 1)[1] for path in needed_secrets(values)}
    return needed


def _absent(current, name: str) -> bool:
    value = current.get(name)
    return value is None or is_placeholder(value) or (isinstance(value, str) and not value.strip())


def update_vault(inv: Inventory, keys: VaultKeys, *, create: bool = False,
                 replace: bool = False, regenerate: frozenset[str] = frozenset()) -> VaultChange:
    """See ``_update_vault``; one run at a time per vault (``vault.edit_lock``)."""
    if not inv.hosts:
        raise SecretsError(f"{display_path(inv.hosts_file)}: the inventory has no hosts")
    path = inv.path / "group_vars" / "all" / "vault.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with edit_lock(path):
        return _update_vault(inv, keys, path, create, replace, regenerate)


def _update_vault(inv: Inventory, keys: VaultKeys, path: Path, create: bool, replace: bool,
                  regenerate: frozenset[str]) -> VaultChange:
    """Add every needed, generatable secret missing from the vault (kept values stay, unless
    named in ``regenerate``) and encrypt it with the environment's vault id.

    ``create``: the vault must not exist yet (``replace`` starts it over).  Third-party secrets
    get a placeholder in a new vault.  Nothing is written when nothing changes."""
    env = environment_of(inv)
    where = display_path(path)
    exists = path.exists() or path.is_symlink()
    if create and exists and not replace:
        raise SecretsError(f"{where}: exists; `secrets generate` completes it, "
                           "`secrets init --replace` starts it over (every secret new: only for "
                           "an environment no host runs yet; a live one changes its secrets "
                           "with playbooks/rotate_secrets.yml)")
    vf = VaultFile.open(path, keys, where, read=not replace)
    if vf.encrypted and vf.vault_id not in (None, env):
        raise SecretsError(f"{where}: encrypted for vault id {vf.vault_id!r}, but its hosts "
                           f"are {env!r}: re-encrypt it with --encrypt-vault-id {env}")
    change = VaultChange(path, env, created=vf.doc is None,
                         encrypted_now=vf.doc is not None and not vf.encrypted)
    current = vf.secrets_map()
    needed = needed_secret_names(inv)
    for name in sorted(needed & GENERATORS.keys()):
        if _absent(current, name) or name in regenerate:
            current[name] = GENERATORS[name]()
            change.generated.append(name)
    for name in sorted(needed - GENERATORS.keys()):
        if _absent(current, name):
            change.missing.append(name)
            if change.created:
                current[name] = PLACEHOLDER
    if change.changed:
        if change.generated:        # hosts running the previous values refuse older vaults
            secret_generation.bump(vf.doc, f"secrets: generated {', '.join(change.generated)}")
        vf.save(keys, env, HEADER.format(env=env, path=where) if change.created else "")
    return change
