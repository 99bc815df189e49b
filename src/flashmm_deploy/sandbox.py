"""Build `local`-style inventories of any size, for benchmarks and integration tests: N hosts on
this machine, each with its own root under a sandbox directory and its own Redis database."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .inventory import Inventory
from .secret_gen import generate_missing


def make_local_inventory(template: Path, dest: Path, *, hosts: int, redis_port: int,
                         first_db: int = 1, with_secrets: bool = True) -> Path:
    """Copy the ``template`` local inventory to ``dest`` with ``hosts`` hosts (sandbox-NN),
    Redis on 127.0.0.1:``redis_port``, host i on database ``first_db + i``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("host_vars", "vault.yml"))
    names = [f"sandbox-{i:02d}" for i in range(1, hosts + 1)]
    inv_path = dest / "hosts.yml"
    inv = yaml.safe_load(inv_path.read_text())
    inv["all"]["children"]["flashmm"]["hosts"] = {name: None for name in names}
    inv_path.write_text("---\n" + yaml.safe_dump(inv, sort_keys=False))
    env_path = dest / "group_vars" / "all" / "flashmm.yml"
    env = yaml.safe_load(env_path.read_text())
    env["flashmm_config"]["storage"]["redis"].update(host="127.0.0.1", port=redis_port)
    env_path.write_text("---\n" + yaml.safe_dump(env, sort_keys=False))
    (dest / "host_vars").mkdir()
    for i, name in enumerate(names):
        (dest / "host_vars" / f"{name}.yml").write_text(
            "---\n" + yaml.safe_dump({"flashmm_host_config": {"storage": {"redis": {"db": first_db + i}}}}))
    if with_secrets:
        generate_missing(Inventory(dest))
    return dest
