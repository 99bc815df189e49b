"""Import the flashmm_deploy package once, in ansible-playbook's main process.

Ansible forks a worker per host and task, and a worker that templates any filter loads the
filter plugins; without this, every such worker imports pydantic and builds the schema again
(~65 ms per host per task, measured: it made a 50-host deploy 10x slower than the ping floor).
Forked workers inherit the imported modules from here for free.  No output, no other effect."""

from __future__ import annotations

from ansible.plugins.callback import CallbackBase

try:  # the package is absent only in a broken setup; the filters then report it themselves
    import flashmm_deploy.filters  # noqa: F401
except ImportError:
    pass

DOCUMENTATION = """
    name: flashmm_preload
    type: aggregate
    short_description: Preload the flashmm_deploy package in the controller's main process
    description: Imports flashmm_deploy before workers fork so that they inherit it.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "flashmm_preload"
    CALLBACK_NEEDS_ENABLED = False
