"""The audit trail end to end without a stack (issue 18 item 4): with
``security.audit_logging`` on, deploy, a runtime set, a rotation, a backup and a restore each
leave their lines in the host's ``.flashmm/audit.log`` (0600), which ``flashmm-config audit``
merges; a changed secret is logged by its variable's name, never its value.  Real
ansible-playbook runs, local hosts, a real redis-server."""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

import pytest
import yaml

from flashmm_deploy.hostside import audit_log
from flashmm_deploy.plan.sandbox import make_local_inventory
from support import (INVENTORIES, allocate_dbs, ansible_playbook, flashmm_config, read_vault,
                     recap, tool_env, write_vault)

pytestmark = pytest.mark.integration
HOSTS = ("sandbox-01", "sandbox-02")


class Site:
    def __init__(self, tmp: Path, server):
        self.server = server
        self.dbs = allocate_dbs(server, len(HOSTS))
        self.sandbox = tmp / "sandbox"
        self.backups = tmp / "backups"
        self.inventory = make_local_inventory(INVENTORIES / "local", tmp / "inventory",
                                              hosts=len(HOSTS), redis_port=server.port,
                                              first_db=self.dbs[0], sandbox=self.sandbox)
        self.vault_path = self.inventory / "group_vars" / "all" / "vault.yml"
        layer = self.inventory / "group_vars" / "all" / "flashmm.yml"
        data = yaml.safe_load(layer.read_text())
        data["flashmm_config"].setdefault("security", {})["audit_logging"] = True
        layer.write_text(yaml.safe_dump(data))
        self.env = tool_env()

    def play(self, playbook: str, *args: str):
        proc = ansible_playbook(playbook, self.inventory, "-e",
                                f"flashmm_backup_dir={self.backups}", *args, env=self.env)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        return proc

    def lines(self, host: str) -> list[dict]:
        entries, bad = audit_log.read(str(self.sandbox / host))
        assert bad == 0
        return entries

    def raw_logs(self) -> str:
        return "".join((self.sandbox / h / audit_log.AUDIT_FILE).read_text() for h in HOSTS)

    def set_secret(self, name: str, value: str) -> None:
        data = read_vault(self.vault_path)
        data["flashmm_secrets"][name] = value
        write_vault(self.vault_path, data)


@pytest.fixture(scope="module")
def site(tmp_path_factory, redis_server) -> Site:
    s = Site(tmp_path_factory.mktemp("audit"), redis_server)
    s.play("deploy.yml")
    return s


def test_a_deploy_logs_each_file_and_the_seed_with_who_and_which_run(site):
    for host in HOSTS:
        log = site.sandbox / host / audit_log.AUDIT_FILE
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        lines = site.lines(host)
        files = {e["file"]: e for e in lines if e["change"] == "file"}
        assert {".env", "docker-compose.yml", "redis/seed.lua"} <= set(files)
        assert all(e["state"] == "created" and e["action"] == "deploy" and e["host"] == host
                   for e in files.values())
        (seed,) = [e for e in lines if e["change"] == "runtime"]
        assert seed["version"] == [0, 1]
        assert "flashmm:config:trading:max_position_usdc" in seed["keys"]
        assert len({e["run"] for e in lines}) == 1 and "@" in lines[0]["actor"]
    # a rerun changes nothing and logs nothing
    before = site.raw_logs()
    rerun = site.play("deploy.yml")
    assert all(c["changed"] == 0 for c in recap(rerun.stdout).values())
    assert site.raw_logs() == before


