"""The unit tier starts no process and opens no socket: it runs in seconds, anywhere.  Whatever
needs redis-server, ansible-playbook, the CLI as a process or the engine lives in
tests/integration.  This guard makes the rule a failure instead of a convention."""

from __future__ import annotations

import socket
import subprocess

import pytest

# Importing Ansible's display asks ldconfig (through ctypes) for libc once: a side effect of
# the import, not of a test.  Done here, before the guard.
import ansible.utils.display  # noqa: E402,F401

MOVE = "tests/unit starts no process and opens no socket: this test belongs in tests/integration"


@pytest.fixture(autouse=True)
def _no_processes_or_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(MOVE)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
