"""Action plugin ``flashmm_backup_run`` (controller, run once): start a backup (``state:
begin``: a backup id and its staging directory) or seal it (``state: commit``: every host's
part stored, ``backup.json`` written, the backup moved into place, the oldest beyond
``flashmm_backup_keep`` pruned).  A thin adapter over ``flashmm_deploy.backup.backup_tasks``; the
directory is ``flashmm_backup_dir`` (relative to the project root unless absolute)."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.backup import backup_store, backup_tasks
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.secrets.secret_files import host_part
from flashmm_deploy.core.values import plain
from flashmm_deploy.plan.planned_action import vault_keys


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("state", "plan_var", "run_var"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        state = self._task.args.get("state")
        plan_var = self._task.args.get("plan_var", "flashmm_plan")
        plan = task_vars.get(plan_var)
        keep = plain(self._templar.template(task_vars.get("flashmm_backup_keep",
                                                          backup_store.DEFAULT_KEEP)))
        try:
            host_part(plan, plan_var, task_vars["inventory_hostname"])
            hosts = sorted(plan["hosts"])
            if state == "begin":
                run = backup_tasks.begin(plan, hosts, backup_tasks.backups_dir(self, task_vars), keep,
                                         check=self._play_context.check_mode)
                result.update(run, changed=False,
                              msg=f"backup {run['id']} of {len(hosts)} host(s) "
                                  f"({run['environment']})")
            elif state == "commit":
                run = task_vars.get(self._task.args.get("run_var", "flashmm_backup_run"))
                done = backup_tasks.commit(run, hosts, keep,
                                           vault_keys(self))
                pruned = done["pruned"]
                result.update(changed=not run.get("check"), backup_id=run["id"], **done,
                              msg=(f"backup {run['id']} (#{done['sequence']}) complete: "
                                   f"{len(hosts)} host(s) in {done['path']}, signed"
                                   if done["path"] else "check mode: nothing stored")
                              + (f"; pruned {', '.join(pruned)}" if pruned else ""))
            else:
                raise AnsibleActionFail("state must be begin or commit")
        except (FlashmmError, ValueError, OSError) as exc:
            raise AnsibleActionFail(str(exc)) from None
        return result
