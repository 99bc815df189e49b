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


@pytest.fixture(autouse=True)
def _no_processes_or_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(MOVE)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for name in _OS_PROCESS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket.socket, "bind", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "create_server", refuse)
