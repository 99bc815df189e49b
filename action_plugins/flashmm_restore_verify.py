"""Action plugin ``flashmm_restore_verify`` (controller, run once): verify the backup named by
``backup_id`` (an id or ``latest``) for the hosts of ``flashmm_restore_hosts`` (default: every
host of the play) before any host is touched: index, manifests, every stored file's size and
sha256, decryption with the environment's vault id, each decrypted file's sum, environment and
hosts against the inventory.  Any problem fails the task, naming each file and what differs.
Returns the groups the later plays of playbooks/restore.yml target, and no secret.  A thin
adapter over ``flashmm_deploy.backup.backup_tasks``."""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.backup import backup_tasks
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.secrets.secret_files import host_part
from flashmm_deploy.core.values import plain
from flashmm_deploy.plan.planned_action import vault_keys


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("plan_var",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        plan_var = self._task.args.get("plan_var", "flashmm_plan")
        try:
            plan, _ = host_part(task_vars.get(plan_var), plan_var, task_vars["inventory_hostname"])
            verified = backup_tasks.verify(
                plan, plan["hosts"], plain(self._templar.template(task_vars.get("backup_id"))),
                plain(self._templar.template(task_vars.get("flashmm_restore_hosts"))),
                backup_tasks.backups_dir(self, task_vars),
                vault_keys(self),
                with_secrets=plain(self._templar.template(task_vars.get("restore_secrets"))),
                accept_unsigned=plain(self._templar.template(
                    task_vars.get("flashmm_restore_accept_unsigned", False))),
                inventory_hosts=list((task_vars.get("groups") or {}).get("all") or ()),
                vault_path=(Path(task_vars["inventory_dir"]) / "group_vars" / "all" / "vault.yml"
                            if task_vars.get("inventory_dir") else None))
        except (FlashmmError, ValueError, OSError) as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(verified, changed=False,
                      msg=f"backup {verified['backup_id']} verified for "
                          f"{len(verified['hosts'])} host(s): {', '.join(verified['hosts'])}; "
                          + ("the backup's secrets are restored and then written into the vault"
                             if verified["restore_secrets"] else
                             "the hosts keep the vault's secrets (records re-encrypted under "
                             "its key; -e restore_secrets=true restores the backup's)"))
        return result
