"""Fixtures of the integration tier (real redis-server, the Docker engine), and what keeps
pytest-xdist workers apart: each worker has its own redis-server (redis_support), claims its
own ports (ports.py), writes below its own tmp_path, names its compose projects with a random
part (stack_support), and registers its ansible-playbook runs in its own controller run
registry (``$XDG_STATE_HOME``, see src/flashmm_deploy/plan/runs.py; else ``~/.local/state``,
shared with the operator's own runs)."""

from __future__ import annotations

import os
import resource
import time

import pytest

import support

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


_STARTED = time.monotonic()
# The pytest process the run log's lines belong to: the first to load this file (xdist's
# controller, whose workers report, or a run without workers).  A pytest a test starts itself
# (test_tiers) inherits it and stays out: its CPU is in its caller's children already.
_OWNER = "FLASHMM_TEST_RUN_LOG_OWNER"
os.environ.setdefault(_OWNER, str(os.getpid()))


def pytest_sessionfinish(session):
    """With FLASHMM_TEST_RUN_LOG, one more line per pytest process that ran the tests (each
    xdist worker, or the one process without xdist): its own CPU (the tests' code, redis-py,
    fixtures) and all its children's (the logged runs, and what support.run does not start:
    redis-servers, the engine and image scripts).  What neither holds is the engine's (dockerd,
    containerd, the containers)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    owner = os.environ.get(_OWNER)
    ran_tests = owner == str(os.getppid()) if worker else (
        owner == str(os.getpid()) and getattr(session.config.option, "dist", "no") == "no")
    if not support.RUN_LOG or not ran_tests:
        return
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    support.append_run_log({
        "kind": "worker", "test": worker or "main", "cmd": "pytest",
        "seconds": round(time.monotonic() - _STARTED, 3),
        "cpu": round(own.ru_utime + own.ru_stime, 3),
        "children_cpu": round(children.ru_utime + children.ru_stime, 3)})