def test_a_changed_secret_is_logged_by_name_never_by_value(site):
    # every character a secret may hold that a shell, YAML or JSON treats specially
    value = "audit-canary-" + secrets.token_hex(8) + "!\"$`%#&|;<>*?~ {}[]"
    old = read_vault(site.vault_path)["flashmm_secrets"].get("cambrian_api_key")
    site.set_secret("cambrian_api_key", value)
    proc = site.play("deploy.yml", "-vvv")
    for host in HOSTS:
        (env,) = [e for e in site.lines(host)[-3:] if e.get("file") == ".env"]
        assert env["keys"] == ["CAMBRIAN_API_KEY"] and env["state"] == "updated"
    raw = site.raw_logs()
    assert value not in raw and (not old or old not in raw)
    assert value not in proc.stdout + proc.stderr
    audit = flashmm_config("audit", str(site.inventory))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "CAMBRIAN_API_KEY" in audit.stdout and value not in audit.stdout + audit.stderr


def test_a_runtime_set_reaches_the_hosts_log_through_redis(site):
    set_ = flashmm_config("runtime", "set", str(site.inventory), "--host", HOSTS[1],
                          "trading.max_position_usdc", "321.5", "--actor", "alice@desk")
    assert set_.returncode == 0, set_.stdout + set_.stderr
    listed = site.server.client(site.dbs[1]).lrange(audit_log.RUNTIME_LIST, 0, -1)
    assert len(listed) == 1 and "321.5" not in listed[0]          # who and which key, no value

    # drift names who made the override
    drift = flashmm_config("drift", str(site.inventory), "--json")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    override = json.loads(drift.stdout)["hosts"][HOSTS[1]]["runtime"][
        "flashmm:config:trading:max_position_usdc"]
    assert override["state"] == "override" and override["by"] == "alice@desk"
    assert override["at"].endswith("Z")

    proc = flashmm_config("audit", str(site.inventory), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    sets = [e for e in report["entries"] if e["change"] == "runtime set"]
    assert [(e["host"], e["actor"], e["key"]) for e in sets] == [
        (HOSTS[1], "alice@desk", "trading.max_position_usdc")]
    assert sets[0]["version"][1] == sets[0]["version"][0] + 1
    # copied into the host's log once (the list stays: drift reads who made an override)
    assert site.server.client(site.dbs[1]).llen(audit_log.RUNTIME_LIST) == 1
    assert [e["key"] for e in site.lines(HOSTS[1]) if e["change"] == "runtime set"] == [
        "trading.max_position_usdc"]
    again = json.loads(flashmm_config("audit", str(site.inventory), "--json").stdout)
    assert again["entries"] == report["entries"]
    # the merged trail is in time order; --since keeps only what is newer
    times = [e["time"] for e in report["entries"]]
    assert times == sorted(times)
    newest = flashmm_config("audit", str(site.inventory), "--json", "--since", times[-1][:19])
    assert {e["time"] for e in json.loads(newest.stdout)["entries"]} <= set(times[-2:]) | {
        t for t in times if t[:19] == times[-1][:19]}
    bad = flashmm_config("audit", str(site.inventory), "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr


def test_rotation_backup_and_restore_each_leave_their_lines(site):
    site.play("playbooks/rotate_secrets.yml", "-e", "rotate=generated")
    for host in HOSTS:
        rotation = [e for e in site.lines(host) if e.get("action") == "rotation"]
        env = [e for e in rotation if e.get("file") == ".env"]
        assert env and "SECRET_KEY" in {k for e in env for k in e["keys"]}
        assert any(e["change"] == "secrets generation" for e in rotation)
    site.play("playbooks/backup.yml")
    for host in HOSTS:
        (backup,) = [e for e in site.lines(host) if e["change"] == "backup read"]
        assert backup["action"] == "backup" and backup["files"] >= 4
    site.server.client(site.dbs[0]).set("flashmm:config:trading:max_position_usdc", "99.0")
    site.play("playbooks/restore.yml", "-e", "backup_id=latest")
    (restored,) = [e for e in site.lines(HOSTS[0]) if e["change"] == "redis restored"]
    assert restored["action"] == "restore"
    assert "flashmm:config:trading:max_position_usdc" in restored["keys"]
    assert restored["version"][1] > restored["version"][0]
    assert not [e for e in site.lines(HOSTS[1]) if e["change"] == "redis restored"]

