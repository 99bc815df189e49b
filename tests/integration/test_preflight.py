"""Preflight (the seed's "Runtime Validation") against a small HTTP server on loopback that plays
the Sei RPC (/health, /status) and Cambrian (/v1/test-connection, /v1/account/balance),
healthy and failing: playbooks/preflight.yml alone, and deploy.yml refusing before any host is
touched."""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from flashmm_deploy.plan.sandbox import make_local_inventory
from ports import free_port
from support import INVENTORIES, ansible_playbook, read_vault, recap, tool_env, write_vault

pytestmark = pytest.mark.integration
HOSTS = ("sandbox-01", "sandbox-02", "sandbox-03")


class FakeWorld(ThreadingHTTPServer):
    """What the checks ask, on 127.0.0.1:<port>; each attribute changes one answer."""

    daemon_threads = True

    def __init__(self, api_key: str, secret_key: str):
        super().__init__(("127.0.0.1", 0), Handler)
        self.api_key, self.secret_key = api_key, secret_key
        self.health, self.network, self.balance = 200, "atlantic-2", 10_000.0
        self.hits: Counter[str] = Counter()
        self.keys_seen: list[str | None] = []       # the X-API-Key of each request
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeWorld

    def log_message(self, *args):        # quiet
        pass

    def _send(self, status: int, body: object = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        world = self.server
        world.hits[self.path] += 1
        world.keys_seen.append(self.headers.get("X-API-Key"))
        authed = (self.headers.get("X-API-Key"), self.headers.get("X-API-Secret")) == \
            (world.api_key, world.secret_key)
        if self.path == "/health":
            self._send(world.health, {})
        elif self.path == "/status":
            self._send(200, {"result": {"node_info": {"network": world.network}}})
        elif self.path == "/v1/test-connection":
            self._send(200 if authed else 401, {"ok": authed})
        elif self.path == "/v1/account/balance":
            self._send(200, {"balance_usdc": world.balance} if authed else {})
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", world.url + "/v1/test-connection")
            self.end_headers()
        else:
            self._send(404)


class Site:
    def __init__(self, tmp: Path, world: FakeWorld):
        self.world, self.sandbox = world, tmp / "sandbox"
        self.inventory = make_local_inventory(INVENTORIES / "local", tmp / "inventory",
                                              hosts=len(HOSTS), redis_port=free_port(),
                                              sandbox=self.sandbox)
        env_layer = self.inventory / "group_vars" / "all" / "flashmm.yml"
        data = yaml.safe_load(env_layer.read_text())
        data["flashmm_config"]["sei"]["rpc_url"] = world.url
        data["flashmm_config"].setdefault("cambrian", {})["base_url"] = world.url
        data["flashmm_preflight"] = True
        env_layer.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
        vault_path = self.inventory / "group_vars" / "all" / "vault.yml"
        vault = read_vault(vault_path)
        vault["flashmm_secrets"].update(cambrian_api_key=world.api_key,
                                        cambrian_secret_key=world.secret_key)
        write_vault(vault_path, vault)
        self.secrets = [v for v in vault["flashmm_secrets"].values() if isinstance(v, str)]

    def run(self, playbook: str, *args: str):
        proc = ansible_playbook(playbook, self.inventory, *args, env=tool_env())
        out = proc.stdout + proc.stderr
        leaked = [s for s in self.secrets if s in out]
        assert not leaked, "a secret value was printed"
        return proc, out

    def host_config(self, host: str, config: dict) -> None:
        path = self.inventory / "host_vars" / f"{host}.yml"
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
        data = data or {}
        data["flashmm_host_config"] = config
        path.parent.mkdir(exist_ok=True)
        path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def world():
    server = FakeWorld("CANARY-api-" + secrets.token_urlsafe(16),
                       "CANARY-secret-" + secrets.token_urlsafe(16))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def site(tmp_path, world) -> Site:
    return Site(tmp_path, world)


def failure_lines(out: str) -> list[str]:
    return sorted({line.strip().rstrip('",') for line in out.replace("\\n", "\n").splitlines()
                   if line.strip().startswith(("sei-", "cambrian-", "balance:"))})


def test_a_healthy_world_passes_asking_each_endpoint_once_for_the_fleet(site, world):
    proc, out = site.run("playbooks/preflight.yml", "-vvv")
    assert proc.returncode == 0, out[-3000:]
    assert "3 host(s) valid; preflight passed for 3" in out
    # three hosts with the same endpoints and credentials: one request per check
    assert world.hits == Counter({"/health": 1, "/status": 1, "/v1/test-connection": 1,
                                  "/v1/account/balance": 1})
    # the credentials go to Cambrian's two endpoints only, never to the RPC
    assert sorted(world.keys_seen, key=str) == sorted([None, None, world.api_key, world.api_key],
                                                      key=str)
    assert not site.sandbox.exists()


def test_deploy_refuses_a_wrong_chain_id_before_anything_is_written(site, world):
    world.network = "pacific-1"
    proc, out = site.run("deploy.yml")
    assert proc.returncode != 0
    assert failure_lines(out) == [
        f"sei-chain-id: sandbox-01, sandbox-02, sandbox-03: the RPC at {world.url} serves "
        "chain 'pacific-1', sei.chain_id is 'atlantic-2'"]
    assert "no host was touched" in out
    assert not site.sandbox.exists()
    assert all(c["changed"] == 0 for c in recap(proc.stdout).values())


def test_deploy_refuses_a_position_above_the_balance_naming_only_that_host(site, world):
    world.balance = 250.0
    site.host_config("sandbox-02", {"trading": {"max_position_usdc": 100.0}})
    site.host_config("sandbox-03", {"trading": {"max_position_usdc": 5000.0}})
    proc, out = site.run("deploy.yml", "--check", "--diff")
    assert proc.returncode != 0
    lines = failure_lines(out)
    assert lines == [f"balance: sandbox-03: trading.max_position_usdc 5000 is above the "
                     f"account balance 250 (from {world.url}/v1/account/balance)"], lines
    assert not site.sandbox.exists()
    # sandbox-01 keeps the inventory's 100.0 too: hosts with equal questions share a request
    assert world.hits["/v1/account/balance"] == 2


def test_refused_credentials_and_an_unhealthy_rpc_are_one_line_each(site, world):
    world.api_key = "another-key"
    world.health = 503
    proc, out = site.run("playbooks/preflight.yml", "-vvv")
    assert proc.returncode != 0
    hosts = ", ".join(HOSTS)
    assert failure_lines(out) == [
        f"balance: {hosts}: GET {world.url}/v1/account/balance: no 'balance_usdc' in the answer",
        f"cambrian-credentials: {hosts}: GET {world.url}/v1/test-connection refused the "
        "Cambrian credentials (HTTP 401): check cambrian_api_key and cambrian_secret_key in "
        "the vault",
        f"sei-rpc: {hosts}: GET {world.url}/health answered HTTP 503 (expected 200)"]


def test_an_rpc_nobody_answers_and_a_redirect_are_failures_not_followed(site, world):
    dead = f"http://127.0.0.1:{free_port()}"
    site.host_config("sandbox-01", {"sei": {"rpc_url": dead}})
    env_layer = site.inventory / "group_vars" / "all" / "flashmm.yml"
    data = yaml.safe_load(env_layer.read_text())
    data["flashmm_preflight_cambrian_url"] = world.url + "/moved"
    env_layer.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))
    proc, out = site.run("playbooks/preflight.yml", "--limit", "sandbox-01")
    assert proc.returncode != 0
    lines = failure_lines(out)
    assert lines[0] == (f"cambrian-credentials: sandbox-01: GET {world.url}/moved answered "
                        "HTTP 302 (expected 200)")
    assert lines[1].startswith(f"sei-chain-id: sandbox-01: GET {dead}/status: ")
    assert lines[2].startswith(f"sei-rpc: sandbox-01: GET {dead}/health: ")
    assert "refused" in lines[2].lower(), lines[2]
    assert world.hits["/v1/test-connection"] == 0           # the redirect was not followed


def test_preflight_off_for_one_run_and_in_inventories_without_it(site, world):
    world.network = "pacific-1"
    proc, out = site.run("playbooks/validate.yml")           # validation alone: no preflight
    assert proc.returncode == 0, out[-3000:]
    proc, out = site.run("deploy.yml", "--check", "--skip-tags", "flashmm_runtime",
                         "-e", "flashmm_plan_preflight=none")
    assert proc.returncode == 0, out[-3000:]
    assert sum(world.hits.values()) == 0
