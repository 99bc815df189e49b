"""FlashMM filters: thin wrappers over the ``flashmm_deploy`` package.

Every function here only adapts arguments and turns ``FlashmmError`` into
``AnsibleFilterError`` (whose message never holds a secret, and which is raised without the
original exception chained, so nothing of the input can leak through a traceback)."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from flashmm_deploy import plugin_api
from flashmm_deploy.errors import FlashmmError

display = Display()


def _wrap(func):
    @functools.wraps(func)
    def filter_(*args, **kwargs):
        try:
            result, warnings = func(*args, **kwargs)
        except FlashmmError as exc:
            raise AnsibleFilterError(str(exc)) from None
        for warning in warnings:
            display.warning(warning)
        return result

    return filter_


class FilterModule:
    def filters(self):
        return {name: _wrap(func) for name, func in plugin_api.FILTERS.items()}
