"""Action plugin ``flashmm_rotate_vault``: one step of a secret rotation in the environment's
vault, on the controller (``flashmm_deploy.rotation``).  The vault is opened with the vault
passwords this ansible-playbook run was given (``--vault-id``, ansible.cfg), re-encrypted with
its own vault id and replaced atomically.  The result names the secrets renewed, never a
value.  Documentation: library/flashmm_rotate_vault.py (ansible-doc flashmm_rotate_vault)."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.errors import FlashmmError
from flashmm_deploy.values import native


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset({"vault", "kind", "step", "rotation_id", "new_values"})

    def run(self, tmp=None, task_vars=None):
        from flashmm_deploy import rotation          # pydantic-free, but only this task needs it
        from flashmm_deploy.vault import VaultKeys

        result = super().run(tmp, task_vars)
        args = native(dict(self._task.args))     # plain values: they go into the vault file
        for name in ("vault", "kind", "step", "rotation_id"):
            if not args.get(name):
                raise AnsibleActionFail(f"flashmm_rotate_vault: {name} is required")
        if args["kind"] not in rotation.KINDS or args["step"] not in ("begin", "finish"):
            raise AnsibleActionFail("flashmm_rotate_vault: kind must be one of "
                                    f"{', '.join(rotation.KINDS)} and step begin or finish")
        from pathlib import Path

        keys = VaultKeys.of_secrets(self._loader._vault.secrets)
        check = bool(self._task.check_mode)
        try:
            if args["step"] == "begin":
                step = rotation.begin(Path(args["vault"]), keys, args["kind"],
                                      str(args["rotation_id"]), args.get("new_values"),
                                      dry_run=check)
            else:
                step = rotation.finish(Path(args["vault"]), keys, args["kind"],
                                       str(args["rotation_id"]), dry_run=check)
        except FlashmmError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=step.changed, renewed=step.renewed, state=step.state,
                      resumed=step.resumed)
        return result
