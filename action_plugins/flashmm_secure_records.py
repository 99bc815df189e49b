"""Action plugin for ``flashmm_secure_records``: with ``plan_var``, the Redis connection comes
from the host's part of the registered plan and the keys and password from the host's own
variables (never templated into the task); otherwise the module runs with its own options."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from flashmm_deploy.plan import runs
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.plan.planned_action import PlannedAction

_CONNECTION = ("host", "port", "db", "username", "tls", "ca_file", "cert_file", "key_file",
               "tls_verify", "timeout")


class ActionModule(PlannedAction):
    MODULE = "flashmm_secure_records"

    def run(self, tmp=None, task_vars=None):
        # ActionBase.run, not the pass-through: the options go to the module either way
        result = super(PlannedAction, self).run(tmp, task_vars)
        args = dict(self._task.args)
        plan_var = args.pop("plan_var", None)
        if plan_var:
            try:
                plan, host = self.host_part(task_vars)
                if not host.get("runtime"):
                    raise FlashmmError(f"{plan_var!r} has no Redis connection for this host "
                                       "(the plan ran without its runtime step)")
                secrets = self.pick_secrets(plan, task_vars)
            except (ValueError, FlashmmError) as exc:
                raise AnsibleActionFail(str(exc)) from None
            if not secrets.get("ENCRYPTION_KEY"):
                raise AnsibleActionFail("flashmm_secure_records: ENCRYPTION_KEY is not set")
            args.update({k: host["runtime"][k] for k in _CONNECTION if k in host["runtime"]},
                        # deploy's user's (the plan's username), where Redis needs one
                        password=secrets.get(host["runtime"].get("password_env") or ""),
                        new_key=secrets["ENCRYPTION_KEY"],
                        old_key=secrets.get("OLD_ENCRYPTION_KEY"),
                        audit=runs.audit_args(plan, host))
        return self.execute(result, args, task_vars)
