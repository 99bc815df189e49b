"""Action plugin for ``flashmm_audit``: the host's root, audit context and Redis connection
from the controller pass (``plan_var``), the Redis password from the host's own variables."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from flashmm_deploy.plan import runs
from flashmm_deploy.plan.planned_action import PlannedAction
from flashmm_deploy.secrets import secret_files


class ActionModule(PlannedAction):
    MODULE = "flashmm_audit"

    def run_planned(self, result, task_vars):
        args = {k: v for k, v in self._task.args.items() if k != "plan_var"}
        try:
            plan, host = self.host_part(task_vars)
            secrets = self.pick_secrets(plan, task_vars)
        except ValueError as exc:
            raise AnsibleActionFail(str(exc)) from None
        args["root"] = host["root"]
        args["audit"] = runs.audit_args(plan, host)
        if host.get("runtime") and args["audit"]:
            runtime = secret_files.runtime_module_args(host["runtime"], secrets)
            args["redis"] = {k: v for k, v in runtime.items() if k not in ("script", "mode")}
        return self.execute(result, args, task_vars)
