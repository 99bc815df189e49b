"""Action plugin ``flashmm_health_watch``: the module of that name, given its run's owner (the
identity of the ``ansible-playbook`` process: this worker's parent), so that a watcher started
with ``async`` ends when its run is killed.  Documentation: library/flashmm_health_watch.py."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from flashmm_deploy.hostside.process_owner import identity


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state", "watch") == "watch" and not args.get("owner"):
            args["owner"] = identity(os.getppid())
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result.update(self._execute_module(module_name="flashmm_health_watch",
                                           module_args=args, task_vars=task_vars,
                                           wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
