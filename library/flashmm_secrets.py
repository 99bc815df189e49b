#!/usr/bin/python
"""Documentation of the action plugin ``flashmm_secrets`` (action_plugins/): it runs on the
controller only, so this module is never executed on a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_secrets
short_description: Create or complete an environment's encrypted vault
description:
  - The task form of C(flashmm-config secrets init|generate). Adds every generatable secret the
    inventory's hosts need and the vault lacks (URL-safe values, a Fernet key for the
    encryption key), keeps every other value, comment and variable, and encrypts the vault
    with the environment's vault id (the name of its C(app.environment)), atomically.
  - With O(create), the vault must not exist yet (O(replace) starts it over); third-party
    secrets get placeholders, reported in RV(missing).
  - Runs on the controller with the vault passwords given to ansible-playbook.
options:
  inventory: {description: The inventory directory., type: path, required: true}
  create: {description: Create a new vault (init)., type: bool, default: false}
  replace: {description: With O(create), start an existing vault over., type: bool, default: false}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Complete the vault
  flashmm_secrets:
    inventory: "{{ inventory_dir }}"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
vault: {description: The vault file., type: str, returned: always}
generated: {description: Names of the secrets generated (never values)., type: list, elements: str, returned: always}
missing: {description: Third-party secrets still to set by hand., type: list, elements: str, returned: always}
created: {description: The vault was created., type: bool, returned: always}
encrypted_now: {description: A plain-text vault was encrypted., type: bool, returned: always}
summary: {description: One line saying what was done., type: str, returned: always}
"""


if __name__ == "__main__":
    raise SystemExit("flashmm_secrets runs on the controller (action plugin) only")
