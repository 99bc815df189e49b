"""Action plugin for ``flashmm_backup``: one module call per host reads its files and dumps its
Redis keys; the content is stored here, on the controller, into the backup the begin step
started (``run_var``), every secret encrypted with the environment's vault id, and never
returned.  The Redis password is picked from the host's own vault variables (never a fact);
``plan_var`` names the controller pass's registered plan (see ``flashmm_files``' plugin)."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from flashmm_deploy.backup import backup_tasks
from flashmm_deploy.plan import runs
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.plan.planned_action import PlannedAction, raw_secrets


class ActionModule(PlannedAction):
    MODULE = "flashmm_backup"

    def run_planned(self, result, task_vars):
        hostname = task_vars["inventory_hostname"]
        run = task_vars.get(self._task.args.get("run_var", "flashmm_backup_run"))
        try:
            plan, host = self.host_part(task_vars)
            password = backup_tasks.inventory_password(plan, host, *raw_secrets(task_vars))
            module_args = {"root": host["root"], "lock_timeout": host["lock_timeout"],
                           "note": f"backup {run['id']}", "run_id": plan.get("run_id"),
                           # a backup holds no lease: it waits for a run that holds one
                           "lease": runs.lease_args(plan, host, hold=False, release=False),
                           "redis": backup_tasks.redis_args(host, password),
                           "audit": runs.audit_args(plan, host)}
        except (ValueError, FlashmmError, TypeError) as exc:
            raise AnsibleActionFail(str(exc)) from None
        taken = self._execute_module(module_name="flashmm_backup", module_args=module_args,
                                     task_vars=task_vars)
        if taken.get("failed"):
            result.update(failed=True, msg=taken.get("msg", "flashmm_backup failed"),
                          kind=taken.get("kind"))
            return result
        try:
            summary = backup_tasks.store(run, hostname, host, taken,
                                         self.vault_keys())
        except (FlashmmError, OSError, ValueError) as exc:
            raise AnsibleActionFail(f"{hostname}: {exc}") from None
        result.update(changed=False, backup_id=run["id"], **summary,
                      msg=f"{summary['files']} file(s), {summary['redis_keys']} Redis key(s)")
        return result
