"""Action plugin ``flashmm_health_watch``: the module of that name, given its run's owner (the
identity of the ``ansible-playbook`` process: this worker's parent) when it starts a watcher,
so that the detached watcher ends when its run is killed.  Documentation:
library/flashmm_health_watch.py."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from flashmm_deploy.hostside.process_owner import identity


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state", "start") == "start" and not args.get("owner"):
            args["owner"] = identity(os.getppid())
        result.update(self._execute_module(module_name="flashmm_health_watch",
                                           module_args=args, task_vars=task_vars))
        return result
