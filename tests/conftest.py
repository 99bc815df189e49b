"""Both tiers: the markers that select them, and the grouping that keeps pytest-xdist workers
from sharing anything.  No fixture and no integration helper here (redis-py, cryptography,
the engine): tests/integration/conftest.py registers those for the integration tier only.

- ``integration`` (the ``pytestmark`` of every module in tests/integration, and of no other):
  checked here, a module that forgets it is a collection error.
- ``engine``: added here to every test that needs the Docker engine, i.e. whose fixtures
  include ``docker_engine`` (directly or through a stack fixture), so the mark cannot be
  forgotten.  Tiers: ``-m "not integration"`` (= tests/unit), ``-m "integration and not
  engine"``, ``-m engine``.
- Under ``--dist loadgroup`` the tests of a module that share a module-scoped fixture (a
  deployed stack, a server, a site) run in one worker (``xdist_group`` = module and fixture),
  and those groups are handed out first, the engine's before the rest: they are the long ones, and a long
  one started last would be the tail of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
INTEGRATION = TESTS / "integration"


def _module_scoped(item: pytest.Item) -> set[str]:
    """The module-, class- or package-scoped fixtures ``item`` uses (directly or not)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {name for name, defs in info.name2fixturedefs.items()
            if name in item.fixturenames and defs and defs[-1].scope in ("module", "package", "class")}


def _groups(items: list[pytest.Item]) -> dict[pytest.Item, str]:
    """item -> xdist group: the tests of a module that share a module-scoped fixture, directly or
    through another test (``site`` and ``scoped`` of one module make two groups, a test using
    both joins them)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    used = {item: _module_scoped(item) for item in items}
    for item, names in used.items():
        keys = [(item.module.__name__, n) for n in sorted(names)]
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    return {item: "::".join(root((item.module.__name__, min(names))))
            for item, names in used.items() if names}


def _group_in_id(item: pytest.Item, group: str) -> None:
    """``<id>@<group>``: the id a pytest-xdist worker reports, which its loadgroup scheduler
    groups by.  xdist 3.8 writes it to ``item._nodeid``, which pytest 9.1+ no longer reads (the
    id is ``item._id``), so without this every test was scheduled alone and a module-scoped
    stack was built in several workers at once."""
    if "@" in item.nodeid.rsplit("]", 1)[-1] or not hasattr(item, "_id"):
        return                          # already grouped, or a pytest where xdist's way works
    from _pytest.nodeid import coerce_node_id

    item._id = coerce_node_id(f"{item.nodeid}@{group}")


# A wrapper: its part before `yield` runs before every other plugin's hook, so before -m
# deselects and before pytest-xdist's worker reads xdist_group.
@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    wrong = []
    groups = _groups(items)
    for item in items:
        integration = INTEGRATION in Path(item.path).resolve().parents
        if integration != (item.get_closest_marker("integration") is not None):
            wrong.append(item.nodeid)
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.engine)
        if item in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item]))
            if os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup"):
                _group_in_id(item, groups[item])
    if wrong:
        raise pytest.UsageError(
            "the integration mark is for tests/integration, every test there and none elsewhere; "
            "wrong: " + ", ".join(wrong[:10]))
    if os.environ.get("PYTEST_XDIST_WORKER"):      # every worker sorts alike: xdist checks
        def rank(item: pytest.Item) -> int:
            grouped = item.get_closest_marker("xdist_group") is not None
            engine = item.get_closest_marker("engine") is not None
            return 0 if grouped and engine else 1 if engine else 2 if grouped else 3
        items.sort(key=rank)                         # stable: file order within a rank
    return (yield)
