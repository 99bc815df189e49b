"""Build `local`-style inventories of any size, for benchmarks and integration tests: N hosts on
this machine, each with its own root under a sandbox directory.

Two shapes:

* without a stack (``stack_ports=None``): every host seeds its own database on one shared
  redis-server at ``redis_port`` (no password), ``flashmm_compose_up: false``;
* with a stack: every host runs its own compose project (``<project_prefix>-<host>``) with the
  API and Redis published on 127.0.0.1 at ``stack_ports`` (api, redis) plus the host's index.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from flashmm_deploy.inventory.inventory import Inventory
from flashmm_deploy.secrets.secret_gen import update_vault
from flashmm_deploy.inventory.vault import VaultKeys


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


def make_local_inventory(template: Path, dest: Path, *, hosts: int, redis_port: int = 6379,
                         first_db: int = 1, stack_ports: tuple[int, int] | None = None,
                         project_prefix: str = "flashmm-test", sandbox: Path | None = None,
                         with_secrets: bool = True) -> Path:
    """Copy the ``template`` local inventory to ``dest`` with ``hosts`` hosts (sandbox-NN).
    With ``sandbox``, each host's ``flashmm_root`` is ``<sandbox>/<host>``, written literally
    (else the template's, which follows $FLASHMM_SANDBOX)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("host_vars", "vault.yml"))
    names = [f"sandbox-{i:02d}" for i in range(1, hosts + 1)]

    def hosts_yml(inv):
        group = inv["all"]["children"]["flashmm"]
        if stack_ports is None:
            group["hosts"] = {name: {} for name in names}
            group["vars"]["flashmm_compose_up"] = False
            group["vars"]["flashmm_runtime_redis_port"] = redis_port
            group["vars"]["flashmm_redis_databases"] = max(16, first_db + hosts)
        else:
            api, redis = stack_ports
            group["hosts"] = {name: {"flashmm_stack_api_port": api + i,
                                     "flashmm_stack_redis_port": redis + i}
                              for i, name in enumerate(names)}
        # literal values: a generated inventory has no need of per-host templates
        for name in names:
            group["hosts"][name]["flashmm_stack_project_name"] = f"{project_prefix}-{name}"
        del group["vars"]["flashmm_stack_project_name"]
        if sandbox is not None:
            del group["vars"]["flashmm_root"]
            for name in names:
                group["hosts"][name]["flashmm_root"] = str(Path(sandbox).resolve() / name)

    def env_layer(env):
        if stack_ports is None:
            env["flashmm_config"]["storage"]["redis"].update(
                host="127.0.0.1", port=redis_port, password_required=False)

    _edit(dest / "hosts.yml", hosts_yml)
    _edit(dest / "group_vars" / "all" / "flashmm.yml", env_layer)
    if stack_ports is None:
        (dest / "host_vars").mkdir()
        for i, name in enumerate(names):
            (dest / "host_vars" / f"{name}.yml").write_text("---\n" + yaml.safe_dump(
                {"flashmm_host_config": {"storage": {"redis": {"db": first_db + i}}}}))
    if with_secrets:
        update_vault(Inventory(dest), VaultKeys.given())    # encrypted: vault id local
    return dest
