"""Action plugin for ``flashmm_audit``: the host's root, audit context and Redis connection
from the controller pass (``plan_var``), the Redis password from the host's own variables."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.plan import runs
from flashmm_deploy.secrets import secret_files
from flashmm_deploy.core.values import native


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        plan_var = args.pop("plan_var", None)
        if plan_var:
            try:
                plan, host = secret_files.host_part(task_vars.get(plan_var), plan_var,
                                                    task_vars["inventory_hostname"])
                secrets = secret_files.pick_secrets(
                    plan["secret_env"], native(task_vars.get("flashmm_secrets")),
                    native(task_vars.get("flashmm_env_overrides")))
            except ValueError as exc:
                raise AnsibleActionFail(str(exc)) from None
            args["root"] = host["root"]
            args["audit"] = runs.audit_args(plan, host)
            if host.get("runtime") and args["audit"]:
                runtime = secret_files.runtime_module_args(host["runtime"], secrets)
                args["redis"] = {k: v for k, v in runtime.items() if k not in ("script", "mode")}
        result.update(self._execute_module(module_name="flashmm_audit", module_args=args,
                                           task_vars=task_vars))
        result.pop("invocation", None)
        return result
