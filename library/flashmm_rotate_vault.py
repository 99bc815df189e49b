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
    value. Both record the rotation in the vault's C(flashmm_rotations) and bump its secrets
    generation (C(flashmm_secrets_generation)) when they change it.
  - Without O(rotation_id), C(begin) resumes the rotation of O(kind) still rolling, else
    starts a new one with a new id (C(<UTC date>.<n>), unique in the vault). With it, a rerun
    resumes that rotation, and does nothing once it is done.
  - New API keys (O(kind=api)) are data, never templated - from O(new_values_file), or from
    the variable C(rotate_new_values) read raw (never through a task argument). A value
    holding a Jinja2 delimiter, or what C(.env) cannot hold, is refused naming the key.
  - Runs on the controller. Supports check mode (nothing written).
options:
  vault: {description: Path of the environment's vault file (group_vars/all/vault.yml)., type: path, required: true}
  kind: {description: What to rotate., type: str, required: true, choices: [api, redis, encryption, generated]}
  step: {description: Which step., type: str, required: true, choices: [begin, finish]}
  rotation_id: {description: "Names the rotation (a rerun with the same id resumes it); required for C(finish), where it is the id C(begin) returned.", type: str}
  new_values_file: {description: "For O(kind=api): a YAML file of new third-party keys (name -> value, or C(rotate_new_values) holding that), ansible-vault encrypted or plain; read by the toolkit, never templated.", type: path}
  run_kinds: {description: "The kinds this run rotates: new API keys given to a run without C(api) are refused, not dropped.", type: list, elements: str}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Renew the Redis password in the vault
  flashmm_rotate_vault:
    vault: "{{ inventory_dir }}/group_vars/all/vault.yml"
    kind: redis
    step: begin
  no_log: true
  register: begun           # begun.rotation_id: the id the finish step names
"""

RETURN = r"""
renewed: {description: Names of the secrets renewed (never values)., type: list, elements: str, returned: always}
state: {description: rolling or done., type: str, returned: always}
resumed: {description: An unfinished rotation of this id continues., type: bool, returned: always}
rotation_id: {description: The rotation's id (new or resumed)., type: str, returned: always}
"""


if __name__ == "__main__":
    raise SystemExit("flashmm_rotate_vault runs on the controller (action plugin) only")
