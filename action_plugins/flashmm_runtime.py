"""Action plugin for ``flashmm_runtime``: adds the Redis password, picked from the host's own
vault variables (never from a fact), to this host's seed arguments from the controller pass's
registered plan (``plan_var``, see ``flashmm_files``'s action plugin for why a name) and runs
the module."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from flashmm_deploy.hostside import redis_acl
from flashmm_deploy.plan import runs
from flashmm_deploy.secrets import secret_files
from flashmm_deploy.plan.planned_action import PlannedAction


class ActionModule(PlannedAction):
    MODULE = "flashmm_runtime"

    def run_planned(self, result, task_vars):
        try:
            plan, host = self.host_part(task_vars)
            secrets = self.pick_secrets(plan, task_vars)
        except ValueError as exc:
            raise AnsibleActionFail(str(exc)) from None
        module_args = secret_files.runtime_module_args(host["runtime"], secrets)
        module_args["audit"] = runs.audit_args(plan, host)
        acl = next((f["content"] for f in host["files"] if f["path"] == redis_acl.ACL_PATH), None)
        if host.get("acl_reload") and acl is not None:
            # after compose recreated the app: an upgrade's old default user goes now
            module_args["acl_reload"] = dict(redis_acl.reload_args(host["acl_reload"], secrets),
                                             content=acl)
        if host["files_this_run"]:      # hold the host's lock; refuse if another run wrote since
            module_args.update(root=host["root"], run_id=plan["run_id"],
                               lock_timeout=host["lock_timeout"],
                               # the run's last call on the host: its lease ends here
                               lease=runs.lease_args(plan, host, hold=False, release=True))
        self.execute(result, module_args, task_vars)
        stack = host.get("stack") or {}
        if (self._task.check_mode and stack and result.get("failed")
                and (result.get("kind") == "connect" or (
                    result.get("kind") == "auth" and stack.get("redis_restart_on_acl_change")))):
            # The stack's Redis is not running, or (escape hatch) runs with the password that
            # is lost: the stack step's check said it would start or recreate it, and check
            # mode starts nothing, so there is nothing to compare the runtime layer with yet.
            msg = result.pop("msg", "")
            result.update(failed=False, changed=False, skipped=True, msg=(
                f"{msg}; check mode starts no container (the stack step says what up would "
                "start or recreate), so the runtime layer is checked only once Redis runs "
                "with its new files"))
            result.setdefault("warnings", []).append(result["msg"])
        return result
