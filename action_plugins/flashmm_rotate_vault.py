"""Action plugin ``flashmm_rotate_vault``: one step of a secret rotation in the environment's
vault, on the controller (``flashmm_deploy.secrets.rotation``).  The vault is opened with the vault
passwords this ansible-playbook run was given (``--vault-id``, ansible.cfg), re-encrypted with
its own vault id and replaced atomically.  The result names the secrets renewed and the
rotation's id, never a value.

New API keys are data: read here from the file O(new_values_file) (by the toolkit, never
templated), or from the variable ``rotate_new_values`` as its raw value (task variables reach
an action plugin untemplated; no task argument ever carries them, since Ansible would template
an argument first).  Documentation: library/flashmm_rotate_vault.py."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.values import native, plain


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset({"vault", "kind", "step", "rotation_id", "new_values_file",
                             "run_kinds"})

    def run(self, tmp=None, task_vars=None):
        from pathlib import Path

        from flashmm_deploy.secrets import rotation          # pydantic-free, but only this task needs it
        from flashmm_deploy.plan.planned_action import vault_keys

        result = super().run(tmp, task_vars)
        args = plain(dict(self._task.args))
        for name in ("vault", "kind", "step"):
            if not args.get(name):
                raise AnsibleActionFail(f"flashmm_rotate_vault: {name} is required")
        if args["kind"] not in rotation.KINDS or args["step"] not in ("begin", "finish"):
            raise AnsibleActionFail("flashmm_rotate_vault: kind must be one of "
                                    f"{', '.join(rotation.KINDS)} and step begin or finish")
        rotation_id = args.get("rotation_id")
        rotation_id = None if rotation_id in (None, "") else str(rotation_id)
        keys = vault_keys(self)
        check = bool(self._task.check_mode)
        try:
            if args["step"] == "begin":
                # read for api, and refused (not dropped) when this run does not rotate api
                run_kinds = args.get("run_kinds") or [args["kind"]]
                new_values = (self._new_values(args, task_vars or {}, keys)
                              if args["kind"] == "api" or "api" not in run_kinds else None)
                step = rotation.begin(Path(args["vault"]), keys, args["kind"], rotation_id,
                                      new_values, dry_run=check)
            else:
                if rotation_id is None:
                    raise AnsibleActionFail("flashmm_rotate_vault: rotation_id is required "
                                            "to finish a rotation")
                step = rotation.finish(Path(args["vault"]), keys, args["kind"], rotation_id,
                                       dry_run=check)
        except FlashmmError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=step.changed, renewed=step.renewed, state=step.state,
                      resumed=step.resumed, rotation_id=step.rotation_id)
        return result

    @staticmethod
    def _new_values(args, task_vars, keys):
        from pathlib import Path

        from flashmm_deploy.secrets import rotation

        raw = task_vars.get(rotation.NEW_VALUES_VAR)      # raw: never templated
        given = args.get("new_values_file")
        if given and raw is not None:
            raise rotation.RotationError(
                f"give the new API keys once: -e rotate_new_values_file=PATH or "
                f"{rotation.NEW_VALUES_VAR}, not both")
        if given:
            return rotation.read_new_values(Path(str(given)).expanduser(), keys)
        if raw is not None:
            return rotation.new_values_of_variable(native(raw))
        return None
