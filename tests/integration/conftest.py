"""Fixtures of the integration tier (real redis-server, the Docker engine), and what keeps
pytest-xdist workers apart: each worker has its own redis-server (redis_support), claims its
own ports (ports.py), writes below its own tmp_path, names its compose projects with a random
part (stack_support), and registers its ansible-playbook runs in its own controller run
registry (``$XDG_STATE_HOME``, see src/flashmm_deploy/plan/runs.py; else ``~/.local/state``,
shared with the operator's own runs)."""

from __future__ import annotations

import os

import pytest

from engine_support import docker_engine  # noqa: F401  (pytest fixture)
from redis_support import redis_db, redis_server  # noqa: F401  (pytest fixtures)


@pytest.fixture(scope="session", autouse=True)
def _own_run_registry(tmp_path_factory):
    """This worker's runs register in a registry of their own: a dead run of the tests is
    nobody else's stale run, and the operator's registry gets none of them."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old
