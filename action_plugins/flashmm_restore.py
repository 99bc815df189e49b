"""Action plugin for ``flashmm_restore``: builds one host's restore arguments from the backup
the verify step approved (``verified_var``), verifying and decrypting the host's part again
here on the controller, and runs the module in one call.  ``part: files`` restores the files
(and Redis, where no stack must start first); ``part: redis`` the Redis keys; ``part: vault``
(once, on the controller, with ``-e restore_secrets=true``) writes the backup's secrets into
the vault after every host is restored.  Secrets reach
only the module's no_log options; ``plan_var``: see ``flashmm_files``' plugin."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from flashmm_deploy.backup import backup_tasks
from flashmm_deploy.plan import runs
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.plan.planned_action import PlannedAction, generation, raw_secrets


class ActionModule(PlannedAction):
    MODULE = "flashmm_restore"

    def run_planned(self, result, task_vars):
        part = self._task.args.get("part", "files")
        hostname = task_vars["inventory_hostname"]
        verified = task_vars.get(self._task.args.get("verified_var", "flashmm_restore_verified"))
        keys = self.vault_keys()
        try:
            if part not in ("files", "redis", "vault"):
                raise ValueError("part must be files, redis or vault")
            if not isinstance(verified, dict) or "backup_id" not in verified:
                raise ValueError("the verify step's result is missing: run the "
                                 "flashmm_restore role's verify tasks first")
            plan, host = self.host_part(task_vars)
            if part == "vault":
                return self._vault(result, plan, verified, keys, task_vars)
            module_args = backup_tasks.restore_args(plan, verified, hostname, part, keys,
                                                    *raw_secrets(task_vars))
        except (ValueError, FlashmmError, TypeError) as exc:
            raise AnsibleActionFail(f"{hostname}: {exc}") from None
        records = module_args.pop("_records", None)
        module_args["audit"] = runs.audit_args(plan, host)
        if part == "files":     # the vault's secrets generation: refused where a host runs a newer
            module_args["generation"] = generation(task_vars)
            if verified.get("restore_secrets") and verified.get("generation"):
                # the hosts record the generation the vault gets at the end (restore_secrets);
                # a host running a newer one than the vault's now still refuses
                module_args["generation_base"] = module_args["generation"]
                module_args["generation"] = verified["generation"]
        self.execute(result, module_args, task_vars)
        if records is not None and not result.get("failed"):
            result["records"] = {k: v for k, v in records.items() if k != "unreadable_keys"}
            if records["unreadable"]:
                result.setdefault("warnings", []).append(
                    f"{hostname}: {records['unreadable']} flashmm:secure:* record(s) open with "
                    "neither the backup's encryption keys nor the vault's, restored as they "
                    f"were: {', '.join(records['unreadable_keys'][:10])}")
        return result

    def _vault(self, result, plan, verified, keys, task_vars):
        """restore_secrets, once, after every host: the backup's secrets into the vault; only
        when every host of the restore succeeded (a rerun of the restore finishes it)."""
        if not verified.get("restore_secrets"):
            result.update(changed=False, skipped=True, msg="the vault keeps its secrets")
            return result
        done = set(task_vars.get("ansible_play_hosts") or ())
        failed = sorted(set(verified["hosts"]) - done)
        if failed:
            raise AnsibleActionFail(
                f"restore_secrets: the restore failed on {', '.join(failed)}, so the vault "
                "keeps its secrets; the restored hosts serve the backup's (the vault's still "
                "work: the restore tried both): rerun the restore to finish it")
        written = backup_tasks.write_vault(plan, verified, keys, check=bool(self._task.check_mode))
        result.update(changed=written["changed"], names=written["names"],
                      generation=written["generation"],
                      msg=(f"the vault {'would hold' if self._task.check_mode else 'holds'} "
                           f"backup {verified['backup_id']}'s secrets: "
                           f"{', '.join(written['names'])}" if written["changed"] else
                           f"the vault holds backup {verified['backup_id']}'s secrets already"))
        return result
