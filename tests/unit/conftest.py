"""The unit tier starts no process and opens no socket: it runs in seconds, anywhere.  Whatever
needs redis-server, ansible-playbook, the CLI as a process or the engine lives in
tests/integration.  This guard makes the rule a failure instead of a convention: subprocess,
fork, exec, spawn and os.system are refused, and so are socket connect and bind."""

from __future__ import annotations

import os
import socket
import subprocess

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


# Once per session: set for each of ~3,000 tests it cost 0.7 s.  A test that patches one of
# these itself gets the guard back afterwards (its monkeypatch restores what it found).
@pytest.fixture(scope="session", autouse=True)
def _no_processes_or_sockets():
    def refuse(*args, **kwargs):
        raise AssertionError(MOVE)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", refuse)
        for name in _OS_PROCESS:
            if hasattr(os, name):
                patch.setattr(os, name, refuse)
        for name in ("connect", "connect_ex", "bind"):
            patch.setattr(socket.socket, name, refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "create_server", refuse)
        yield
