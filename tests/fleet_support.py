"""A fleet of SSH targets for the tests (imported as `fleet_support`): ``scripts/fleet.sh`` run
the way an operator runs it, with its settings pointing into the test's own directory (fleet
name, ports from ports.py, keys, roots, inventory), so workers and the operator's own fleet
never meet.  A :class:`Fleet` is a :class:`stack_support.Stack` whose hosts are the targets:
the same helpers read their stacks (containers, API, Redis) through the published ports."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from engine_support import DockerEngine
from ports import free_port_block
from stack_support import Stack
from support import INVENTORIES, ROOT, logged_run, tool_env

FLEET_SH = ROOT / "scripts" / "fleet.sh"
TEST_CALLBACKS = ROOT / "tests" / "fixtures" / "callback_plugins"


class Fleet(Stack):
    """``count`` targets fleet-01.. (containers ``flashmm-<name>-target-NN``), each with its
    stack (compose project ``flashmm-<name>-NN``); target i listens for SSH on port+3i, its
    stack publishes the API on the next port and Redis on the one after."""

    def __init__(self, engine: DockerEngine, tmp: Path, *, count: int = 3, spare: int = 0):
        # Stack.__init__ generates a local inventory: a fleet's comes from fleet.sh instead
        self.engine = engine
        self.name = "t" + secrets.token_hex(4)
        self.port = free_port_block(3 * (count + spare))     # spare: room to resize into
        self.hosts = [f"fleet-{i:02d}" for i in range(1, count + 1)]
        self.prefix = f"flashmm-{self.name}"
        self.sandbox = tmp / "roots"
        self.state = tmp / "state"
        self.inventory = tmp / "inventory"
        shutil.copytree(INVENTORIES / "fleet" / "group_vars", self.inventory / "group_vars",
                        ignore=shutil.ignore_patterns("vault.yml"))
        self.env = tool_env(DOCKER_HOST=engine.host)
        self.extra_projects: list[str] = []

    # ---- names and places --------------------------------------------------------------

    def index(self, host: str) -> int:
        return self.hosts.index(host)

    def project(self, host: str) -> str:
        return f"{self.prefix}-{self.index(host) + 1:02d}"

    def container(self, host: str) -> str:
        return f"{self.prefix}-target-{self.index(host) + 1:02d}"

    def ssh_port(self, host: str) -> int:
        return self.port + 3 * self.index(host)

    def api_port(self, host: str) -> int:
        return self.ssh_port(host) + 1

    def redis_port(self, host: str) -> int:
        return self.ssh_port(host) + 2

    # ---- scripts/fleet.sh -----------------------------------------------------------------

    def script(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        env = dict(self.env, FLASHMM_FLEET_NAME=self.name, FLASHMM_FLEET_PORT=str(self.port),
                   FLASHMM_FLEET_STATE=str(self.state), FLASHMM_FLEET_ROOTS=str(self.sandbox),
                   FLASHMM_FLEET_INVENTORY=str(self.inventory))
        try:
            with logged_run([str(FLEET_SH), *args]):
                proc = subprocess.run([str(FLEET_SH), *args], env=env, capture_output=True,
                                      text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scripts/fleet.sh {' '.join(args)} did not finish within {timeout} s")
        return proc

    def start(self, count: int | None = None) -> subprocess.CompletedProcess:
        proc = self.script("start", str(count or len(self.hosts)))
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc

    def stop_target(self, host: str) -> None:
        self.engine.docker("stop", "-t", "1", self.container(host))

    def target_state(self, host: str) -> str:
        return self.engine.docker("inspect", "--format", "{{.State.Status}}",
                                  self.container(host)).stdout.strip()

    def stopping_env(self, host: str, *, after: str, task: str) -> dict[str, str]:
        """The tools' environment with the test callback that stops ``host``'s target when
        host ``after`` reports task ``task`` ok (tests/fixtures/callback_plugins)."""
        return dict(self.env,
                    ANSIBLE_CALLBACK_PLUGINS=f"{ROOT / 'callback_plugins'}{os.pathsep}{TEST_CALLBACKS}",
                    ANSIBLE_CALLBACKS_ENABLED="flashmm_summary,flashmm_test_stop_target",
                    FLASHMM_TEST_STOP_AFTER=after, FLASHMM_TEST_STOP_TASK=task,
                    FLASHMM_TEST_STOP_CONTAINER=self.container(host))

    def down(self) -> None:
        """``scripts/fleet.sh stop``: the targets and the stacks deploys started from them."""
        proc = self.script("stop")
        if proc.returncode != 0:
            warnings.warn(f"fleet.sh stop failed: {proc.stderr}", stacklevel=1)
