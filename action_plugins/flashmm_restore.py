"""Action plugin for ``flashmm_restore``: builds one host's restore arguments from the backup
the verify step approved (``verified_var``), verifying and decrypting the host's part again
here on the controller, and runs the module in one call.  ``part: files`` restores the files
(and Redis, where no stack must start first); ``part: redis`` the Redis keys; ``part: vault``
(once, on the controller, with ``-e restore_secrets=true``) writes the backup's secrets into
the vault after every host is restored.  Secrets reach
only the module's no_log options; ``plan_var``: see ``flashmm_files``' plugin."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy import backup_tasks, secret_generation
from flashmm_deploy.errors import FlashmmError
from flashmm_deploy.secret_files import host_part
from flashmm_deploy.values import native
from flashmm_deploy.vault import VaultKeys


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if "plan_var" not in self._task.args:     # the module used directly, with its own options
            result.update(self._execute_module(module_name="flashmm_restore", task_vars=task_vars))
            return result
        plan_var = self._task.args["plan_var"]
        part = self._task.args.get("part", "files")
        hostname = task_vars["inventory_hostname"]
        verified = task_vars.get(self._task.args.get("verified_var", "flashmm_restore_verified"))
        keys = VaultKeys.of_secrets(self._loader._vault.secrets)
        try:
            if part not in ("files", "redis", "vault"):
                raise ValueError("part must be files, redis or vault")
            if not isinstance(verified, dict) or "backup_id" not in verified:
                raise ValueError("the verify step's result is missing: run the "
                                 "flashmm_restore role's verify tasks first")
            plan, _ = host_part(task_vars.get(plan_var), plan_var, hostname)
            if part == "vault":
                return self._vault(result, plan, verified, keys, task_vars)
            module_args = backup_tasks.restore_args(
                plan, verified, hostname, part, keys,
                native(task_vars.get("flashmm_secrets")),
                native(task_vars.get("flashmm_env_overrides")))
        except (ValueError, FlashmmError, TypeError) as exc:
            raise AnsibleActionFail(f"{hostname}: {exc}") from None
        records = module_args.pop("_records", None)
        if part == "files":     # the vault's secrets generation: refused where a host runs a newer
            module_args["generation"] = secret_generation.current(
                {secret_generation.VARIABLE: native(task_vars.get(secret_generation.VARIABLE))})
            if verified.get("restore_secrets") and verified.get("generation"):
                # the hosts record the generation the vault gets at the end (restore_secrets);
                # a host running a newer one than the vault's now still refuses
                module_args["generation_base"] = module_args["generation"]
                module_args["generation"] = verified["generation"]
        result.update(self._execute_module(module_name="flashmm_restore",
                                           module_args=module_args, task_vars=task_vars))
        result.pop("invocation", None)
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
