"""Action plugin for ``flashmm_files``: assembles a host's secret files and runs the module in
one call.

The controller pass (role ``flashmm``) left the host's public files in its plan and no secret
anywhere.  Here, inside this host's own task, the secret values are picked from the host's own
variables (``flashmm_secrets``, ``flashmm_env_overrides``: read raw, never templated; validated
by the controller pass) and reach only the module's ``no_log`` options.  Imports stay light
(no pydantic): this runs in a forked worker per host.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "plan" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name="flashmm_files", task_vars=task_vars))
            return result
        return self._run_planned(result, task_vars)

    def _run_planned(self, result, task_vars):
        from flashmm_deploy import secret_files
        from flashmm_deploy.errors import FlashmmError
        from flashmm_deploy.values import native

        plan, secret_env = self._task.args["plan"], self._task.args["secret_env"]
        try:
            secrets = secret_files.pick_secrets(secret_env,
                                                native(task_vars.get("flashmm_secrets")),
                                                native(task_vars.get("flashmm_env_overrides")))
            env_text, env_masked = secret_files.env_file(plan["env"], secret_env, secrets)
            written = [{"path": plan["env"]["path"], "mode": plan["env"]["mode"],
                        "content": env_text, "mask_keys": env_masked}]
            if plan.get("influxdb_env"):
                text, masked = secret_files.influxdb_env_file(plan["influxdb_env"], secrets)
                written.append({"path": plan["influxdb_env"]["path"], "content": text,
                                "mode": plan["influxdb_env"]["mode"], "mask_keys": masked})
        except (ValueError, FlashmmError) as exc:   # a misshapen secret variable or value
            raise AnsibleActionFail(str(exc)) from None
        module_args = {
            "root": plan["root"], "files": plan["files"], "secret_files": written,
            "owner": plan["owner"], "group": plan["group"],
            "directory_mode": plan["directory_mode"], "run_id": self._task.args.get("run_id"),
            "lock_timeout": plan["lock_timeout"],
            # a seed call of this run follows: it checks that no other run wrote in between
            "record_run": bool(plan["runtime"]) and not plan["runtime_with_files"],
        }
        if plan["runtime_with_files"]:
            module_args["runtime"] = secret_files.runtime_module_args(plan["runtime"], secrets)
        result.update(self._execute_module(module_name="flashmm_files", module_args=module_args,
                                           task_vars=task_vars))
        result.pop("invocation", None)
        return result
