"""Restoring a backup taken before a secret rotation, on the real stack (2 hosts, the stand-in
app and a password-protected Redis each): deploy, app records under the encryption key, an
operator override, backup; then the Redis password and the encryption key are rotated
(records migrated to the new key).

* ``restore --check`` of that backup succeeds (no WRONGPASS) and changes nothing.
* The restore keeps the vault's secrets: Redis keeps accepting the vault's password, every
  restored record decrypts with the vault's current key alone (TTL kept), deploy reports
  changed=0, backup and a further rotation work, a second restore changes nothing, and no
  secret appears in clear in the -vvv output.
* With ``-e restore_secrets=true`` the hosts get the backup's secrets and the vault holds
  them too (generation bumped), a following deploy reports changed=0.

The tests share one stack and run in file order."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.fernet import Fernet, InvalidToken
from dotenv import dotenv_values

from stack_support import APP_USER, Stack, ok
from redis_support import value_of
from support import ansible_playbook, read_vault, recap, snapshot_files

pytestmark = pytest.mark.integration

OVERRIDE_KEY = "flashmm:config:trading:quote_frequency_hz"
RECORDS = {f"flashmm:secure:rec:{i}": f"exchange secret {i}".encode() for i in range(5)}
TTL_RECORD = "flashmm:secure:rec:0"


@pytest.fixture(scope="module")
def site(docker_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restore-secrets")
    stack = Stack(docker_engine, tmp, hosts=2, label="rsec")
    stack.backups = tmp / "backups"
    try:
        ok(stack.deploy())
        before = stack.vault()
        key = Fernet(before["encryption_key"].encode())
        for host in stack.hosts:
            stack.wait_health(host)
            client = stack.redis(host)
            client.set(OVERRIDE_KEY, "2.5")                 # an operator's runtime change
            for name, plain in RECORDS.items():
                client.set(name, key.encrypt(plain))
            client.expire(TTL_RECORD, 3600)
        ok(play(stack, "playbooks/backup.yml"))
        stack.backup_secrets = dict(before)
        stack.backup_id = sorted(p.name for p in (stack.backups / "local").iterdir()
                                 if not p.name.startswith("."))[-1]
        # the secrets rotate after the backup (the records move to the new key): one run of
        # both kinds (each host rolled twice, not four times)
        ok(rotate(stack, "redis,encryption", "after-backup"))
        after = stack.vault()
        assert after["redis_password"] != before["redis_password"]
        assert after["encryption_key"] != before["encryption_key"]
        yield stack
    finally:
        stack.down()


def play(stack: Stack, playbook: str, *args: str):
    return ansible_playbook(playbook, stack.inventory, "-e",
                            f"flashmm_backup_dir={stack.backups}", *args, env=stack.env)


def restore(stack: Stack, *args: str):
    return play(stack, "playbooks/restore.yml", "-e", f"backup_id={stack.backup_id}", *args)


def rotate(stack: Stack, kind: str, rotation_id: str, *args: str):
    return ansible_playbook("playbooks/rotate_secrets.yml", stack.inventory, "-e",
                            f"rotate={kind}", "-e", f"rotation_id={rotation_id}", *args,
                            env=stack.env)


def auth(stack: Stack, host: str, password: str) -> bytes:
    return stack.raw_redis(host, ["AUTH", APP_USER, password])[0]


def state(stack: Stack) -> dict:
    """Every host's files (mode, sha256) and Redis keys (type, value, has a TTL), the vault."""
    out: dict = {"vault": stack.vault_path.read_bytes()}
    for host in stack.hosts:
        files = {p: (mode, hashlib.sha256(data).hexdigest())
                 for p, (mode, data) in snapshot_files(stack.root(host)).items()
                 if not p.startswith(".flashmm/")}
        client = stack.redis(host)
        keys = {}
        for key in client.scan_iter("*"):
            kind = client.type(key)
            keys[key] = (kind, value_of(client, key, kind),
                         client.pttl(key) > 0)
        out[host] = (files, keys)
    return out


def canaries(*vaults: dict) -> set[str]:
    return {v for vault in vaults for v in vault.values() if isinstance(v, str) and len(v) >= 8}


def records_under(stack: Stack, host: str, key: str) -> dict[str, bytes | None]:
    """name -> plaintext of each record that ``key`` alone decrypts (None: it does not)."""
    f = Fernet(key.encode())
    client = stack.redis(host)
    out = {}
    for name in RECORDS:
        try:
            out[name] = f.decrypt(client.get(name).encode())
        except (InvalidToken, AttributeError):
            out[name] = None
    return out


