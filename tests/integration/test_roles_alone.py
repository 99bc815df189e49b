"""Each role runs alone, through its main entry point (argument-spec check included), in a
playbook of its own: flashmm validates and renders, flashmm_files writes (and seeds nothing),
flashmm_runtime seeds (and writes nothing), flashmm_stack brings up a stack whose files exist."""

from __future__ import annotations

import json

import pytest
import yaml

from flashmm_deploy.plan.sandbox import make_local_inventory
from support import (INVENTORIES, allocate_dbs, ansible_playbook, recap, snapshot_files,
                     snapshot_redis, tool_env)

pytestmark = pytest.mark.integration
HOSTS = ("sandbox-01", "sandbox-02")


def role_playbook(tmp_path, role: str, extra_task: dict | None = None):
    play = {"name": f"The {role} role alone", "hosts": "all", "gather_facts": False,
            "roles": [role]}
    if extra_task:
        play["post_tasks"] = [extra_task]
    path = tmp_path / f"{role}.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


def run_ok(playbook, inv, *args, env=None):
    proc = ansible_playbook(str(playbook), inv, *args, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture
def site(tmp_path, redis_server):
    dbs = allocate_dbs(redis_server, len(HOSTS))
    sandbox = tmp_path / "sandbox"
    inv = make_local_inventory(INVENTORIES / "local", tmp_path / "inventory", hosts=len(HOSTS),
                               redis_port=redis_server.port, first_db=dbs[0], sandbox=sandbox)
    return inv, sandbox, dbs


def test_flashmm_alone_validates_and_renders_and_touches_nothing(tmp_path, site, redis_server):
    inv, sandbox, dbs = site
    dump = {"name": "Dump the plan", "ansible.builtin.copy": {
        "content": "{{ flashmm_plan.hosts | to_json }}", "dest": str(tmp_path / "plan.json"),
        "mode": "0600"}, "run_once": True, "delegate_to": "localhost"}
    proc = run_ok(role_playbook(tmp_path, "flashmm", dump), inv)
    assert "Validating arguments against arg spec 'main'" in proc.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert sorted(plan) == list(HOSTS)
    assert not sandbox.exists()
    assert all(not keys for keys in snapshot_redis(redis_server, dbs).values())


def test_flashmm_files_alone_writes_the_files_and_seeds_nothing(tmp_path, site, redis_server):
    inv, sandbox, dbs = site
    playbook = role_playbook(tmp_path, "flashmm_files")
    first = run_ok(playbook, inv)
    assert all(c["changed"] == 1 for c in recap(first.stdout).values())
    for host in HOSTS:
        assert (sandbox / host / ".env").stat().st_mode & 0o777 == 0o600
        assert (sandbox / host / "redis" / "seed.lua").is_file()
    assert all(not keys for keys in snapshot_redis(redis_server, dbs).values())
    again = run_ok(playbook, inv)
    assert all(c["changed"] == 0 for c in recap(again.stdout).values())


def test_flashmm_runtime_alone_seeds_and_writes_nothing(tmp_path, site, redis_server):
    inv, sandbox, dbs = site
    playbook = role_playbook(tmp_path, "flashmm_runtime")
    run_ok(playbook, inv)
    for db in dbs:
        assert redis_server.client(db).get("flashmm:meta:version") == "1"
    assert not sandbox.exists()
    before = snapshot_redis(redis_server, dbs)
    again = run_ok(playbook, inv)
    assert all(c["changed"] == 0 for c in recap(again.stdout).values())
    assert snapshot_redis(redis_server, dbs) == before


def test_a_role_alone_checks_its_own_arguments_per_host(tmp_path, site):
    inv, sandbox, _ = site
    proc = ansible_playbook(str(role_playbook(tmp_path, "flashmm_runtime")), inv,
                            "-e", "flashmm_runtime_mode=sometimes")
    assert proc.returncode != 0
    assert "flashmm_runtime_mode" in proc.stdout and "keep, enforce" in proc.stdout
    assert not sandbox.exists()


def test_flashmm_stack_alone_brings_up_the_stack_whose_files_exist(tmp_path, docker_engine):
    from engine_support import free_port
    sandbox = tmp_path / "sandbox"
    prefix = f"flashmm-alone-{free_port()}"
    inv = make_local_inventory(INVENTORIES / "local", tmp_path / "inventory", hosts=1,
                               stack_ports=(free_port(), free_port()), project_prefix=prefix,
                               sandbox=sandbox)
    env = tool_env(DOCKER_HOST=docker_engine.host)
    project = f"{prefix}-sandbox-01"
    try:
        run_ok(role_playbook(tmp_path, "flashmm_files"), inv, env=env)
        before = snapshot_files(sandbox)
        stack = role_playbook(tmp_path, "flashmm_stack")
        up = run_ok(stack, inv, env=env)
        assert recap(up.stdout)["sandbox-01"]["changed"] == 1
        ps = docker_engine.docker("compose", "-p", project, "ps", "--format", "json")
        states = [json.loads(line) for line in ps.stdout.splitlines() if line.strip()]
        assert {s["Service"] for s in states} == {"flashmm", "redis"}
        assert all(s["Health"] == "healthy" for s in states), states
        again = run_ok(stack, inv, env=env)
        assert recap(again.stdout)["sandbox-01"]["changed"] == 0
        assert snapshot_files(sandbox) == before
    finally:
        docker_engine.docker("compose", "-p", project, "down", "-v", "--remove-orphans",
                             check=False)
