"""Action plugin: the controller pass of a FlashMM run (role ``flashmm``, run once).

A thin adapter over ``flashmm_deploy.plan.plan``: it gathers, for every host of the play, the
FlashMM layer variables (raw: never templated) and a templating view of its other variables,
reads the roles' argument specs and templates, and returns the ``flashmm_plan`` fact.  Every
validation problem of every host comes back as one failure, before any host is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.vars.hostvars import HostVarsVars

from flashmm_deploy.core.values import is_template

EXTRA_VARS_SOURCE = "extra vars (-e) or play vars"


class _Variables(Mapping):
    """A host's variables, templated on access like ``hostvars[host]``, but only the values
    that hold a template: building Ansible's templar per host and value is most of the
    controller pass's cost otherwise."""

    def __init__(self, raw, loader, host):
        self._raw, self._loader, self._host, self._view = raw, loader, host, None

    def __getitem__(self, key):
        value = self._raw[key]
        if not is_template(value):
            return value
        if self._view is None:
            self._view = HostVarsVars(self._raw, loader=self._loader, host=self._host)
        return self._view[key]

    def __iter__(self):
        return iter(self._raw)

    def __len__(self):
        return len(self._raw)


def _tag_runs(tag, run_tags, skip_tags):
    """Whether a task tagged ``tag`` runs under --tags/--skip-tags (Ansible's rule for one tag)."""
    selected = bool({"all", "tagged", tag} & run_tags)
    return selected and not ({"all", "tagged", tag} & skip_tags)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("require_secrets", "render", "steps", "action", "preflight"))

    def run(self, tmp=None, task_vars=None):
        from flashmm_deploy.inventory import host_validation
        from flashmm_deploy.plan import plan, preflight, runs
        from flashmm_deploy.render import render
        from flashmm_deploy.config import role_settings
        from flashmm_deploy.secrets import secret_generation
        from flashmm_deploy.core.errors import FlashmmError

        result = super().run(tmp, task_vars)
        require_secrets = bool(self._task.args.get("require_secrets", False))
        do_render = bool(self._task.args.get("render", True))
        # what this run does: deploy.yml all three, a role run alone its own; tags may skip some
        steps = set(self._task.args.get("steps") or plan.STEPS)
        role = self._task._role
        roles_dir = (Path(role._role_path).parent if role is not None
                     else Path(self._loader.get_basedir()) / "roles")
        specs = role_settings.load_specs({r: roles_dir / r for r in plan.ROLES})
        hostvars = task_vars["hostvars"]
        inputs = {}
        for host in task_vars["ansible_play_batch"]:     # all active hosts unless serial
            raw = hostvars.raw_get(host)
            inventory = (host_validation.load_inventory(raw["inventory_dir"])
                         if raw.get("inventory_dir") else None)
            variables = _Variables(raw, self._loader, host)
            inputs[host] = plan.HostInput(
                layer_vars=host_validation.layer_vars(raw),
                variables=variables,
                source_of=self._source_of(inventory, host),
                machine=self._machine(variables, host))
        run_tags = set(task_vars.get("ansible_run_tags") or ["all"])
        skip_tags = set(task_vars.get("ansible_skip_tags") or [])
        steps = {s for s in steps if _tag_runs(f"flashmm_{s}", run_tags, skip_tags)}
        templates = None
        if do_render:
            templates = render.Templates({
                name: (roles_dir / role / "templates" / src).read_text("utf-8")
                for name, (role, src) in plan.TEMPLATES.items()})
        preflight_hosts = self._task.args.get("preflight") or "auto"
        if preflight_hosts not in ("auto", "all", "none"):
            raise AnsibleActionFail(f"preflight must be auto, all or none, not {preflight_hosts!r}")
        try:
            built = plan.build(inputs, role_specs=specs, templates=templates,
                               require_secrets=require_secrets, steps=frozenset(steps),
                               preflight_hosts=preflight_hosts)
        except FlashmmError as exc:
            raise AnsibleActionFail(str(exc)) from None
        if built.preflight:
            # read-only requests to the outside world, so check mode runs them too
            failed = preflight.run(built.preflight)
            if failed:
                raise AnsibleActionFail(
                    f"preflight failed ({len(failed)} check(s)); no host was touched:\n  "
                    + "\n  ".join(failed))
        checked = f"; preflight passed for {len(built.preflight)}" if built.preflight else ""
        result.update(changed=False, msg=f"{len(inputs)} host(s) valid{checked}",
                      warnings=built.warnings)
        action = self._task.args.get("action") or "deploy"
        rolling = secret_generation.rotations_in_progress(task_vars.get("flashmm_rotations"))
        if rolling and action != "rotation":
            # visible to every run: the hosts are between a rotation's two rolls
            result["warnings"] = [*built.warnings, (
                f"a secret rotation is in progress: {', '.join(rolling)}; this {action} "
                "writes the vault's current secrets (both passwords stay valid until the "
                "rotation finishes): finish the rotation with playbooks/rotate_secrets.yml")]
        if do_render:
            # The role registers this result as flashmm_plan: a registered variable is copied
            # once for the play's hosts, where a fact would be deep-copied for every later
            # task of every host (and could reach a fact cache).  Not shown, even at -vvv: it
            # carries every rendered file (no secret value, but the Redis ACL digests).
            result.update(built.fact(), _ansible_no_log=True)
            # This run's hold on each host, from its first call there to its last (host_lock);
            # registered under the ansible-playbook process (this worker's parent), so that a
            # later run breaks the leases this one leaves if it is killed.
            breaks = {h["lock_break"] for h in built.hosts.values() if h.get("lock_break")}
            result["lease"] = runs.start(built.run_id, action,
                                         pid=os.getppid(), breaks=breaks)
        return result

    @staticmethod
    def _source_of(inventory, host):
        def source_of(var):
            found = inventory.var_source(host, var) if inventory is not None else None
            return found or EXTRA_VARS_SOURCE
        return source_of

    @staticmethod
    def _machine(variables, host):
        if variables.get("ansible_connection") == "local":
            return "the controller (local connection)"
        return f"{variables.get('ansible_host', host)}:{variables.get('ansible_port', 22)}"