def test_check_of_a_restore_from_before_a_rotation_succeeds_and_changes_nothing(site):
    for host in site.hosts:
        site.redis(host).set(OVERRIDE_KEY, "4.0")           # something to restore
    before = state(site)
    proc = restore(site, "--check", "--diff", "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "WRONGPASS" not in out
    assert f"{OVERRIDE_KEY} = string" in out                # the diff shows the real change
    assert state(site) == before
    assert not [c for c in canaries(site.backup_secrets, site.vault()) if c in out]


def test_restore_keeps_the_vaults_secrets_and_every_record_readable(site):
    vault = site.vault()
    old = site.backup_secrets
    redis_ids = {h: site.containers(h)["redis"]["id"] for h in site.hosts}
    proc = restore(site, "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert site.vault() == vault                            # the vault keeps its secrets
    for host in site.hosts:
        env = dotenv_values(site.root(host) / ".env")
        assert env["REDIS_PASSWORD"] == vault["redis_password"]
        assert env["ENCRYPTION_KEY"] == vault["encryption_key"]
        assert old["redis_password"] not in env["REDIS_URL"]
        assert auth(site, host, vault["redis_password"]) == b"+OK"
        assert auth(site, host, old["redis_password"]).startswith(b"-WRONGPASS")
        assert site.containers(host)["redis"]["id"] == redis_ids[host]   # not restarted
        assert site.redis(host).get(OVERRIDE_KEY) == "2.5"              # the backup's value
        # every restored record decrypts with the vault's current key alone, TTL kept
        assert records_under(site, host, vault["encryption_key"]) == RECORDS
        assert 0 < site.redis(host).ttl(TTL_RECORD) <= 3600
        assert site.redis(host).ttl("flashmm:secure:rec:1") == -1
        site.wait_health(host)
        status, secure = site.get(host, "/secure")
        assert status == 200 and (secure["readable"], secure["unreadable"]) == (5, 0), secure
    assert not [c for c in canaries(old, vault) if c in out]

    again = restore(site)
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), again.stdout[-3000:]
    check = restore(site, "--check")
    assert check.returncode == 0 and all(c["changed"] == 0
                                         for c in recap(check.stdout).values()), check.stdout[-3000:]
    deploy = site.deploy()
    assert deploy.returncode == 0, deploy.stdout[-5000:]
    assert all(c["changed"] == 0 for c in recap(deploy.stdout).values()), deploy.stdout[-3000:]
    ok(play(site, "playbooks/backup.yml"))
    ok(rotate(site, "redis", "after-restore-redis"))
    now = site.vault()
    assert now["redis_password"] != vault["redis_password"]
    for host in site.hosts:
        assert auth(site, host, now["redis_password"]) == b"+OK"
        assert records_under(site, host, now["encryption_key"]) == RECORDS


def test_restore_secrets_puts_the_backups_secrets_on_the_hosts_and_into_the_vault(site):
    old = site.backup_secrets
    vault_before = site.vault_path.read_bytes()
    hosts_before = state(site)
    check = restore(site, "-e", "restore_secrets=true", "--check", "-vvv")
    assert check.returncode == 0, check.stdout[-6000:] + check.stderr[-2000:]
    assert "WRONGPASS" not in check.stdout
    assert state(site) == hosts_before and site.vault_path.read_bytes() == vault_before
    current = site.vault()

    proc = restore(site, "-e", "restore_secrets=true", "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    data = read_vault(site.vault_path)
    now = data["flashmm_secrets"]
    for name in ("redis_password", "encryption_key", "secret_key", "api_auth_token"):
        assert now[name] == old[name], name
    assert "redis_password_previous" not in now and "old_encryption_key" not in now
    assert data["flashmm_secrets_generation"]["id"] == f"restore {site.backup_id}: secrets"
    for host in site.hosts:
        # the hosts run the vault's new generation (a deploy of this vault is not stale)
        recorded = json.loads((site.root(host) / ".flashmm" / "generation.json").read_text())
        assert recorded == data["flashmm_secrets_generation"]
        env = dotenv_values(site.root(host) / ".env")
        assert (env["REDIS_PASSWORD"], env["ENCRYPTION_KEY"]) == (old["redis_password"],
                                                                  old["encryption_key"])
        assert auth(site, host, old["redis_password"]) == b"+OK"
        assert auth(site, host, current["redis_password"]).startswith(b"-WRONGPASS")
        assert records_under(site, host, old["encryption_key"]) == RECORDS
        site.wait_health(host)
    assert not [c for c in canaries(old, current) if c in out]

    deploy = site.deploy()
    assert deploy.returncode == 0, deploy.stdout[-5000:]
    assert all(c["changed"] == 0 for c in recap(deploy.stdout).values()), deploy.stdout[-3000:]
    vault_after = site.vault_path.read_bytes()
    again = restore(site, "-e", "restore_secrets=true")
    assert again.returncode == 0, again.stdout[-5000:]
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), again.stdout[-3000:]
    assert site.vault_path.read_bytes() == vault_after
