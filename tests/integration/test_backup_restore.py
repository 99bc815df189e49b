"""playbooks/backup.yml and playbooks/restore.yml on a generated local inventory without a stack
(two hosts, each its own database on the session's redis-server), and the ``flashmm-config
backup`` / ``export-k8s`` commands over the backups they write.  The same round trip against
the real compose stack: test_backup_stack.py.

One module-scoped site: deployed once, an operator override and app records of every Redis
type set, a baseline backup taken at -vvv.  Tests that change the hosts start from the
baseline put back (files and keys, without a run) or work on a copy of the backups directory."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.backup import backup_store
from flashmm_deploy.hostside.filesync import HostLock
from flashmm_deploy.plan.sandbox import make_local_inventory
from redis_support import SiteSnapshot
from support import (INVENTORIES, allocate_dbs, ansible_playbook, flashmm_config, read_vault,
                     VENV_BIN, recap, run, snapshot_files, tool_env, vault_keys)

pytestmark = pytest.mark.integration

HOSTS = ("sandbox-01", "sandbox-02")
OVERRIDE = ("flashmm:config:trading:max_position_usdc", "250.0")


def redis_state(client) -> dict[str, tuple]:
    """key -> (type, value, has a TTL) of every key: what a restore must reproduce."""
    out = {}
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value = {"string": client.get, "hash": client.hgetall,
                 "list": lambda k: client.lrange(k, 0, -1),
                 "set": lambda k: sorted(client.smembers(k)),
                 "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}[kind](key)
        out[key] = (kind, value, client.pttl(key) > 0)
    return out


class Site:
    def __init__(self, tmp: Path, server):
        self.server = server
        self.dbs = allocate_dbs(server, len(HOSTS))
        self.sandbox = tmp / "sandbox"
        self.backups = tmp / "backups"
        self.inventory = make_local_inventory(INVENTORIES / "local", tmp / "inventory",
                                              hosts=len(HOSTS), redis_port=server.port,
                                              first_db=self.dbs[0], sandbox=self.sandbox)
        self.env = tool_env()

    def client(self, host: str):
        return self.server.client(self.dbs[HOSTS.index(host)])

    def play(self, playbook: str, *args: str, backups: Path | None = None, env=None):
        return ansible_playbook(playbook, self.inventory, "-e",
                                f"flashmm_backup_dir={backups or self.backups}", *args,
                                env=env or self.env)

    def backup(self, *args: str, **kw):
        return self.play("playbooks/backup.yml", *args, **kw)

    def restore(self, backup_id: str = "latest", *args: str, **kw):
        return self.play("playbooks/restore.yml", "-e", f"backup_id={backup_id}", *args, **kw)

    def snapshot(self):
        files = {h: {p: (mode, hashlib.sha256(data).hexdigest())
                     for p, (mode, data) in snapshot_files(self.sandbox / h).items()
                     if not p.startswith(".flashmm/")} for h in HOSTS}
        return files, {h: redis_state(self.client(h)) for h in HOSTS}

    def secrets(self) -> list[str]:
        values = read_vault(self.inventory / "group_vars" / "all" / "vault.yml")["flashmm_secrets"]
        return [v for v in values.values() if isinstance(v, str) and len(v) >= 8]

    def env_dir(self, backups: Path | None = None) -> Path:
        return (backups or self.backups) / "local"


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return proc


def failed(proc):
    assert proc.returncode != 0, proc.stdout[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory, redis_server):
    site = Site(tmp_path_factory.mktemp("backup"), redis_server)
    ok(ansible_playbook("deploy.yml", site.inventory, env=site.env))
    site.token = Fernet(Fernet.generate_key()).encrypt(b"app record").decode()
    for host in HOSTS:
        c = site.client(host)
        c.set(*OVERRIDE)                                       # an operator's runtime change
        c.set("flashmm:secure:api_key", site.token, ex=3600)   # an app record with a TTL
        c.hset("flashmm:secure:book", mapping={"a": "x", "b": "y"})
        c.rpush("flashmm:meta:list", "1", "2", "1")
        c.sadd("flashmm:meta:set", "p", "q")
        c.zadd("flashmm:meta:zset", {"m": 1.5, "n": -2})
        c.set("unrelated:key", "not backed up")
    site.before = site.snapshot()
    site.first = ok(site.backup("-vvv"))
    site.baseline = backup_store.list_backups(site.env_dir())[-1].backup_id
    site.saved = SiteSnapshot(redis_server, site.dbs, [site.sandbox],
                              tmp_path_factory.mktemp("backup-baseline"))
    yield site
    for db in site.dbs:         # keys with a TTL would tick in later tests' snapshots
        redis_server.client(db).flushdb()


@pytest.fixture
def baseline(site):
    """The site as the baseline backup holds it, put back if a test changed it: files and keys
    as they were (a restore.yml run as the reset cost ~1.3 s of CPU per test)."""
    if site.snapshot() != site.before:
        site.saved.restore()
    assert site.snapshot() == site.before
    return site


def tampered_copy(site, tmp_path) -> tuple[Path, Path]:
    copy = tmp_path / "backups"
    shutil.copytree(site.backups, copy)
    return copy, copy / "local" / site.baseline


# ---- the round trip ----------------------------------------------------------------------

def test_backup_holds_every_deployed_file_and_key_and_changes_nothing_on_hosts(site):
    assert recap(site.first.stdout)["sandbox-02"]["changed"] == 0
    path = site.env_dir() / site.baseline
    assert sorted(p.name for p in path.iterdir()) == ["backup.json", *HOSTS]
    for host in HOSTS:
        manifest = json.loads((path / host / "manifest.json").read_text())
        assert manifest["environment"] == "local" and manifest["host"] == host
        assert manifest["backup_id"] == site.baseline and manifest["toolkit"]["commit"]
        assert manifest["config_version"] == 1
        assert set(manifest["files"]) == {"config/environments/local.yml", ".env",
                                          "docker-compose.yml", "redis/seed.lua",
                                          "redis/users.acl"}
        assert {p for p, f in manifest["files"].items() if f["secret"]} == {".env",
                                                                           "redis/users.acl"}
        for rel, (mode, digest) in site.before[0][host].items():
            assert manifest["files"][rel]["sha256"] == digest
            assert manifest["files"][rel]["mode"] == f"{mode:04o}"
        assert manifest["redis"]["secure_keys"] == 2
        assert manifest["redis"]["keys"] == len(site.before[1][host]) - 3   # secure + unrelated
    for p in path.rglob("*"):
        assert p.stat().st_mode & 0o077 == 0, p      # 0700 directories, 0600 files


def test_no_secret_in_clear_under_backups_or_in_vvv_output(site):
    canaries = site.secrets() + [site.token]
    assert len(canaries) >= 4
    blobs = [p.read_bytes() for p in site.backups.rglob("*") if p.is_file()]
    restore = ok(site.restore(site.baseline, "-vvv", "--diff"))
    outputs = site.first.stdout + site.first.stderr + restore.stdout + restore.stderr
    for canary in canaries:
        assert all(canary.encode() not in blob for blob in blobs)
        assert canary not in outputs
    # positive control: the vault file does hold them
    sealed = (site.env_dir() / site.baseline / "sandbox-01" / "secrets.vault").read_bytes()
    assert site.token.encode() in vault_keys().decrypt(sealed, "test")


def test_wipe_then_restore_is_exact_and_a_second_restore_changes_nothing(baseline):
    site = baseline
    for host in HOSTS:
        shutil.rmtree(site.sandbox / host)
        client = site.client(host)
        for key in client.scan_iter("flashmm:*"):
            client.delete(key)
    ok(site.restore())
    files, redis = site.snapshot()
    assert files == site.before[0]                 # every file: sha256 and mode
    for host in HOSTS:
        want, have = dict(site.before[1][host]), dict(redis[host])
        version = want.pop("flashmm:meta:version")[1], have.pop("flashmm:meta:version")[1]
        assert have == want                        # type, value, TTL or none
        assert int(version[1]) == int(version[0]) + 1   # moved forward, never back
        assert 3500_000 < site.client(host).pttl("flashmm:secure:api_key") <= 3600_000
    again = ok(site.restore())
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), again.stdout


def test_restore_publishes_the_changed_config_keys(baseline):
    site = baseline
    client = site.client("sandbox-01")
    pubsub = site.client("sandbox-01").pubsub()
    pubsub.subscribe("flashmm:config:updates", "flashmm:meta:updates")
    client.set(OVERRIDE[0], "999.0")
    ok(site.restore(site.baseline, "-e", "flashmm_restore_hosts=sandbox-01"))
    messages = []
    while (m := pubsub.get_message(timeout=1.0)) is not None:
        if m["type"] == "message":
            messages.append((m["channel"], m["data"]))
    assert ("flashmm:config:updates", "trading.max_position_usdc") in messages
    summary = json.loads(dict(messages)["flashmm:meta:updates"])
    assert summary["source"] == "restore" and summary["backup"] == site.baseline
    assert client.get(OVERRIDE[0]) == OVERRIDE[1]


def test_check_diff_shows_the_change_with_secrets_masked_and_writes_nothing(baseline):
    site = baseline
    client = site.client("sandbox-02")
    client.set(OVERRIDE[0], "777.0")
    client.set("flashmm:secure:api_key", "changed-record")
    env = site.sandbox / "sandbox-02" / ".env"
    original = env.read_text()
    secret = site.secrets()[0]
    env.write_text(original.replace("APP_NAME='FlashMM'", "APP_NAME='Changed'"))
    before = site.snapshot()
    out = ok(site.restore(site.baseline, "--check", "--diff"))
    assert site.snapshot() == before
    assert "APP_NAME='Changed'" in out.stdout and "APP_NAME='FlashMM'" in out.stdout
    assert '"777.0"' in out.stdout and '"250.0"' in out.stdout
    assert "flashmm:secure:api_key = <redacted>" in out.stdout, out.stdout[-3000:]
    assert secret not in out.stdout and "changed-record" not in out.stdout
    assert recap(out.stdout)["sandbox-02"]["changed"] == 1
    assert recap(out.stdout)["sandbox-01"]["changed"] == 0


def test_restore_of_a_subset_touches_only_those_hosts(baseline):
    site = baseline
    for host in HOSTS:
        site.client(host).set(OVERRIDE[0], "5.0")
    ok(site.restore(site.baseline, "-e", "flashmm_restore_hosts=sandbox-02"))
    assert site.client("sandbox-02").get(OVERRIDE[0]) == OVERRIDE[1]
    assert site.client("sandbox-01").get(OVERRIDE[0]) == "5.0"


# ---- refused before any host is touched --------------------------------------------------

def _flip(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _reseal(path: Path, site) -> None:
    """Re-encrypt a host's secrets.vault with another 'local' password and fix the sums: a
    backup made on a machine whose local vault password differs."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    sealed = path / "sandbox-01" / "secrets.vault"
    plain = vault_keys().decrypt(sealed.read_bytes(), "test")
    other = VaultSecret(b"another-password")
    new = VaultLib([("local", other)]).encrypt(plain, secret=other, vault_id="local")
    sealed.write_bytes(new)
    manifest_path = path / "sandbox-01" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["secrets"].update(size=len(new), sha256=hashlib.sha256(new).hexdigest())
    manifest_path.write_text(json.dumps(manifest))
    index = json.loads((path / "backup.json").read_text())
    index["hosts"]["sandbox-01"]["manifest_sha256"] = hashlib.sha256(
        manifest_path.read_bytes()).hexdigest()
    (path / "backup.json").write_text(json.dumps(index))


