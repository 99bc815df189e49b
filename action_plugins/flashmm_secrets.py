"""Action plugin ``flashmm_secrets``: ``flashmm-config secrets init|generate`` as a task, on
the controller, with the vault passwords this ansible-playbook run was given
(``flashmm_deploy.secrets.secret_gen``).  The result names secrets, never values.  Documentation:
library/flashmm_secrets.py (ansible-doc flashmm_secrets)."""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.values import native


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset({"inventory", "create", "replace"})

    def run(self, tmp=None, task_vars=None):
        from flashmm_deploy.secrets import secret_gen
        from flashmm_deploy.inventory.inventory import Inventory
        from flashmm_deploy.plan.planned_action import vault_keys

        result = super().run(tmp, task_vars)
        args = native(dict(self._task.args))
        if not args.get("inventory"):
            raise AnsibleActionFail("flashmm_secrets: inventory is required")
        if self._task.check_mode:
            raise AnsibleActionFail("flashmm_secrets: no check mode (it would show nothing "
                                    "the vault does not already say); run without --check")
        keys = vault_keys(self)
        try:
            change = secret_gen.update_vault(Inventory(Path(args["inventory"]), keys), keys,
                                             create=bool(args.get("create")),
                                             replace=bool(args.get("replace")))
        except FlashmmError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=change.changed, vault=str(change.path),
                      generated=change.generated, missing=change.missing,
                      created=change.created, encrypted_now=change.encrypted_now,
                      summary=change.summary())
        return result
