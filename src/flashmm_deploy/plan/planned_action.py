"""What the action plugins of the per-host tasks share (``action_plugins/flashmm_*.py``).

Such a task names the controller pass's registered plan (``plan_var``) rather than templating
this host's part of it into its arguments (see ``action_plugins/flashmm_files.py`` for why).
A plugin built on ``PlannedAction`` sets ``MODULE`` and writes ``run_planned``; without
``plan_var`` the module runs with its own options (a pass-through).  The secrets are picked
from the host's own variables, read raw, never templated.

Imported at module level by the plugins: Ansible's strategy loads them in the parent process
before it forks the workers, so the workers inherit this import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.plugins.action import ActionBase

from flashmm_deploy.secrets import secret_files, secret_generation
from flashmm_deploy.core.values import native
from flashmm_deploy.inventory.vault import VaultKeys


def vault_keys(action: ActionBase) -> VaultKeys:
    """The vault passwords this run was given (``--vault-id`` ...), from the plugin's loader."""
    return VaultKeys.of_secrets(action._loader._vault.secrets)


def raw_secrets(task_vars: Mapping[str, Any]) -> tuple[Any, Any]:
    """(``flashmm_secrets``, ``flashmm_env_overrides``) of this host, plain, never templated."""
    return native(task_vars.get("flashmm_secrets")), native(task_vars.get("flashmm_env_overrides"))


def generation(task_vars: Mapping[str, Any]) -> Any:
    """The vault's secrets generation, as the hosts record it."""
    return secret_generation.current(
        {secret_generation.VARIABLE: native(task_vars.get(secret_generation.VARIABLE))})


class PlannedAction(ActionBase):
    TRANSFERS_FILES = False
    MODULE = ""            # the module the plugin runs

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "plan_var" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name=self.MODULE, task_vars=task_vars))
            return result
        return self.run_planned(result, task_vars)

    def run_planned(self, result: dict, task_vars: Mapping[str, Any]) -> dict:
        raise NotImplementedError

    def host_part(self, task_vars: Mapping[str, Any]) -> tuple[Mapping[str, Any],
                                                              Mapping[str, Any]]:
        """(the whole plan, this host's part) from the variable ``plan_var`` names."""
        plan_var = self._task.args["plan_var"]
        return secret_files.host_part(task_vars.get(plan_var), plan_var,
                                      task_vars["inventory_hostname"])

    @staticmethod
    def pick_secrets(plan: Mapping[str, Any], task_vars: Mapping[str, Any]) -> dict[str, str]:
        """env var -> value of each secret of the plan's ``secret_env`` this host has."""
        return secret_files.pick_secrets(plan["secret_env"], *raw_secrets(task_vars))

    def vault_keys(self) -> VaultKeys:
        return vault_keys(self)

    def execute(self, result: dict, module_args: Mapping[str, Any],
                task_vars: Mapping[str, Any]) -> dict:
        """Run ``MODULE`` with ``module_args`` (no_log ones among them): its result, without
        the invocation."""
        result.update(self._execute_module(module_name=self.MODULE, module_args=module_args,
                                           task_vars=task_vars))
        result.pop("invocation", None)
        return result
