"""Action plugin for ``flashmm_restore``: builds one host's restore arguments from the backup
the verify step approved (``verified_var``), verifying and decrypting the host's part again
here on the controller, and runs the module in one call.  ``part: files`` restores the files
(and Redis, where no stack must start first); ``part: redis`` the Redis keys.  Secrets reach
only the module's no_log options; ``plan_var``: see ``flashmm_files``' plugin."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy import backup_tasks
from flashmm_deploy.errors import FlashmmError
from flashmm_deploy.secret_files import host_part
from flashmm_deploy.values import native
from flashmm_deploy.vault import VaultKeys


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "plan_var" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name="flashmm_restore", task_vars=task_vars))
            return result
        plan_var = self._task.args["plan_var"]
        part = self._task.args.get("part", "files")
        hostname = task_vars["inventory_hostname"]
        verified = task_vars.get(self._task.args.get("verified_var", "flashmm_restore_verified"))
        try:
            if part not in ("files", "redis"):
                raise ValueError("part must be files or redis")
            if not isinstance(verified, dict) or "backup_id" not in verified:
                raise ValueError("the verify step's result is missing: run the "
                                 "flashmm_restore role's verify tasks first")
            plan, _ = host_part(task_vars.get(plan_var), plan_var, hostname)
            module_args = backup_tasks.restore_args(
                plan, verified, hostname, part, VaultKeys.of_secrets(self._loader._vault.secrets),
                native(task_vars.get("flashmm_secrets")),
                native(task_vars.get("flashmm_env_overrides")))
        except (ValueError, FlashmmError, TypeError) as exc:
            raise AnsibleActionFail(f"{hostname}: {exc}") from None
        result.update(self._execute_module(module_name="flashmm_restore",
                                           module_args=module_args, task_vars=task_vars))
        result.pop("invocation", None)
        return result
