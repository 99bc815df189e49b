"""Backup and restore against the real stack (the `docker_engine` fixture, the locally built
stand-in app and password-protected Redis): deploy, an operator changes a runtime key, the app
holds an encrypted record with a TTL, backup; then the host directories, the Redis data and the
containers are wiped; restore brings back every file byte for byte with its mode, every Redis
key with its type, value and TTL, and a healthy stack that serves the operator's value; a second
restore changes and restarts nothing.  No vault secret appears in clear under backups/ or in
the -vvv output of either playbook."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from cryptography.fernet import Fernet

from stack_support import APP_USER, Stack, ok
from redis_support import value_of
from support import ansible_playbook, recap, snapshot_files

pytestmark = pytest.mark.integration

SERVICES = {"flashmm", "redis"}
OVERRIDE_KEY, OVERRIDE = "flashmm:config:trading:quote_frequency_hz", "2.5"


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backup-stack")
    stack = Stack(docker_engine, tmp, hosts=2, label="bkp")
    stack.backups = tmp / "backups"
    try:
        yield stack
    finally:
        stack.down()


def play(stack: Stack, playbook: str, *args: str):
    return ansible_playbook(playbook, stack.inventory, *args, env=stack.env)


def healthy(stack: Stack, host: str) -> dict:
    containers = stack.containers(host)
    assert set(containers) == SERVICES, containers
    for service, c in containers.items():
        assert (c["status"], c["health"]) == ("running", "healthy"), (host, service, c)
    assert stack.wait_health(host)["status"] == "ok"
    return containers


def files(stack: Stack, host: str) -> dict[str, tuple[int, str]]:
    return {p: (mode, hashlib.sha256(data).hexdigest())
            for p, (mode, data) in snapshot_files(stack.root(host)).items()
            if not p.startswith(".flashmm/")}


def keys(stack: Stack, host: str) -> dict[str, tuple]:
    client = stack.redis(host)
    out = {}
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value = value_of(client, key, kind)
        out[key] = (kind, value, client.pttl(key))
    return out


def test_backup_wipe_restore_is_exact_on_the_real_stack(stack):
    backups = stack.backups
    where = ("-e", f"flashmm_backup_dir={backups}")
    ok(stack.deploy())
    vault = stack.vault()
    record = Fernet(vault["encryption_key"].encode()).encrypt(b"exchange api key").decode()
    for host in stack.hosts:
        healthy(stack, host)
        client = stack.redis(host)
        client.set(OVERRIDE_KEY, OVERRIDE)                          # an operator's change
        client.set("flashmm:secure:exchange", record, ex=3600)      # the app's record, a TTL
    before = {h: (files(stack, h), keys(stack, h)) for h in stack.hosts}

    backup = ok(play(stack, "playbooks/backup.yml", "-vvv", *where))
    assert all(c["changed"] == 0 for h, c in recap(backup.stdout).items() if h != stack.hosts[0])

    # wipe: containers and their volumes, the host directories
    stack.down()
    for host in stack.hosts:
        assert stack.containers(host) == {}
        shutil.rmtree(stack.root(host))

    restore = ok(play(stack, "playbooks/restore.yml", "-vvv", "-e", "backup_id=latest",
                                       *where))
    for host in stack.hosts:
        healthy(stack, host)
        want_files, want_keys = before[host]
        assert files(stack, host) == want_files            # sha256 and mode of every file
        have = keys(stack, host)
        assert int(have.pop("flashmm:meta:version")[1]) == \
            int(want_keys.pop("flashmm:meta:version")[1]) + 1
        assert {k: v[:2] for k, v in have.items()} == {k: v[:2] for k, v in want_keys.items()}
        for key, (_, _, ttl) in want_keys.items():         # TTL: none stays none, else kept
            assert (have[key][2] > 0) == (ttl > 0), key
            if ttl > 0:
                assert ttl - 120_000 < have[key][2] <= ttl, key
        # the app serves the operator's value from the restored runtime layer
        assert _wait_value(stack, host, "trading.quote_frequency_hz", 2.5) == 2.5
        status, secure = stack.get(host, "/secure")
        assert status == 200 and (secure["records"], secure["readable"]) == (1, 1), secure

    ids = stack.identities()
    again = ok(play(stack, "playbooks/restore.yml", "-e", "backup_id=latest", *where))
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), again.stdout[-3000:]
    assert stack.identities() == ids                        # nothing restarted

    canaries = [v for v in vault.values() if isinstance(v, str) and len(v) >= 8] + [record]
    blobs = [p.read_bytes() for p in backups.rglob("*") if p.is_file()]
    output = backup.stdout + backup.stderr + restore.stdout + restore.stderr
    for canary in canaries:
        assert canary not in output
        assert all(canary.encode() not in blob for blob in blobs)


def test_restore_after_a_password_change_reloads_the_acl_live(stack):
    """The backup's Redis password differs from the running stack's (changed and deployed
    since), and the restore brings the backup's secrets back (-e restore_secrets=true; by
    default the hosts keep the vault's: test_restore_secrets.py): the running Redis serves
    the restored ACL file without a restart, the app gets the restored .env, the keys are
    restored with that password, and the vault holds it too."""
    from support import read_vault, write_vault

    where = ("-e", f"flashmm_backup_dir={stack.backups}")
    old_password = stack.password()
    data = read_vault(stack.vault_path)
    # the first half of a rotation: both passwords valid, the new one in .env
    data["flashmm_secrets"]["redis_password"] = "rotated-" + old_password
    data["flashmm_secrets"]["redis_password_previous"] = old_password
    write_vault(stack.vault_path, data)
    ok(stack.deploy())
    new_password = stack.password()
    for host in stack.hosts:
        healthy(stack, host)
        assert stack.redis(host, new_password).ping()
        stack.redis(host, new_password).set(OVERRIDE_KEY, "7.5")
    # ... finished: the old password dropped
    del data["flashmm_secrets"]["redis_password_previous"]
    write_vault(stack.vault_path, data)
    ok(stack.deploy())
    for host in stack.hosts:
        assert stack.raw_redis(host, ["AUTH", APP_USER, old_password])[0].startswith(b"-WRONGPASS")
    redis_ids = {h: stack.containers(h)["redis"]["id"] for h in stack.hosts}
    out = ok(play(stack, "playbooks/restore.yml", "-e", "backup_id=latest",
                  "-e", "restore_secrets=true", *where))
    assert stack.password() == old_password
    for host in stack.hosts:
        healthy(stack, host)
        assert stack.containers(host)["redis"]["id"] == redis_ids[host]     # not restarted
        assert stack.redis(host, old_password).get(OVERRIDE_KEY) == OVERRIDE
        env = (stack.root(host) / ".env").read_text()
        assert f"REDIS_PASSWORD='{old_password}'" in env
        assert _wait_value(stack, host, "trading.quote_frequency_hz", 2.5) == 2.5
    assert new_password not in out.stdout and old_password not in out.stdout


def _wait_value(stack: Stack, host: str, key: str, want, deadline_s: float = 20):
    import time

    deadline = time.monotonic() + deadline_s
    while True:
        status, body = stack.get(host, "/config")
        value = ((body.get("values") or {}).get(key) or {}).get("value") if status == 200 else None
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.25)
