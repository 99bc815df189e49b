"""Real hosts over SSH (issue 19): a fleet of three targets (scripts/fleet.sh: sshd on
127.0.0.1, the user flashmm with a throwaway key, sudo), each running its stack on the test
engine.  Deploy, rerun, rotation, backup and restore all go over SSH with become and
pipelining; ansible-runner runs the project the way AWX does; a target that goes down midway
leaves the others to finish (or stops the run, as configured), keeps its previous files, is
named in the recap and in the closing summary line, and the next run finishes it; a target
down before the run is reported once.  One module-scoped fleet, three targets."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from fleet_support import Fleet
from stack_support import ok
from support import ROOT, VENV_BIN, ansible_playbook, read_vault, recap, snapshot_files

pytestmark = pytest.mark.integration

ENV_FILE = "config/environments/local.yml"
PLAN_TASK = "Validate and render every host on the controller"
WRITE_TASK = "Write the FlashMM files of this host"
SUMMARY = re.compile(r"^flashmm: \d+ of \d+ host\(s\) not finished: .*$", re.M)


@pytest.fixture(scope="module")
def fleet(docker_engine, tmp_path_factory):
    fleet = Fleet(docker_engine, tmp_path_factory.mktemp("fleet"), count=3, spare=1)
    try:
        fleet.start()
        fleet.first = fleet.deploy()
        yield fleet
    finally:
        fleet.down()


def changed(proc: subprocess.CompletedProcess) -> dict[str, int]:
    return {h: c["changed"] for h, c in recap(proc.stdout).items() if h != "localhost"}


def files(fleet: Fleet, host: str) -> dict[str, tuple[int, bytes]]:
    """What deploy wrote on the host (not its bookkeeping under .flashmm/)."""
    return {p: v for p, v in snapshot_files(fleet.root(host)).items()
            if not p.startswith(".flashmm/")}


def quote_frequency(fleet: Fleet, host: str) -> float:
    return yaml.safe_load((fleet.root(host) / ENV_FILE).read_text())["trading"]["quote_frequency_hz"]


def set_quote_frequency(fleet: Fleet, value: float) -> None:
    fleet.edit_env_layer(lambda c: c["trading"].update(quote_frequency_hz=value))


def ad_hoc(fleet: Fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ansible"), "all", "-i", str(fleet.inventory), *args],
                          cwd=ROOT, env=fleet.env, capture_output=True, text=True, timeout=120)


def test_deploy_over_ssh_as_a_user_with_become_then_rerun_changes_nothing(fleet):
    first = ok(fleet.first)
    assert set(changed(first)) == set(fleet.hosts)
    assert all(n >= 1 for n in changed(first).values()), first.stdout[-3000:]
    assert not SUMMARY.search(first.stdout)                 # every host finished: no summary
    for host in fleet.hosts:
        containers = fleet.containers(host)
        assert {s: c["status"] for s, c in containers.items()} == \
            {"flashmm": "running", "redis": "running"}, containers
        assert fleet.wait_health(host)["status"] == "ok"
        env = fleet.root(host) / ".env"
        assert env.stat().st_mode & 0o777 == 0o600 and env.stat().st_uid == 0
    # the connection: SSH to each target's own port as flashmm, root through sudo
    as_root = ok(ad_hoc(fleet, "-m", "ansible.builtin.command", "-a", "id -un"))
    as_user = ok(ad_hoc(fleet, "-m", "ansible.builtin.command", "-a", "id -un",
                        "-e", "ansible_become=false"))
    for host in fleet.hosts:
        assert re.search(rf"^{host} \| CHANGED \| rc=0 >>\nroot$", as_root.stdout, re.M)
        assert re.search(rf"^{host} \| CHANGED \| rc=0 >>\nflashmm$", as_user.stdout, re.M)
    rerun = ok(fleet.deploy())
    assert changed(rerun) == {h: 0 for h in fleet.hosts}, rerun.stdout[-3000:]


def test_fleet_start_again_resizes_and_keeps_the_running_targets(fleet):
    ids = {h: fleet.engine.docker("inspect", "--format", "{{.Id}}", fleet.container(h)).stdout
           for h in fleet.hosts}
    fleet.start(4)
    hosts = yaml.safe_load((fleet.inventory / "hosts.yml").read_text())
    assert list(hosts["all"]["children"]["flashmm"]["hosts"]) == [*fleet.hosts, "fleet-04"]
    fleet.start(3)
    hosts = yaml.safe_load((fleet.inventory / "hosts.yml").read_text())
    assert list(hosts["all"]["children"]["flashmm"]["hosts"]) == fleet.hosts
    names = fleet.engine.docker("ps", "-a", "--filter", f"label=io.flashmm.fleet={fleet.name}",
                                "--format", "{{.Names}}").stdout.split()
    assert sorted(names) == sorted(fleet.container(h) for h in fleet.hosts)
    assert {h: fleet.engine.docker("inspect", "--format", "{{.Id}}", fleet.container(h)).stdout
            for h in fleet.hosts} == ids


def test_ansible_runner_deploys_the_fleet_as_awx_would(fleet, tmp_path):
    """``ansible-runner run`` with the project as its project directory: the project's
    ansible.cfg (found in the working directory), the inventory, and one setting in
    env/envvars (the project's callback plugins: the runner sets its own path)."""
    fleet.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=250.0))
    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    (private / "env" / "envvars").write_text(yaml.safe_dump(
        {"ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "callback_plugins")}))
    env = {k: v for k, v in fleet.env.items()
           if k not in ("ANSIBLE_CONFIG", "ANSIBLE_VAULT_IDENTITY_LIST")}
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-runner"), "run", str(private), "--project-dir", str(ROOT),
         "-p", "deploy.yml", "--inventory", str(fleet.inventory), "--ident", "deploy"],
        env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    artifacts = private / "artifacts" / "deploy"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert (artifacts / "status").read_text() == "successful"
    stats = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    stats = [e["event_data"] for e in stats if e.get("event") == "playbook_on_stats"]
    assert len(stats) == 1 and set(stats[0]["changed"]) == set(fleet.hosts), stats
    for host in fleet.hosts:
        config = yaml.safe_load((fleet.root(host) / ENV_FILE).read_text())
        assert config["trading"]["max_position_usdc"] == 250.0
        assert fleet.wait_health(host)["status"] == "ok"
    rerun = ok(fleet.deploy())                  # the same deploy, as ansible-playbook runs it
    assert changed(rerun) == {h: 0 for h in fleet.hosts}, rerun.stdout[-3000:]


def test_rotation_over_ssh_rolls_every_target(fleet):
    before = fleet.vault()
    proc = ansible_playbook("playbooks/rotate_secrets.yml", fleet.inventory, "-e", "rotate=generated",
                            "-e", "flashmm_serial=3", env=fleet.env, timeout=900)
    ok(proc)
    after = fleet.vault()
    for name in ("api_auth_token", "secret_key"):
        assert after[name] != before[name], name
    for host in fleet.hosts:
        env = (fleet.root(host) / ".env").read_text()
        assert f"API_AUTH_TOKEN='{after['api_auth_token']}'" in env
        assert before["api_auth_token"] not in env
        assert fleet.wait_health(host)["status"] == "ok"
    assert after["api_auth_token"] not in proc.stdout + proc.stderr
    # each roll of each target measured /health over SSH (the detached watcher reported)
    flat = " ".join(proc.stdout.split())
    for host in fleet.hosts:
        assert flat.count(f"{host}: /health unavailable for") == 2, proc.stdout[-3000:]
    assert "watcher gave no result" not in flat
    rerun = ok(fleet.deploy())
    assert changed(rerun) == {h: 0 for h in fleet.hosts}, rerun.stdout[-3000:]


def test_backup_and_restore_over_ssh(fleet, tmp_path):
    where = ("-e", f"flashmm_backup_dir={tmp_path / 'backups'}")
    ok(ansible_playbook("playbooks/backup.yml", fleet.inventory, *where, env=fleet.env))
    [backup] = [p for p in (tmp_path / "backups").rglob("backup.json")]
    assert set(json.loads(backup.read_text())["hosts"]) == set(fleet.hosts)
    host = fleet.hosts[1]
    want = files(fleet, host)
    key = "flashmm:config:trading:quote_frequency_hz"
    value = fleet.redis(host).get(key)
    (fleet.root(host) / ENV_FILE).unlink()                      # lost by hand
    fleet.redis(host).set(key, "9.5")                           # an operator's override
    restore = ok(ansible_playbook("playbooks/restore.yml", fleet.inventory, "-e",
                                  "backup_id=latest", *where, env=fleet.env))
    assert changed(restore)[host] >= 1
    assert files(fleet, host) == want
    assert fleet.redis(host).get(key) == value
    again = ok(ansible_playbook("playbooks/restore.yml", fleet.inventory, "-e",
                                "backup_id=latest", *where, env=fleet.env))
    assert changed(again) == {h: 0 for h in fleet.hosts}, again.stdout[-3000:]


def test_a_target_down_midway_leaves_the_others_to_finish_and_the_rerun_finishes_it(fleet):
    down, up = fleet.hosts[1], [fleet.hosts[0], fleet.hosts[2]]
    set_quote_frequency(fleet, 2.0)
    before = files(fleet, down)
    # the target goes down once the controller pass has validated every host
    proc = fleet.deploy(env=fleet.stopping_env(down, after=fleet.hosts[0], task=PLAN_TASK))
    assert proc.returncode != 0
    assert fleet.target_state(down) == "exited"
    counts = recap(proc.stdout)
    assert counts[down]["unreachable"] == 1
    assert all(counts[h]["failed"] == 0 and counts[h]["changed"] >= 1 for h in up), counts
    assert all(quote_frequency(fleet, h) == 2.0 for h in up)
    assert files(fleet, down) == before                        # as it was, byte for byte
    [summary] = SUMMARY.findall(proc.stdout)
    assert f"{down} (unreachable at \"{WRITE_TASK}\"" in summary, summary
    assert all(h not in summary for h in up), summary

    fleet.start()                                              # the stopped target again
    rerun = ok(fleet.deploy())
    assert changed(rerun)[down] >= 1 and all(changed(rerun)[h] == 0 for h in up), rerun.stdout
    assert quote_frequency(fleet, down) == 2.0
    assert not SUMMARY.search(rerun.stdout)


def test_a_target_down_stops_a_serial_run_when_configured(fleet):
    first, down, last = fleet.hosts
    set_quote_frequency(fleet, 3.0)
    before = {h: files(fleet, h) for h in fleet.hosts}
    proc = fleet.deploy("-e", "flashmm_serial=1", "-e", "flashmm_max_fail_percentage=0",
                        env=fleet.stopping_env(down, after=first, task=WRITE_TASK))
    assert proc.returncode != 0
    counts = recap(proc.stdout)
    assert counts[down]["unreachable"] == 1 and last not in counts, counts
    assert quote_frequency(fleet, first) == 3.0                # batch 1 was written
    assert files(fleet, down) == before[down]                  # the failed host: as it was
    assert files(fleet, last) == before[last]                  # the run stopped before it
    [summary] = SUMMARY.findall(proc.stdout)
    assert f"{down} (unreachable at \"{WRITE_TASK}\"" in summary
    assert f"not reached: {last}" in summary
    assert '"Start the stacks", "Seed the runtime layers"' in summary

    fleet.start()
    written = files(fleet, first)
    rerun = ok(fleet.deploy("-e", "flashmm_serial=1", "-e", "flashmm_max_fail_percentage=0"))
    assert changed(rerun)[down] >= 1 and changed(rerun)[last] >= 1
    assert files(fleet, first) == written                      # its files stay; its stack
    assert all(quote_frequency(fleet, h) == 3.0 for h in fleet.hosts)   # ... catches up
    again = ok(fleet.deploy())
    assert changed(again) == {h: 0 for h in fleet.hosts}, again.stdout[-3000:]


def test_a_target_down_before_the_run_is_reported_once(fleet):
    down = fleet.hosts[2]
    fleet.stop_target(down)
    proc = fleet.deploy()
    assert proc.returncode == 4                                # Ansible's "unreachable"
    output = proc.stdout + proc.stderr
    assert output.count("UNREACHABLE!") == 1, output
    assert len(re.findall(rf"^fatal: \[{down}\]", output, re.M)) == 1
    [summary] = SUMMARY.findall(proc.stdout)
    assert summary.startswith(f"flashmm: 1 of 3 host(s) not finished: {down} (unreachable")
    assert f"port {fleet.ssh_port(down)}: Connection refused" in summary
    assert changed(proc) == {fleet.hosts[0]: 0, fleet.hosts[1]: 0, down: 0}, proc.stdout[-4000:]
    fleet.start()
    ok(fleet.deploy())


def test_no_secret_reaches_the_fleet_runs_output(fleet):
    """The runs above printed no secret of the vault (checked on the first deploy's -vvv)."""
    proc = ok(fleet.deploy("-vvv"))
    secrets = [v for v in read_vault(fleet.vault_path)["flashmm_secrets"].values()
               if isinstance(v, str) and len(v) >= 8]
    assert secrets
    output = proc.stdout + proc.stderr
    assert all(s not in output for s in secrets)
    assert "ESTABLISH SSH CONNECTION FOR USER: flashmm" in output
    assert os.sep + "id_ed25519" in output                    # the fleet's own key
