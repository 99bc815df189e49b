"""The unit tier starts no process and opens no socket: it runs in seconds, anywhere.  Whatever
needs redis-server, ansible-playbook, the CLI as a process or the engine lives in
tests/integration.  This guard makes the rule a failure instead of a convention: subprocess,
fork, exec, spawn and os.system are refused, and so are socket connect and bind."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

# Importing Ansible's display asks ldconfig (through ctypes) for libc once: a side effect of
# the import, not of a test.  Done here, before the guard.
import ansible.utils.display  # noqa: E402,F401

MOVE = "tests/unit starts no process and opens no socket: this test belongs in tests/integration"

# every way os starts or replaces a process (subprocess goes through Popen)
_OS_PROCESS = ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp",
               "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
               "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
               "spawnvpe")


UNIT = Path(__file__).resolve().parent
# Whether the test running now is a unit test: one pytest may run both tiers (test.sh with
# arguments, `pytest -k envfile`), and an integration test after a unit test in the same
# process must be free to start its processes.
_enforced = False


def _guarded(original):
    def call(*args, **kwargs):
        if _enforced:
            raise AssertionError(MOVE)
        return original(*args, **kwargs)
    return call


# Installed once per session (set and undone for each of ~3,000 tests it cost 0.7 s), and
# enforced while a unit test runs.  A test that patches one of these itself gets the guard
# back afterwards (its monkeypatch restores what it found).
@pytest.fixture(scope="session", autouse=True)
def _no_processes_or_sockets():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _guarded(subprocess.Popen.__init__))
        for name in _OS_PROCESS:
            if hasattr(os, name):
                patch.setattr(os, name, _guarded(getattr(os, name)))
        for name in ("connect", "connect_ex", "bind"):
            patch.setattr(socket.socket, name, _guarded(getattr(socket.socket, name)))
        patch.setattr(socket, "create_connection", _guarded(socket.create_connection))
        patch.setattr(socket, "create_server", _guarded(socket.create_server))
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _enforced
    _enforced = True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Leaving the tier (or the run: the session's fixtures of the other tier are finalized in
    the last test's teardown), the guard lets go before any finalizer runs."""
    global _enforced
    _enforced = nextitem is not None and UNIT in Path(nextitem.path).resolve().parents
