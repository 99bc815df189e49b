"""flashmm-config reads inventories with PyYAML; the playbook gets the same values through
Ansible's own inventory and vars.  Both must give the same effective configuration."""

from __future__ import annotations

import json

import pytest
import yaml

from flashmm_deploy import host_validation, effective
from flashmm_deploy.inventory import Inventory
from support import INVENTORIES, ROOT, ansible_playbook, copy_inventory, valid_secrets

pytestmark = pytest.mark.integration

DUMP = """---
- name: Validate
  ansible.builtin.import_playbook: {root}/playbooks/validate.yml

- name: Dump what the playbook validated
  hosts: all
  gather_facts: false
  tasks:
    - name: Write flashmm_validated on the controller
      ansible.builtin.copy:
        content: "{{{{ flashmm_validated | to_json }}}}"
        dest: "{out}"
        mode: "0600"
      run_once: true
      delegate_to: localhost
"""


@pytest.mark.parametrize("environment", ["local", "development", "testnet", "production"])
def test_cli_and_playbook_agree_on_every_hosts_effective_config(tmp_path, environment):
    inv = copy_inventory(environment, tmp_path)
    vault = inv / "group_vars" / "all" / "vault.yml"
    if not vault.exists() or environment == "local":     # the same secrets for both readers
        secrets = {k: v for k, v in valid_secrets().items()
                   if k in ("secret_key", "api_auth_token", "encryption_key")}
        vault.write_text(yaml.safe_dump({"flashmm_secrets": secrets}))
    out = tmp_path / "validated.json"
    playbook = tmp_path / "dump.yml"
    playbook.write_text(DUMP.format(root=ROOT, out=out))
    proc = ansible_playbook(str(playbook), inv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    from_playbook = json.loads(out.read_text())

    results = host_validation.validate_inventory(Inventory(inv))
    from_cli = {host: effective.effective(r.config) for host, r in results.items()}
    assert from_playbook == from_cli
    assert set(from_cli) == set(Inventory(INVENTORIES / environment).hosts)
