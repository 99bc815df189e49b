"""Workflows run together against one real 2-host stack, as a team of operators would run
them: a backup during a deploy, two deploys of different checkouts at once, a deploy from a
checkout older than a rotation, a deploy killed with SIGKILL, a lease left by a run of another
controller.  Each host must end whole: its config file and its Redis from one run, its stack
healthy, and one plain rerun changing nothing.

The host lease (``flashmm_deploy.hostside.host_lock``) is what makes this work; before it, a backup read
the new deploy's files and the previous deploy's Redis, and two deploys broke each other's
``docker compose up``."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from flashmm_deploy.hostside.host_lock import LEASE_FILE
from stack_support import Stack, ok
from support import ansible_playbook, recap

pytestmark = [pytest.mark.integration]

KEY = "flashmm:config:trading:max_position_usdc"
FILE = "config/environments/local.yml"


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    s = Stack(docker_engine, tmp_path_factory.mktemp("together"), hosts=2, label="together")
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def set_position(inventory: Path, value: float) -> None:
    path = inventory / "group_vars" / "all" / "flashmm.yml"
    data = yaml.safe_load(path.read_text())
    data["flashmm_config"]["trading"]["max_position_usdc"] = value
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


def file_value(stack: Stack, host: str) -> float:
    return yaml.safe_load((stack.root(host) / FILE).read_text())["trading"]["max_position_usdc"]


def redis_value(stack: Stack, host: str) -> float:
    return json.loads(stack.redis(host).get(KEY))


def assert_whole(stack: Stack) -> None:
    """Every host: file and Redis from the same run, both containers healthy, nothing left
    under a compose temporary name."""
    for host in stack.hosts:
        assert file_value(stack, host) == redis_value(stack, host), host
        containers = stack.containers(host)
        assert set(containers) == {"flashmm", "redis"}, containers
        assert all(c["health"] == "healthy" for c in containers.values()), containers
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], env=stack.env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert not [n for n in names if stack.prefix in n and not n.startswith(stack.prefix)], names


def converged(stack: Stack, inventory: Path | None = None) -> None:
    inventory = inventory or stack.inventory
    # --diff: a run that changes something shows what and why (the stack step: which
    # container, recreated for what), where a check run first cost another deploy's CPU
    proc = ok(ansible_playbook("deploy.yml", inventory, "--diff", env=stack.env))
    assert all(c["changed"] == 0 for c in recap(proc.stdout).values()), proc.stdout[-6000:]


def start(cmd_inventory: Path, stack: Stack, playbook: str = "deploy.yml", *args: str):
    return subprocess.Popen(
        [str(Path(stack.env["PATH"].split(os.pathsep)[0]) / "ansible-playbook"),
         str(Path(__file__).resolve().parents[2] / playbook), "-i", str(cmd_inventory), *args],
        env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def wait_for(condition, what: str, deadline_s: float = 120) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---- a backup during a deploy ---------------------------------------------------------------

def test_a_backup_during_a_deploy_waits_and_holds_one_runs_state(stack, tmp_path):
    """Started once the deploy has written the new files (compose up and the seed still to
    come): the backup must hold the new files *and* the new Redis, never a mix."""
    host = stack.hosts[0]
    before = file_value(stack, host)
    new = before + 111.0
    set_position(stack.inventory, new)
    backups = tmp_path / "backups"
    # a config change recreates the app: the deploy spends a while in compose up
    deploy = start(stack.inventory, stack)
    try:
        wait_for(lambda: file_value(stack, host) == new, "the deploy's write call")
        backup = ansible_playbook("playbooks/backup.yml", stack.inventory, "-e",
                                  f"flashmm_backup_dir={backups}", "-e",
                                  "flashmm_lock_timeout=300", env=stack.env)
    finally:
        out, _ = deploy.communicate(timeout=600)
    assert deploy.returncode == 0, out[-3000:]
    ok(backup)
    (host_dir,) = [p for p in backups.rglob(host) if (p / "redis.json").is_file()]
    dump = json.loads((host_dir / "redis.json").read_text())
    stored = {e["key"]: e for e in (dump["keys"] if isinstance(dump, dict) else dump)}
    value = stored[KEY]["values"][0]
    in_redis = json.loads(value if stored[KEY].get("encoding") == "utf-8"
                          else base64.b64decode(value))
    in_file = yaml.safe_load((host_dir / "files" / FILE).read_text())["trading"]["max_position_usdc"]
    assert (in_file, in_redis) == (new, new)
    assert_whole(stack)


# ---- two deploys at once --------------------------------------------------------------------

def test_two_deploys_of_different_checkouts_at_once_never_break_a_host(stack, tmp_path):
    other = tmp_path / "other-checkout"
    shutil.copytree(stack.inventory, other)
    outcomes = []
    for round_ in range(2):
        set_position(stack.inventory, 1000.0 + round_)
        set_position(other, 2000.0 + round_)
        procs = [start(stack.inventory, stack), start(other, stack)]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        for proc, out in zip(procs, outs):
            # each run finishes, or stops on a host another run holds, saying which
            assert "docker compose up failed" not in out, out[-4000:]
            assert proc.returncode == 0 or "is held by deploy run" in out, out[-4000:]
            outcomes.append(proc.returncode)
        assert_whole(stack)
    # whatever happened, one plain run of either checkout converges every host
    ok(stack.deploy())
    converged(stack)
    assert_whole(stack)


# ---- a killed deploy ------------------------------------------------------------------------

def test_a_deploy_killed_mid_run_leaves_a_lease_the_next_run_breaks_at_once(stack):
    host = stack.hosts[0]
    set_position(stack.inventory, file_value(stack, host) + 7.0)
    deploy = start(stack.inventory, stack)
    lease = stack.root(host) / LEASE_FILE
    try:
        wait_for(lease.exists, "the deploy's lease")
    finally:
        os.killpg(deploy.pid, signal.SIGKILL)
        deploy.wait(timeout=60)
    assert lease.exists()
    held = json.loads(lease.read_text())
    assert held["action"] == "deploy" and held["run_id"]
    # the next run knows that run is gone: it takes the host over without waiting
    proc = ok(stack.deploy("-e", "flashmm_lock_timeout=5"))
    assert f"took over the host from deploy run {held['run_id']}" in proc.stdout + proc.stderr
    assert not lease.exists()
    assert_whole(stack)
    converged(stack)


# ---- a lease of another controller's run ----------------------------------------------------

def test_a_lease_of_another_controller_blocks_naming_it_until_broken_by_name(stack):
    host = stack.hosts[1]
    lease = stack.root(host) / LEASE_FILE
    lease.write_text(json.dumps({"run_id": "0ddba11c0ffee", "action": "restore",
                                 "owner": "alice@elsewhere", "started": "2026-12-03T09:00:00Z",
                                 "expires": time.time() + 3600}))
    try:
        before = {h: (stack.root(h) / FILE).read_bytes() for h in stack.hosts}
        set_position(stack.inventory, file_value(stack, host) + 3.0)
        proc = stack.deploy("-e", "flashmm_lock_timeout=1")
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "held by restore run 0ddba11c0ffee by alice@elsewhere" in out, out[-3000:]
        assert "flashmm_lock_break=0ddba11c0ffee" in out
        assert (stack.root(host) / FILE).read_bytes() == before[host]
        ok(stack.deploy("-e", "flashmm_lock_break=0ddba11c0ffee"))
        assert not lease.exists()
    finally:
        lease.unlink(missing_ok=True)
    assert_whole(stack)
    converged(stack)


# ---- a checkout older than a rotation -------------------------------------------------------

def test_a_deploy_from_a_checkout_older_than_a_rotation_is_refused(stack, tmp_path):
    stale = tmp_path / "stale-checkout"
    shutil.copytree(stack.inventory, stale)
    ok(ansible_playbook("playbooks/rotate_secrets.yml", stack.inventory, "-e", "rotate=redis",
                        env=stack.env))
    files = {h: {p.name: p.read_bytes() for p in (stack.root(h),) for p in [p / ".env"]}
             for h in stack.hosts}
    proc = ansible_playbook("deploy.yml", stale, env=stack.env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "vault in this checkout is older" in out and "git pull" in out, out[-3000:]
    for host in stack.hosts:
        assert (stack.root(host) / ".env").read_bytes() == files[host][".env"]
        # the rotated password still opens every host's Redis: nobody was locked out
        assert stack.redis(host).ping()
    proc = ansible_playbook("playbooks/backup.yml", stack.inventory, "-e",
                            f"flashmm_backup_dir={tmp_path / 'b'}", env=stack.env)
    ok(proc)
    converged(stack)
    assert_whole(stack)


# ---- kill -9 of a rotation and of a restore ---------------------------------------------------

def test_a_rotation_killed_mid_roll_then_one_plain_deploy_leaves_every_host_whole(stack, tmp_path):
    """The vault says the rotation is rolling (both passwords valid); a plain deploy of the same
    checkout rolls what the vault holds, and the rotation's rerun finishes it."""
    host = stack.hosts[0]
    lease = stack.root(host) / LEASE_FILE
    rotation = start(stack.inventory, stack, "playbooks/rotate_secrets.yml", "-e", "rotate=redis")
    try:
        wait_for(lease.exists, "the rotation's lease on the first host", deadline_s=300)
    finally:
        os.killpg(rotation.pid, signal.SIGKILL)
        rotation.wait(timeout=60)
    proc = ok(stack.deploy("-e", "flashmm_lock_timeout=5"))
    assert "a secret rotation is in progress: redis" in proc.stdout + proc.stderr
    assert_whole(stack)
    for h in stack.hosts:                   # the password in the vault opens every Redis
        assert stack.redis(h).ping()
    ok(ansible_playbook("playbooks/rotate_secrets.yml", stack.inventory, "-e", "rotate=redis",
                        env=stack.env))
    converged(stack)
    assert_whole(stack)


def test_a_restore_killed_mid_run_then_one_plain_deploy_leaves_every_host_whole(stack, tmp_path):
    backups = tmp_path / "backups"
    ok(ansible_playbook("playbooks/backup.yml", stack.inventory, "-e",
                        f"flashmm_backup_dir={backups}", env=stack.env))
    host = stack.hosts[0]
    set_position(stack.inventory, file_value(stack, host) + 5.0)
    ok(stack.deploy())                      # the restore has something to put back
    lease = stack.root(host) / LEASE_FILE
    restore = start(stack.inventory, stack, "playbooks/restore.yml", "-e", "backup_id=latest",
                    "-e", f"flashmm_backup_dir={backups}")
    try:
        wait_for(lease.exists, "the restore's lease", deadline_s=300)
    finally:
        os.killpg(restore.pid, signal.SIGKILL)
        restore.wait(timeout=60)
    ok(stack.deploy("-e", "flashmm_lock_timeout=5"))
    assert_whole(stack)
    converged(stack)
