"""The unit tier's guard (tests/unit/conftest.py) refuses every way to start a process or to
use a socket: a test that needs one fails, naming tests/integration as its place."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

MOVE = "belongs in tests/integration"


def test_subprocess_is_refused():
    with pytest.raises(AssertionError, match=MOVE):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_fork_is_refused():
    with pytest.raises(AssertionError, match=MOVE):
        pid = os.fork()
        if pid == 0:                    # without the guard: the child leaves at once
            os._exit(0)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("call", [
    lambda: os.system("true"),  # noqa: S605
    # a path that does not exist: without the guard, exec fails instead of replacing pytest
    lambda: os.execv("/nonexistent/flashmm-test", ["x"]),
    lambda: os.execvpe("/nonexistent/flashmm-test", ["x"], {}),
    lambda: os.posix_spawn("/bin/true", ["true"], dict(os.environ)),
    lambda: os.spawnv(os.P_WAIT, "/bin/true", ["true"]),
    lambda: os.popen("true").close(),  # noqa: S605
], ids=["system", "execv", "execvpe", "posix_spawn", "spawnv", "popen"])
def test_exec_and_spawn_are_refused(call):
    with pytest.raises(AssertionError, match=MOVE):
        call()


@pytest.mark.parametrize("call", [
    lambda s: s.bind(("127.0.0.1", 0)),
    lambda s: s.connect(("127.0.0.1", 9)),
    lambda s: s.connect_ex(("127.0.0.1", 9)),
], ids=["bind", "connect", "connect_ex"])
def test_socket_bind_and_connect_are_refused(call):
    with socket.socket() as s, pytest.raises(AssertionError, match=MOVE):
        call(s)


def test_servers_and_connections_are_refused():
    with pytest.raises(AssertionError, match=MOVE):
        socket.create_server(("127.0.0.1", 0))
    with pytest.raises(AssertionError, match=MOVE):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
