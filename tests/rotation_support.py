"""Helpers of the rotation tests on the real stack (test_rotation*.py): the rotation run, the
vault and the app's variables as the host has them, and a client loop counting failed Redis
operations while a rotation runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis
from dotenv import dotenv_values

from flashmm_deploy.hostside.redis_acl import APP_USER
from stack_support import Stack
from support import ansible_playbook, read_vault


def rotate(stack: Stack, kind: str, *args: str) -> "subprocess.CompletedProcess":  # noqa: F821
    return ansible_playbook("playbooks/rotate_secrets.yml", stack.inventory, "-e",
                            f"rotate={kind}", "-e", "rotation_id=test-" + kind.replace(",", "-"),
                            *args, env=stack.env)


def vault(stack: Stack) -> dict:
    return read_vault(stack.vault_path)


def env_of(stack: Stack, host: str) -> dict:
    """The app's variables on the host: .env, each <VAR>_FILE (compose secrets) read from its
    file under the host's secrets/."""
    env = dotenv_values(stack.root(host) / ".env")
    for name in [n for n in env if n.endswith("_FILE")]:
        env[name[:-len("_FILE")]] = (stack.root(host) / "secrets" / Path(env.pop(name)).name
                                     ).read_text()
    return env


def auth_reply(stack: Stack, host: str, password: str, user: str = APP_USER) -> bytes:
    return stack.raw_redis(host, ["AUTH", user, password])[0]


def downtimes(stdout: str) -> list[float]:
    return [float(line.split("unavailable for ", 1)[1].split(" s", 1)[0])
            for line in stdout.splitlines() if "/health unavailable for " in line]


class ClientLoop:
    """A client of each host's Redis, as an app would be: the password read from the host's
    .env, a fresh connection every 5 operations, SET+GET pairs (bounded: ``limit`` operations
    in all, paced at ~40 per second so that they span a whole rotation); and the stand-in
    apps' own Redis failure counters (/stats) per app process."""

    def __init__(self, stack: Stack, limit: int = 3000):
        self.stack, self.limit = stack, limit
        self.ops = self.failures = 0
        self.errors: list[str] = []
        self.app_failures: dict[tuple[str, str], int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set() and self.ops < self.limit:
            for host in self.stack.hosts:
                env = env_of(self.stack, host)
                client = redis.Redis(host="127.0.0.1", port=self.stack.redis_port(host),
                                     username=APP_USER, password=env["REDIS_PASSWORD"],
                                     socket_timeout=5, protocol=2)
                try:
                    for _ in range(5):
                        n += 1
                        client.set(f"flashmm:rotation-test:{n % 50}", n)
                        assert client.get(f"flashmm:rotation-test:{n % 50}") == str(n).encode()
                        self.ops += 2
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    self.failures += 1
                    self.errors.append(f"{host}: {type(exc).__name__}: {exc}"[:200])
                finally:
                    client.close()
                status, stats = self.stack.get(host, "/stats", timeout=2)
                if status == 200:
                    key = (host, stats["started_at"])
                    self.app_failures[key] = max(self.app_failures.get(key, 0),
                                                 stats["redis_failures"])
            time.sleep(0.4)

    def __enter__(self) -> "ClientLoop":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running_at_end = self.thread.is_alive()     # else the bound came first
        self.stop.set()
        self.thread.join(timeout=30)
