"""Action plugin for ``flashmm_stack``: a host's stack step in one task.

- Real run: the ``flashmm_stack`` module (task up), one call per host: ``docker compose up``
  (wait until healthy, orphans removed; one docker command, where
  community.docker.docker_compose_v2 runs five).  With the escape hatch
  (``flashmm_stack_redis_restart_on_acl_change``) it first recreates Redis once if it started
  before its ACL file was written; with compose secrets (``flashmm_stack_compose_secrets``)
  the app if it started before one of its secret files was written (a running container keeps
  the bind-mounted file it started with).
- Check mode: the ``flashmm_stack`` module (task preview) compares the containers with the
  files the run would write, as compose does, and says which container ``up`` would create,
  recreate, start or remove and why (``msg``, and the --diff text); ``changed`` exactly when
  the real run's ``up`` would change something.  Compose's own dry run cannot: it reads the
  old files on the host and fails on a stopped dependency.

The files the run would write: deploy's from the plan (``plan_var``) and the host's own
secret variables; with ``flashmm_stack_files_from: restore`` (set by playbooks/restore.yml and
the flashmm_restore role), the backup's, from the verify step's result (``verified_var``).
Secret contents stay here: the module gets their sha256 (a no_log option).
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.secrets import secret_files
from flashmm_deploy.plan import stack_check
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.values import native


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "plan_var" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name="flashmm_stack", task_vars=task_vars))
            return result
        hostname = task_vars["inventory_hostname"]
        plan_var = self._task.args["plan_var"]
        try:
            plan, host = secret_files.host_part(task_vars.get(plan_var), plan_var, hostname)
            if not host.get("stack"):
                raise ValueError(f"{hostname}: the plan has no stack for this host "
                                 "(flashmm_compose_up is false)")
            if self._task.check_mode:
                files = self._planned_files(plan, host, hostname, task_vars)
                module_args = stack_check.preview_args(host, files)
        except (ValueError, FlashmmError, TypeError) as exc:
            raise AnsibleActionFail(f"{hostname}: {exc}") from None
        if self._task.check_mode:
            result.update(self._execute_module(module_name="flashmm_stack",
                                               module_args=module_args, task_vars=task_vars))
            result.pop("invocation", None)
            return result
        up = self._execute_module(module_name="flashmm_stack",
                                  module_args=stack_check.up_args(host), task_vars=task_vars)
        up.pop("invocation", None)
        result.update(up)
        return result

    def _planned_files(self, plan, host, hostname, task_vars):
        vault = native(task_vars.get("flashmm_secrets"))
        overrides = native(task_vars.get("flashmm_env_overrides"))
        source = task_vars.get("flashmm_stack_files_from", "deploy")
        if source == "deploy":
            return stack_check.deploy_files(plan, host, vault, overrides)
        if source != "restore":
            raise ValueError(f"flashmm_stack_files_from: expected deploy or restore, got "
                             f"{source!r}")
        from flashmm_deploy.backup import backup_tasks     # restore only: the backup store's imports
        from flashmm_deploy.plan.planned_action import vault_keys
        verified = task_vars.get(self._task.args.get("verified_var",
                                                     "flashmm_restore_verified"))
        if not isinstance(verified, dict) or "backup_id" not in verified:
            raise ValueError("the restore's verify step's result is missing")
        args = backup_tasks.restore_args(plan, verified, hostname, "files",
                                         vault_keys(self),
                                         vault, overrides)
        return stack_check.restore_files(args)
