"""The three tiers are selectable by marker and split the suite between them: ``-m "not
integration"`` is tests/unit, ``-m engine`` every test whose fixtures include ``docker_engine``
(directly, or through a stack fixture), ``-m "integration and not engine"`` the rest of
tests/integration (tests/conftest.py sets the engine mark; pytest runs as a process here)."""

from __future__ import annotations

import os

import pytest

from support import ROOT, VENV_BIN, run

pytestmark = pytest.mark.integration

# one file of each kind: unit; engine through the fixture itself and through a stack fixture;
# integration without the engine, and a module mixing both
FILES = ["tests/unit/test_unit_guard.py", "tests/integration/test_engine.py",
         "tests/integration/test_stack_check.py", "tests/integration/test_cli.py",
         "tests/integration/test_roles_alone.py"]


def collect(*args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = run([str(VENV_BIN / "pytest"), "-q", "-p", "no:cacheprovider", "--collect-only",
                *args, *FILES], env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # 5: none ran
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_unit_plain_integration_and_engine_tiers_split_the_suite():
    everything = collect()
    unit = collect("-m", "not integration")
    plain = collect("-m", "integration and not engine")
    engine = collect("-m", "engine")
    assert unit | plain | engine == everything
    assert not unit & plain and not unit & engine and not plain & engine
    assert unit == {t for t in everything if t.startswith("tests/unit/")}
    assert {t for t in everything if t.startswith("tests/integration/test_engine.py")} <= engine
    assert {t for t in everything if t.startswith("tests/integration/test_stack_check.py")} <= engine
    assert not any(t.startswith("tests/integration/test_cli.py") for t in engine)
    assert ("tests/integration/test_roles_alone.py::"
            "test_flashmm_stack_alone_brings_up_the_stack_whose_files_exist") in engine
    assert ("tests/integration/test_roles_alone.py::"
            "test_flashmm_files_alone_writes_the_files_and_seeds_nothing") in plain


def test_loadgroup_runs_the_tests_sharing_a_module_scoped_fixture_in_one_worker():
    """test_envfile_compose's tests on its module-scoped ``naive_reads`` share one worker (a
    stack built once); its one other test may go anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = run([str(VENV_BIN / "pytest"), "-p", "no:cacheprovider", "-v", "-n", "3",
                "--dist", "loadgroup", "tests/integration/test_envfile_compose.py"],
               env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # 5: none ran
    workers = {}
    for line in proc.stdout.splitlines():
        if line.startswith("[gw") and " PASSED " in line:
            workers[line.split(" PASSED ", 1)[1].strip()] = line.split("]", 1)[0]
    grouped = {t: w for t, w in workers.items() if "naive_reads" in t or "[" in t.split("::")[1]}
    assert len(grouped) >= 7 and len(set(grouped.values())) == 1, workers


def test_one_pytest_over_both_tiers_guards_only_the_unit_tests():
    """The unit guard lets go when the run leaves the tier (it stayed set for the session, and
    failed every integration test after a unit test in one process: `pytest -k ...`, test.sh
    with arguments).  Unit, integration, unit again, in one process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = run([str(VENV_BIN / "pytest"), "-q", "-p", "no:cacheprovider",
                "tests/unit/test_unit_guard.py",
                "tests/integration/test_cli.py::test_valid_inventory_exits_0",
                "tests/unit/test_unit_guard.py::test_subprocess_is_refused"], env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # 5: none ran
