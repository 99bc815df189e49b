"""FlashMM filters: thin wrappers over ``flashmm_deploy.reports.filters``.

Each filter only adapts arguments and turns ``FlashmmError`` into ``AnsibleFilterError`` (whose
message never holds a secret; raised without the original exception chained, so nothing of
the input leaks through a traceback).  The package is imported on first use: Ansible loads
this file in every worker that templates any filter."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

display = Display()

# The names of flashmm_deploy.reports.filters.FILTERS (a unit test checks that the two agree).
FILTER_NAMES = ("flashmm_explain", "flashmm_rotation_kinds", "flashmm_drift_report",
                "flashmm_audit_report")


def _wrap(name):
    def filter_(*args, **kwargs):
        from flashmm_deploy.reports import filters
        from flashmm_deploy.core.errors import FlashmmError

        try:
            result, warnings = filters.FILTERS[name](*args, **kwargs)
        except FlashmmError as exc:
            raise AnsibleFilterError(str(exc)) from None
        for warning in warnings:
            display.warning(warning)
        return result

    filter_.__name__ = name
    return filter_


class FilterModule:
    def filters(self):
        return {name: _wrap(name) for name in FILTER_NAMES}
