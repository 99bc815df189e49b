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
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
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
