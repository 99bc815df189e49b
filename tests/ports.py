"""Loopback ports for the servers the tests start (redis-server, the stand-in app, a compose
stack's published ports): the one port helper of the suite, safe when several pytest workers,
or several pytest runs on one machine, ask at the same time.

A port is claimed, not just found free: its lock file (``<tmp>/flashmm-deploy-test-ports/<port>``)
is held with ``flock`` until the claiming process ends, so no other worker or run is given it
even while the server meant for it is still starting.  Ports come from 20000-31999, below
Linux's ephemeral range (no outgoing connection takes one), never the fixed ports of
inventories/local's stacks, and a port something already listens on is skipped."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

LOW, HIGH = 20000, 32000
# inventories/local's stacks (API 18001-18003, Redis 16381-16383) are below LOW already; kept
# here so that a change of range cannot hand one out
FIXED = frozenset(range(18001, 18004)) | frozenset(range(16381, 16384))
LOCK_DIR = Path(tempfile.gettempdir()) / "flashmm-deploy-test-ports"

_held: dict[int, int] = {}          # port -> descriptor of its locked file, for this process
_rng = random.SystemRandom()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    if port in _held or port in FIXED or not LOW <= port < HIGH:
        return False
    LOCK_DIR.mkdir(exist_ok=True)
    fd = os.open(LOCK_DIR / str(port), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:                 # another process of some test run has it
        os.close(fd)
        return False
    if not _bindable(port):         # something outside the tests listens there
        os.close(fd)
        return False
    _held[port] = fd
    return True


def _release(port: int) -> None:
    os.close(_held.pop(port))


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive loopback ports, claimed for this process: nothing
    listens on them now and no other test process is given them."""
    for _ in range(500):
        base = _rng.randrange(LOW, HIGH - count)
        claimed = []
        for port in range(base, base + count):
            if not _claim(port):
                break
            claimed.append(port)
        else:
            return base
        for port in claimed:
            _release(port)
    raise RuntimeError(f"no block of {count} free loopback ports in {LOW}-{HIGH - 1}")


def free_port() -> int:
    """One loopback port, claimed for this process (see free_port_block)."""
    return free_port_block(1)
