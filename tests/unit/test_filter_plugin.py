"""filter_plugins/flashmm.py stays a thin, complete wrapper over flashmm_deploy.plugin_api."""

from __future__ import annotations

import importlib.util

import pytest
from ansible.errors import AnsibleFilterError

from flashmm_deploy.reports import filters
from support import ROOT


def load_plugin():
    spec = importlib.util.spec_from_file_location("flashmm_filters", ROOT / "filter_plugins" / "flashmm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plugin_exposes_exactly_the_package_filters():
    plugin = load_plugin()
    assert set(plugin.FILTER_NAMES) == set(filters.FILTERS)
    assert set(plugin.FilterModule().filters()) == set(filters.FILTERS)


def test_package_errors_become_ansible_filter_errors_without_a_chained_cause():
    explain = load_plugin().FilterModule().filters()["flashmm_explain"]
    with pytest.raises(AnsibleFilterError, match="did you mean trading.max_position_usdc") as info:
        explain({}, "h", "trading.max_postion_usdc")
    assert info.value.__cause__ is None and info.value.__suppress_context__
