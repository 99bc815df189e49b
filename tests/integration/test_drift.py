"""flashmm-config drift / playbooks/drift.yml on a real stack: a hand edit of a config file, a
changed secret, a runtime override and a stopped app each show, with exit 1; a clean host exits
0 and a host that cannot be reached 2; nothing is written and no secret is printed."""

from __future__ import annotations

import getpass
import json
import secrets

import pytest

from flashmm_deploy.plan.sandbox import make_local_inventory
from ports import free_port
from stack_support import Stack, ok
from support import INVENTORIES, flashmm_config, snapshot_files, tool_env

pytestmark = pytest.mark.integration
HZ = "flashmm:config:trading:quote_frequency_hz"
TYPO = "flashmm:config:trading:quote_frequncy_hz"


def drift(stack_or_inventory, *args: str, env=None):
    inventory = getattr(stack_or_inventory, "inventory", stack_or_inventory)
    env = env or getattr(stack_or_inventory, "env", None) or tool_env()
    proc = flashmm_config("drift", str(inventory), *args, env=env, timeout=600)
    return proc, (json.loads(proc.stdout) if "--json" in args and proc.stdout.strip() else None)


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    s = Stack(docker_engine, tmp_path_factory.mktemp("drift"), hosts=1, label="drift")
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def test_each_kind_of_drift_shows_with_exit_1_and_a_deploy_makes_it_clean(stack):
    host = stack.hosts[0]
    proc, report = drift(stack, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["hosts"][host]["status"] == "clean" and report["exit"] == 0

    root = stack.root(host)
    config = root / "config" / "environments" / "local.yml"
    config.write_text(config.read_text() + "# edited by hand\n")
    token = "CANARY-" + secrets.token_urlsafe(24)
    stack.set_secret("api_auth_token", token)                 # in the vault, not yet deployed
    stack.redis(host).set(HZ, "2.5")                          # an operator's override
    stack.redis(host).set(TYPO, "2.5")                        # ... and a key nobody reads
    app = stack.containers(host)["flashmm"]["name"]
    stack.engine.docker("stop", "--time", "5", app)
    (root / "config" / "notes.txt").write_text("left by hand\n")   # no run of deploy wrote it
    before = snapshot_files(stack.sandbox)

    proc, report = drift(stack, "--json")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert token not in proc.stdout + proc.stderr
    h = report["hosts"][host]
    assert h["status"] == "drift"
    assert h["files"] == {"config/environments/local.yml": "updated", ".env": "updated",
                          "config/notes.txt": "extra"}
    assert h["runtime"][HZ] == {"state": "override", "runtime": "2.5", "inventory": "1.0"}
    assert h["runtime"][TYPO] == {"state": "unknown"}
    assert h["containers"]["flashmm"]["action"] in ("start", "recreate")
    assert "redis" not in h["containers"]
    assert snapshot_files(stack.sandbox) == before           # read-only, bookkeeping included

    table, _ = drift(stack)
    assert table.returncode == 1 and token not in table.stdout
    assert f"{host}: drift ({h['count']} difference(s))" in table.stdout
    assert f"redis {HZ}: override: live 2.5, inventory 1.0" in table.stdout
    assert "file config/environments/local.yml: updated" in table.stdout

    status = flashmm_config("status", str(stack.inventory), env=stack.env, timeout=600)
    assert status.returncode == 1 and token not in status.stdout, status.stdout + status.stderr
    line = status.stdout.splitlines()[0]
    assert line.startswith(f"{host} | drift | version ") and " | app exited, out of date | " \
        in line and f" | drift {h['count']} | rotation none | no backup" in line, line

    ok(stack.deploy("-e", "flashmm_runtime_mode=enforce"))
    (root / "config" / "notes.txt").unlink()        # deploy leaves what it did not write
    stack.redis(host).delete(TYPO)
    stack.wait_health(host)
    proc, report = drift(stack, "--json")
    assert proc.returncode == 0 and report["hosts"][host]["status"] == "clean", \
        proc.stdout[-3000:]
    status = flashmm_config("status", str(stack.inventory), env=stack.env, timeout=600)
    assert status.returncode == 0, status.stdout + status.stderr
    line = status.stdout.splitlines()[0]
    version = stack.redis(host).get("flashmm:meta:version")
    assert f"{host} | clean | version {version} | written " in line, line
    assert f" by {getpass.getuser()}@" in line and " (deploy, toolkit " in line, line
    assert " | app running | drift 0 | rotation none | no backup" in line, line


def test_a_host_that_cannot_be_reached_exits_2_and_the_others_are_still_checked(tmp_path):
    inventory = make_local_inventory(INVENTORIES / "local", tmp_path / "inventory", hosts=2,
                                     redis_port=free_port(), sandbox=tmp_path / "sandbox")
    host_vars = inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "sandbox-02.yml").write_text(
        "---\nansible_connection: ssh\nansible_host: 127.0.0.1\n"
        f"ansible_port: {free_port()}\nansible_ssh_common_args: -o ConnectTimeout=5\n")
    proc, report = drift(inventory, "--json")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["hosts"]["sandbox-02"]["status"] == "unreachable"
    # sandbox-01 is reached, but its Redis (files and seed in one call there) is not: named
    first = report["hosts"]["sandbox-01"]
    assert first["status"] == "failed", first
    assert "cannot connect to redis" in first["errors"][0], first
    assert not (tmp_path / "sandbox").exists()


def test_an_invalid_inventory_is_no_report_exit_2_and_the_error_is_shown(tmp_path):
    inventory = make_local_inventory(INVENTORIES / "local", tmp_path / "inventory", hosts=1,
                                     redis_port=free_port(), sandbox=tmp_path / "sandbox")
    layer = inventory / "group_vars" / "all" / "flashmm.yml"
    layer.write_text(layer.read_text().replace("max_position_usdc: 100.0",
                                               "max_position_usdc: -1"))
    for command in ("drift", "status"):
        proc = flashmm_config(command, str(inventory), env=tool_env(), timeout=600)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert "trading.max_position_usdc" in proc.stderr
        assert f"flashmm-config {command}: playbooks/drift.yml produced no report" in proc.stderr
    assert not (tmp_path / "sandbox").exists()
