"""Action plugin for ``flashmm_runtime``: adds the Redis password, picked from the host's own
vault variables (never from a fact), to the plan's seed arguments and runs the module."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "runtime" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name="flashmm_runtime", task_vars=task_vars))
            return result
        return self._run_planned(result, task_vars)

    def _run_planned(self, result, task_vars):
        from flashmm_deploy import secret_files
        from flashmm_deploy.values import native

        try:
            secrets = secret_files.pick_secrets(self._task.args["secret_env"],
                                                native(task_vars.get("flashmm_secrets")),
                                                native(task_vars.get("flashmm_env_overrides")))
        except ValueError as exc:
            raise AnsibleActionFail(str(exc)) from None
        module_args = secret_files.runtime_module_args(self._task.args["runtime"], secrets)
        if self._task.args.get("run_id"):       # hold the host's lock; refuse a stale seed
            module_args.update(root=self._task.args["root"], run_id=self._task.args["run_id"],
                               lock_timeout=self._task.args.get("lock_timeout", 60))
        result.update(self._execute_module(module_name="flashmm_runtime",
                                           module_args=module_args, task_vars=task_vars))
        result.pop("invocation", None)
        return result
