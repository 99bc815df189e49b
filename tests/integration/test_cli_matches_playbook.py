"""flashmm-config reads inventories with PyYAML; the playbook gets the same values through
Ansible's own inventory and vars.  Both must give the same effective configuration: the
environment config file the controller pass renders equals the CLI's effective configuration."""

from __future__ import annotations

import json

import pytest
import yaml

from flashmm_deploy.config import effective
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.inventory.inventory import Inventory
from support import INVENTORIES, ROOT, ansible_playbook, copy_inventory, tool_env, valid_secrets

pytestmark = pytest.mark.integration

DUMP = """---
- name: Plan every host, then dump each host's rendered environment file
  hosts: all
  gather_facts: false
  tasks:
    - name: Validate and render every host
      ansible.builtin.import_role:
        name: flashmm
        tasks_from: plan
      vars:
        flashmm_plan_require_secrets: false
        flashmm_plan_preflight: none      # no outside world here

    - name: Write the rendered config files on the controller
      ansible.builtin.copy:
        content: >-
          {{{{ flashmm_plan.hosts | dict2items | map(attribute='value.files')
               | map('first') | map(attribute='content') | zip(flashmm_plan.hosts | list)
               | list | to_json }}}}
        dest: "{out}"
        mode: "0600"
      run_once: true
      delegate_to: localhost
"""


@pytest.mark.parametrize("environment", ["local", "development", "testnet", "production"])
def test_cli_and_playbook_agree_on_every_hosts_effective_config(tmp_path, environment):
    inv = copy_inventory(environment, tmp_path)
    vault = inv / "group_vars" / "all" / "vault.yml"
    if not vault.exists():                  # the same secrets for both readers
        vault.write_text(yaml.safe_dump({"flashmm_secrets": valid_secrets()}))
    out = tmp_path / "rendered.json"
    playbook = tmp_path / "dump.yml"
    playbook.write_text(DUMP.format(out=out))
    proc = ansible_playbook(str(playbook), inv,
                            env=tool_env(FLASHMM_SANDBOX=str(tmp_path / "sandbox")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    from_playbook = {host: yaml.safe_load(content)
                     for content, host in json.loads(out.read_text())}

    results = host_validation.validate_inventory(Inventory(inv))
    from_cli = {host: effective.environment_file_layer(r.config) for host, r in results.items()}
    assert from_playbook == from_cli
    assert set(from_cli) == set(Inventory(INVENTORIES / environment).hosts)
    assert ROOT.is_dir()
