#!/usr/bin/python
"""Documentation of the action plugin ``flashmm_rotate_vault`` (action_plugins/): it runs
entirely on the controller, so this module is never executed on a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_rotate_vault
short_description: Begin or finish a secret rotation in an environment's ansible-vault file
description:
  - C(begin) renews the secrets of O(kind) in the vault (the previous Redis password or
    encryption key is kept beside the new one until C(finish)); C(finish) drops the previous
    value. Both record the rotation in the vault's C(flashmm_rotations), so a rerun resumes
    an unfinished rotation and does nothing for a finished O(rotation_id).
  - Runs on the controller. Supports check mode (nothing written).
options:
  vault: {description: Path of the environment's vault file (group_vars/all/vault.yml)., type: path, required: true}
  kind: {description: What to rotate., type: str, required: true, choices: [api, redis, encryption, generated]}
  step: {description: Which step., type: str, required: true, choices: [begin, finish]}
  rotation_id: {description: Names the rotation (a rerun with the same id resumes it)., type: str, required: true}
  new_values: {description: "For O(kind=api): new third-party keys, name -> value.", type: dict}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Renew the Redis password in the vault
  flashmm_rotate_vault:
    vault: "{{ inventory_dir }}/group_vars/all/vault.yml"
    kind: redis
    step: begin
    rotation_id: "2026-11-26"
  no_log: true
"""

RETURN = r"""
renewed: {description: Names of the secrets renewed (never values)., type: list, elements: str, returned: always}
state: {description: rolling or done., type: str, returned: always}
resumed: {description: An unfinished rotation of this id continues., type: bool, returned: always}
"""


if __name__ == "__main__":
    raise SystemExit("flashmm_rotate_vault runs on the controller (action plugin) only")
