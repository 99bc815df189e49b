"""Action plugin for ``flashmm_files``: assembles a host's secret files and runs the module in
one call.

The controller pass (role ``flashmm``, task ``plan``) registered its result once for every host
of the play; ``plan_var`` names that variable.  This host's part of it holds the public files
and no secret.  Here, inside this host's own task, the secret values are picked from the host's
own variables (``flashmm_secrets``, ``flashmm_env_overrides``: read raw, never templated;
validated by the controller pass) and reach only the module's ``no_log`` options.

Why a variable name rather than ``plan: "{{ flashmm_plan.hosts[inventory_hostname] }}"``: each
templated argument is compiled and its (large) result walked again in every host's forked
worker, measured at ~25 ms per host (``bench/deploy.py``).  For the same reason the helpers are
imported at module level: Ansible's strategy loads this class in the parent process before it
forks the workers, so they inherit the import instead of repeating it per host.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from flashmm_deploy.hostside import redis_acl
from flashmm_deploy.plan import runs
from flashmm_deploy.secrets import secret_files
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.plan.planned_action import PlannedAction, generation


class ActionModule(PlannedAction):
    MODULE = "flashmm_files"

    def run_planned(self, result, task_vars):
        try:
            plan, host = self.host_part(task_vars)
            secrets = self.pick_secrets(plan, task_vars)
            written = secret_files.host_secret_files(host, plan["secret_env"], secrets)
        except (ValueError, FlashmmError) as exc:   # a misshapen secret variable or value
            raise AnsibleActionFail(str(exc)) from None
        # a seed call of this run follows: it checks that no other run wrote in between, and
        # the run keeps its lease on the host until then (compose up runs in between)
        seed_follows = bool(host["runtime"]) and not host["runtime_with_files"]
        module_args = {
            "root": host["root"], "files": host["files"], "secret_files": written,
            "owner": host["owner"], "group": host["group"],
            "directory_mode": host["directory_mode"], "run_id": plan["run_id"],
            "lock_timeout": host["lock_timeout"], "record_run": seed_follows,
            "lease": runs.lease_args(plan, host, hold=seed_follows, release=not seed_follows),
            # the vault's secrets generation: refused if the host runs a newer one
            "generation": generation(task_vars),
            "audit": runs.audit_args(plan, host),
        }
        if host["runtime_with_files"]:
            module_args["runtime"] = secret_files.runtime_module_args(host["runtime"], secrets)
        if host.get("acl_reload"):
            module_args["acl_reload"] = redis_acl.reload_args(host["acl_reload"], secrets)
        return self.execute(result, module_args, task_vars)
