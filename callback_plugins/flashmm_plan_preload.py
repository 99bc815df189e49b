"""Callback plugin: when a run starts its second planning task (``flashmm_plan``), loads the
controller pass's modules in the ``ansible-playbook`` process, so that the workers forked for
later plans inherit them instead of importing them each (a rotation plans 2 + 2 per batch of
hosts).  The logic is ``flashmm_deploy.plan.plan_preload``; enabled in ansible.cfg
(callbacks_enabled)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: flashmm_plan_preload
type: aggregate
short_description: Loads the controller pass's modules once in a run that plans more than once
description:
  - >-
    Each task of each host runs in a worker forked from the ansible-playbook process. The
    worker that runs flashmm_plan imports the configuration schema, pydantic and the renderer
    (~0.15 s of CPU) unless its parent had them. At the second planning task of a run, this
    plugin imports them in the parent, so every later plan's worker inherits them. A run that
    plans once (deploy, backup, restore) is left as it is.
  - A failure to import is only reported (at -vvv); the plan's worker then fails with it.
requirements:
  - enabled in ansible.cfg (callbacks_enabled = flashmm_plan_preload)
"""

from ansible.plugins.callback import CallbackBase  # noqa: E402  (after DOCUMENTATION, as Ansible plugins put it)

from flashmm_deploy.plan.plan_preload import Preloader  # noqa: E402


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "flashmm_plan_preload"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._preloader = Preloader()

    # Sent by the strategy in this (the main) process before it forks the task's workers.
    def v2_playbook_on_task_start(self, task, is_conditional):
        try:
            if self._preloader.task_started(task.action):
                self._display.vvv("flashmm_plan_preload: the controller pass's modules are "
                                  "loaded for the plans that follow")
        except Exception as exc:  # noqa: BLE001  (never breaks a run: the worker imports them)
            self._display.vvv(f"flashmm_plan_preload: not loaded ({type(exc).__name__}: {exc})")