def _other_environment(path: Path, site) -> None:
    for p in [path / "backup.json", *(path / h / "manifest.json" for h in HOSTS)]:
        data = json.loads(p.read_text())
        data["environment"] = "development"
        p.write_text(json.dumps(data))


TAMPERING = {
    "flipped byte in a config file": (
        lambda path, site: _flip(path / "sandbox-02" / "files" / "docker-compose.yml"),
        "sandbox-02/files/docker-compose.yml: sha256 differs"),
    "flipped byte in the encrypted secrets": (
        lambda path, site: _flip(path / "sandbox-01" / "secrets.vault", 200),
        "sandbox-01/secrets.vault: sha256 differs"),
    "missing file": (
        lambda path, site: (path / "sandbox-01" / "files" / "redis" / "seed.lua").unlink(),
        "sandbox-01/files/redis/seed.lua: missing"),
    "missing manifest": (
        lambda path, site: (path / "sandbox-02" / "manifest.json").unlink(),
        "sandbox-02/manifest.json: missing"),
    "manifest from another environment": (
        _other_environment, "a backup of environment 'development'; the inventory's hosts are "
                            "'local'"),
    "wrong vault password": (
        _reseal, "sandbox-01/secrets.vault: cannot decrypt for vault id 'local'"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_corrupted_or_mismatched_backup_is_refused_with_nothing_changed(baseline, tmp_path,
                                                                          case):
    site = baseline
    for host in HOSTS:                         # so that a restore would have work to do
        site.client(host).set(OVERRIDE[0], "42.0")
    (site.sandbox / "sandbox-01" / "redis" / "seed.lua").write_text("-- edited\n")
    before = site.snapshot()
    copy, path = tampered_copy(site, tmp_path)
    tamper, expected = TAMPERING[case]
    tamper(path, site)
    out = failed(site.restore(site.baseline, backups=copy))
    assert expected in out, out[-3000:]
    assert "nothing restored" in out
    assert site.snapshot() == before
    verify = flashmm_config("backup", "verify", str(site.inventory), site.baseline,
                            "--backup-dir", str(copy))
    assert verify.returncode == 1 and expected in verify.stderr


def test_an_unknown_backup_id_or_host_is_refused(baseline):
    site = baseline
    out = failed(site.restore("20200101T000000Z"))
    assert "no such backup" in out
    out = failed(site.restore(site.baseline, "-e", "flashmm_restore_hosts=sandbox-09"))
    assert "sandbox-09 not in the inventory" in out
    out = failed(site.play("playbooks/restore.yml"))
    assert "give -e backup_id=<id> or -e backup_id=latest" in out


# ---- retention and the lock --------------------------------------------------------------

def test_retention_prunes_exactly_the_oldest_after_a_successful_backup(site, tmp_path):
    backups = tmp_path / "backups"
    taken = []
    for _ in range(3):
        ok(site.backup("-e", "flashmm_backup_keep=2", backups=backups))
        taken.append(backup_store.list_backups(site.env_dir(backups))[-1].backup_id)
    assert len(set(taken)) == 3
    assert [b.backup_id for b in backup_store.list_backups(site.env_dir(backups))] == taken[1:]
    # a failed backup (a host without a deploy) keeps and prunes nothing
    shutil.move(site.sandbox / "sandbox-02", tmp_path / "moved")
    try:
        out = failed(site.backup("-e", "flashmm_backup_keep=1", backups=backups))
    finally:
        shutil.move(tmp_path / "moved", site.sandbox / "sandbox-02")
    assert "sandbox-02: no such directory" in out
    assert [b.backup_id for b in backup_store.list_backups(site.env_dir(backups))] == taken[1:]


def test_a_backup_while_another_run_holds_a_host_fails_clearly(site, tmp_path):
    with HostLock(str(site.sandbox / "sandbox-01"), "deploy-in-progress", 1):
        out = failed(site.backup("-e", "flashmm_lock_timeout=1", backups=tmp_path / "b"))
    assert "is held by run deploy-in-progress" in out and "flashmm_lock_timeout" in out
    assert backup_store.list_backups(tmp_path / "b" / "local") == []


def test_a_backup_waits_for_a_run_that_releases_the_host_in_time(site, tmp_path):
    import threading

    held, release = threading.Event(), threading.Event()

    def hold():
        with HostLock(str(site.sandbox / "sandbox-02"), "short-deploy", 1):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    start = time.monotonic()
    threading.Timer(3.0, release.set).start()
    try:
        ok(site.backup("-e", "flashmm_lock_timeout=30", backups=tmp_path / "b"))
    finally:
        release.set()
        holder.join()
    assert time.monotonic() - start >= 3.0          # it waited for the holder
    assert len(backup_store.list_backups(tmp_path / "b" / "local")) == 1


# ---- the CLI -----------------------------------------------------------------------------

def test_cli_lists_verifies_and_shows_backups(baseline):
    site = baseline
    listed = flashmm_config("backup", "list", str(site.inventory), "--backup-dir",
                            str(site.backups))
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(site.baseline))
    assert line.split()[2] == "2" and line.endswith("ok")
    verified = flashmm_config("backup", "verify", str(site.inventory), "latest",
                              "--backup-dir", str(site.backups))
    assert verified.returncode == 0 and "sums and decryption checked" in verified.stdout
    site.client("sandbox-01").set(OVERRIDE[0], "250.0")
    shown = flashmm_config("backup", "show", str(site.inventory), site.baseline,
                           "--backup-dir", str(site.backups))
    assert shown.returncode == 0, shown.stderr
    assert "config/environments/local.yml: same" in shown.stdout
    # the operator's override is in the backup, not in the inventory
    assert 'redis flashmm:config:trading:max_position_usdc: backup "250.0", inventory "100.0"' \
        in shown.stdout
    for secret in site.secrets():
        assert secret not in shown.stdout + listed.stdout + verified.stdout


def test_export_k8s_writes_a_valid_configmap_and_secret(baseline, tmp_path):
    import kubernetes_validate

    site = baseline
    for source in ((), ("--backup", "latest")):
        out = tmp_path / "k8s.yaml"
        proc = flashmm_config("export-k8s", str(site.inventory), "--host", "sandbox-01",
                              "--namespace", "FlashMM_Prod", "-o", str(out), *source,
                              "--backup-dir", str(site.backups))
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_mode & 0o777 == 0o600
        config_map, secret = yaml.safe_load_all(out.read_text())
        for obj in (config_map, secret):
            kubernetes_validate.validate(obj, "1.37", strict=True)
            assert obj["metadata"]["namespace"] == "flashmm-prod"
        assert config_map["metadata"]["name"] == "flashmm-sandbox-01-config"
        deployed = (site.sandbox / "sandbox-01" / "config" / "environments" / "local.yml")
        assert config_map["data"] == {"local.yml": deployed.read_text()}
        env = dict(line.split("=", 1) for line in
                   (site.sandbox / "sandbox-01" / ".env").read_text().splitlines()
                   if line and not line.startswith("#"))
        decoded = {k: base64.b64decode(v, validate=True).decode()
                   for k, v in secret["data"].items()}
        assert decoded == {k: v.strip("'") for k, v in env.items()}


def test_the_roles_run_alone_through_their_main_entry_point(baseline, tmp_path):
    site = baseline
    where = ("-e", f"flashmm_backup_dir={tmp_path / 'b'}")
    playbooks = {}
    for role in ("flashmm_backup", "flashmm_restore"):
        playbooks[role] = tmp_path / f"{role}.yml"
        playbooks[role].write_text(yaml.safe_dump([{"name": f"The {role} role alone",
                                                    "hosts": "all", "gather_facts": False,
                                                    "roles": [role]}]))
    ok(ansible_playbook(str(playbooks["flashmm_backup"]), site.inventory, *where, env=site.env))
    site.client("sandbox-01").set(OVERRIDE[0], "1.0")
    out = ok(ansible_playbook(str(playbooks["flashmm_restore"]), site.inventory, *where,
                              "-e", "backup_id=latest", env=site.env))
    assert "Validating arguments against arg spec 'main'" in out.stdout
    assert site.client("sandbox-01").get(OVERRIDE[0]) == OVERRIDE[1]


def test_the_restore_module_refuses_bad_connection_options_by_name_and_writes_nothing(tmp_path):
    """The module as a task runs it: a Redis username without a password is the module's own
    one-line failure (kind input), not an exception, and no root is made."""
    root = tmp_path / "host"
    args = {"root": str(root), "files": [], "redis": {"port": 1, "username": "deploy",
                                                      "backup_id": "b1", "entries": []}}
    proc = run([str(VENV_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
                "-e", "ansible_python_interpreter=/usr/bin/python3", "-m", "flashmm_restore",
                "-a", json.dumps(args)])
    assert proc.returncode != 0
    assert "flashmm_restore: a redis username needs a password; nothing restored" in proc.stdout
    assert "kind: input" in proc.stdout
    assert not root.exists()
