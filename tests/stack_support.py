"""Deployed compose stacks for the tests (imported as `stack_support`): a generated local
inventory whose hosts each run their own compose project on the test engine, driven by
``ansible-playbook deploy.yml`` the way an operator runs it, and read back through what an
operator can see: ``docker inspect``, the published API and Redis ports, the files."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest
import redis
import yaml

from engine_support import DockerEngine
from flashmm_deploy.hostside.redis_acl import APP_USER, DEPLOY_USER
from flashmm_deploy.plan.sandbox import make_local_inventory
from ports import free_port_block  # noqa: F401  (the name tests import from here)
from redis_support import value_of
from support import INVENTORIES, ansible_playbook, read_vault, tool_env, write_vault


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc


class Stack:
    """``hosts`` generated hosts (sandbox-NN), each with its own compose project
    ``<prefix>-sandbox-NN``, API on 127.0.0.1:api_base+i, Redis on 127.0.0.1:redis_base+i,
    roots under ``<tmp>/<sandbox_rel>`` (not created: the first deploy makes it)."""

    def __init__(self, engine: DockerEngine, tmp: Path, *, hosts: int, label: str,
                 sandbox_rel: str = "sandbox"):
        self.engine = engine
        self.hosts = [f"sandbox-{i:02d}" for i in range(1, hosts + 1)]
        self.prefix = f"flashmm-stacktest-{label}-{secrets.token_hex(3)}"
        self.api_base = free_port_block(hosts)
        self.redis_base = free_port_block(hosts)
        self.sandbox = tmp / sandbox_rel
        self.inventory = make_local_inventory(
            INVENTORIES / "local", tmp / "inventory", hosts=hosts,
            stack_ports=(self.api_base, self.redis_base), project_prefix=self.prefix,
            sandbox=self.sandbox)
        self.env = tool_env(DOCKER_HOST=engine.host)
        self.extra_projects: list[str] = []     # other projects a test may have caused

    # ---- names and places --------------------------------------------------------------

    def project(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def root(self, host: str) -> Path:
        return self.sandbox / host

    def api_port(self, host: str) -> int:
        return self.api_base + self.hosts.index(host)

    def redis_port(self, host: str) -> int:
        return self.redis_base + self.hosts.index(host)

    # ---- the inventory -----------------------------------------------------------------

    @property
    def env_layer_path(self) -> Path:
        return self.inventory / "group_vars" / "all" / "flashmm.yml"

    @property
    def vault_path(self) -> Path:
        return self.inventory / "group_vars" / "all" / "vault.yml"

    def vault(self) -> dict[str, str]:
        return read_vault(self.vault_path)["flashmm_secrets"]

    def password(self) -> str:
        return self.vault()["redis_password"]

    def deploy_password(self) -> str:
        return self.vault()["redis_deploy_password"]

    def set_secret(self, name: str, value: str) -> None:
        data = read_vault(self.vault_path)
        data["flashmm_secrets"][name] = value
        write_vault(self.vault_path, data)

    def set_group_var(self, name: str, value: Any = None) -> None:
        """A role variable in the generated inventory's group vars (None: removed, so the
        role's default applies)."""
        path = self.inventory / "hosts.yml"
        data = yaml.safe_load(path.read_text())
        group = data["all"]["children"]["flashmm"]["vars"]
        group.pop(name, None)
        if value is not None:
            group[name] = value
        path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))

    def edit_env_layer(self, change: Callable[[dict], None]) -> None:
        data = yaml.safe_load(self.env_layer_path.read_text())
        change(data["flashmm_config"])
        self.env_layer_path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))

    def redis_url(self, host: str, password: str | None = None) -> str:
        pw = self.password() if password is None else password
        return f"redis://{APP_USER}:{quote(pw, safe='')}@127.0.0.1:{self.redis_port(host)}/0"

    # ---- running things ----------------------------------------------------------------

    def deploy(self, *args: str, env: dict[str, str] | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
        return ansible_playbook("deploy.yml", self.inventory, *args, env=env or self.env,
                                timeout=timeout)

    def containers(self, host: str) -> dict[str, dict[str, Any]]:
        """service -> {id, started_at, status, health, restarts, image} of the host's project
        (every container, running or not), from ``docker inspect``."""
        ids = self.engine.docker(
            "ps", "-a", "-q", "--no-trunc", "--filter",
            f"label=com.docker.compose.project={self.project(host)}").stdout.split()
        if not ids:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for info in json.loads(self.engine.docker("inspect", *ids).stdout):
            service = info["Config"]["Labels"].get("com.docker.compose.service", info["Name"])
            assert service not in out, f"two containers for {service} in {self.project(host)}"
            out[service] = {
                "id": info["Id"], "started_at": info["State"]["StartedAt"],
                "status": info["State"]["Status"],
                "health": (info["State"].get("Health") or {}).get("Status"),
                "restarts": info["RestartCount"], "image": info["Config"]["Image"],
                "name": info["Name"].lstrip("/"),
            }
        return out

    def identities(self) -> dict[str, dict[str, tuple[str, str]]]:
        """host -> service -> (container id, State.StartedAt): what a restart or a
        recreation changes."""
        return {h: {s: (c["id"], c["started_at"]) for s, c in self.containers(h).items()}
                for h in self.hosts}

    def get(self, host: str, path: str, timeout: float = 5) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.api_port(host)}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except (OSError, ValueError) as exc:
            return 0, repr(exc)

    def wait_health(self, host: str, deadline_s: float = 60) -> dict:
        """Poll /health until 200 (bounded); fails with the last answer."""
        deadline = time.monotonic() + deadline_s
        while True:
            status, body = self.get(host, "/health")
            if status == 200:
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"{host}: /health did not answer 200 within {deadline_s} s: "
                            f"{status} {body}")
            time.sleep(0.25)

    def redis(self, host: str, password: str | None = None,
              user: str = APP_USER) -> redis.Redis:
        """A client as the app's user (``user``: another; deploy's gets its password)."""
        if password is None:
            password = self.deploy_password() if user == DEPLOY_USER else self.password()
        return redis.Redis(host="127.0.0.1", port=self.redis_port(host), password=password,
                           username=user,
                           decode_responses=True, socket_timeout=5, protocol=2)

    def raw_redis(self, host: str, *commands: list[str]) -> list[bytes]:
        """Send ``commands`` (RESP) on one fresh connection, no AUTH unless one is given;
        returns each reply's first line."""
        replies = []
        with socket.create_connection(("127.0.0.1", self.redis_port(host)), timeout=5) as s:
            reader = s.makefile("rb")
            for cmd in commands:
                parts = [c.encode() for c in cmd]
                s.sendall(b"*%d\r\n" % len(parts)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
                replies.append(reader.readline().rstrip(b"\r\n"))
        return replies

    def redis_snapshot(self, host: str) -> dict[str, Any]:
        client = self.redis(host)
        out = {}
        for key in client.scan_iter("*"):
            kind = client.type(key)
            out[key] = value_of(client, key, kind)
        return out

    def down(self) -> None:
        """``docker compose -p <project> down -v --remove-orphans`` of every project, in
        parallel; a failure is a warning (this runs in finalizers)."""
        projects = [self.project(h) for h in self.hosts] + self.extra_projects

        def down(project: str) -> None:
            proc = self.engine.docker("compose", "-p", project, "down", "-v",
                                      "--remove-orphans", "--timeout", "5", check=False,
                                      timeout=120, cwd=self.inventory)
            if proc.returncode != 0:
                warnings.warn(f"compose down of {project} failed: {proc.stderr}", stacklevel=1)
        with ThreadPoolExecutor(len(projects)) as pool:
            list(pool.map(down, projects))


class AppIdentities:
    """The app containers a host ran while a block ran: compose recreates the app on each
    restart (a new container id); sampled every 0.2 s, while a recreated app lives for seconds
    (the roll that follows is a whole play away).  (docker events cannot tell: the engine
    keeps only its last 256 events, and every stack's health checks fill them.)"""

    def __init__(self, stack: Stack, host: str):
        self.stack, self.host, self.seen = stack, host, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        # every container of the project, with its service, in one call (mid-recreation, the
        # old and the new container of a service both exist)
        lines = self.stack.engine.docker(
            "ps", "-a", "--no-trunc", "--filter",
            f"label=com.docker.compose.project={self.stack.project(self.host)}",
            "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}',
            check=False).stdout.splitlines()
        for container, _, service in (line.partition(" ") for line in lines):
            if service in ("flashmm", "redis") and (service, container) not in self.seen:
                self.seen.append((service, container))

    def _run(self) -> None:
        while not self.stop.is_set():
            self._sample()
            time.sleep(0.2)

    def restarts(self, service: str) -> int:
        return len([i for s, i in self.seen if s == service]) - 1

    def __enter__(self) -> "AppIdentities":
        self._sample()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self._sample()
