"""The modules of the controller pass, loaded once in the ``ansible-playbook`` process when a
run plans more than once (callback plugin ``flashmm_plan_preload``).

Ansible forks a worker for every task and host.  The worker that runs ``flashmm_plan`` imports
the schema, pydantic, the renderer and the role specs (~0.15 s of CPU) unless its parent had
them already.  A deploy plans once: loading them in the parent first would only move that cost.
A rotation plans twice plus twice per batch of hosts (2 hosts rolled one at a time: 6 plans;
50 hosts: 102), and every plan after the first would import them again.  So the parent loads
them when the run starts its second planning task, and every worker forked after it inherits
them."""

from __future__ import annotations

import importlib

# What action_plugins/flashmm_plan.py imports to run (a unit test keeps the two the same).
MODULES = (
    "flashmm_deploy.config.role_settings",
    "flashmm_deploy.core.errors",
    "flashmm_deploy.inventory.host_validation",
    "flashmm_deploy.plan.plan",
    "flashmm_deploy.plan.preflight",
    "flashmm_deploy.plan.runs",
    "flashmm_deploy.render.render",
    "flashmm_deploy.secrets.secret_generation",
)
# The task action names of the controller pass (as written in a task, or resolved).
PLAN_ACTIONS = frozenset({"flashmm_plan", "ansible.legacy.flashmm_plan"})


class Preloader:
    """Counts the planning tasks a run starts; at the second, loads ``MODULES`` here."""

    def __init__(self, load=None):
        self._load = load or _import_all
        self.plans = 0
        self.loaded = False

    def task_started(self, action: str) -> bool:
        """Note a task start; True when this call loaded the modules.  Tried once: a load that
        fails (raised to the caller) is not tried again, the workers import them then."""
        if action not in PLAN_ACTIONS or self.loaded:
            return False
        self.plans += 1
        if self.plans < 2:
            return False
        self.loaded = True
        self._load()
        return True


def _import_all() -> None:
    for name in MODULES:
        importlib.import_module(name)
