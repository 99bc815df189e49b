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
from ansible.plugins.action import ActionBase

from flashmm_deploy import redis_acl, runs, secret_files, secret_generation
from flashmm_deploy.errors import FlashmmError
from flashmm_deploy.values import native


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "plan_var" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name="flashmm_files", task_vars=task_vars))
            return result
        return self._run_planned(result, task_vars)

    def _run_planned(self, result, task_vars):
        plan_var = self._task.args["plan_var"]
        try:
            plan, host = secret_files.host_part(task_vars.get(plan_var), plan_var,
                                                task_vars["inventory_hostname"])
            secret_env = plan["secret_env"]
            secrets = secret_files.pick_secrets(secret_env,
                                                native(task_vars.get("flashmm_secrets")),
                                                native(task_vars.get("flashmm_env_overrides")))
            written = secret_files.host_secret_files(host, secret_env, secrets)
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
            "generation": secret_generation.current(
                {secret_generation.VARIABLE: native(task_vars.get(secret_generation.VARIABLE))}),
        }
        if host["runtime_with_files"]:
            module_args["runtime"] = secret_files.runtime_module_args(host["runtime"], secrets)
        if host.get("acl_reload"):
            module_args["acl_reload"] = redis_acl.reload_args(host["acl_reload"], secrets)
        result.update(self._execute_module(module_name="flashmm_files", module_args=module_args,
                                           task_vars=task_vars))
        result.pop("invocation", None)
        return result
