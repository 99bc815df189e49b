"""plan_preload: the controller pass's modules are loaded in the run's main process at its
second planning task, once; the list is what action_plugins/flashmm_plan.py imports."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from flashmm_deploy.plan import plan_preload
from flashmm_deploy.plan.plan_preload import MODULES, Preloader

ROOT = Path(__file__).resolve().parents[2]


def test_the_modules_load_at_the_second_plan_and_only_once():
    loads = []
    preloader = Preloader(load=lambda: loads.append(1))
    assert preloader.task_started("flashmm_plan") is False            # a deploy: one plan
    assert preloader.task_started("ansible.builtin.debug") is False
    assert loads == []
    assert preloader.task_started("ansible.legacy.flashmm_plan") is True
    assert loads == [1] and preloader.loaded
    assert preloader.task_started("flashmm_plan") is False            # the third and later
    assert loads == [1]


def test_other_tasks_never_load_them():
    loads = []
    preloader = Preloader(load=lambda: loads.append(1))
    for action in ("flashmm_files", "flashmm_stack", "ansible.builtin.include_vars") * 3:
        assert preloader.task_started(action) is False
    assert loads == [] and preloader.plans == 0


def test_the_list_is_what_the_plan_action_imports_when_it_runs():
    tree = ast.parse((ROOT / "action_plugins" / "flashmm_plan.py").read_text(encoding="utf-8"))
    [run] = [node for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef) and node.name == "run"]
    imported = set()
    for node in ast.walk(run):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                imported.add(name if _is_module(name) else node.module)
    assert imported == set(MODULES)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_every_listed_module_exists():
    missing = [name for name in MODULES if not _is_module(name)]
    assert not missing
    assert plan_preload.PLAN_ACTIONS == {"flashmm_plan", "ansible.legacy.flashmm_plan"}


def test_a_load_that_fails_is_not_tried_again():
    calls = []

    def failing():
        calls.append(1)
        raise ImportError("no pydantic")

    preloader = Preloader(load=failing)
    preloader.task_started("flashmm_plan")
    try:
        preloader.task_started("flashmm_plan")
    except ImportError:
        pass
    assert calls == [1] and preloader.loaded
    assert preloader.task_started("flashmm_plan") is False and calls == [1]
