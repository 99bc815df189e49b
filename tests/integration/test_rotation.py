"""playbooks/rotate_secrets.yml against the real stack (2 hosts, the stand-in app and a
password-protected Redis per host): Redis with a client loop counting failed operations,
the encryption key with 10,000 records and a throttled (resumed) migration, API and generated
secrets with the measured downtime, an injected failure midway, reruns that change nothing,
and no secret in -vvv output.

The tests share one stack and run in file order; each leaves it healthy and every rotation
finished."""

from __future__ import annotations

import secrets
import time

import pytest
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.hostside.redis_acl import DEPLOY_USER
from rotation_support import ClientLoop, auth_reply, downtimes, env_of, rotate, vault
from stack_support import Stack, ok
from support import ansible_playbook, recap

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    s = Stack(docker_engine, tmp_path_factory.mktemp("rotation"), hosts=2, label="rotate")
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def test_redis_password_rotates_with_zero_failed_operations(stack):
    before = vault(stack)["flashmm_secrets"]
    old, old_deploy = before["redis_password"], before["redis_deploy_password"]
    redis_ids = {h: stack.containers(h)["redis"]["id"] for h in stack.hosts}
    redis_started = {h: stack.containers(h)["redis"]["started_at"] for h in stack.hosts}
    with ClientLoop(stack) as loop:
        proc = rotate(stack, "redis", "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    after = vault(stack)
    new = after["flashmm_secrets"]["redis_password"]
    assert new != old and "redis_password_previous" not in after["flashmm_secrets"]
    new_deploy = after["flashmm_secrets"]["redis_deploy_password"]      # both users rolled
    assert new_deploy != old_deploy
    assert "redis_deploy_password_previous" not in after["flashmm_secrets"]
    assert after["flashmm_rotations"]["redis"] == {"id": "test-redis", "state": "done"}
    # no secret in the -vvv output, whatever the step; nor in any host file but .env, nor in
    # Redis (the ACL file holds digests)
    values = set({**before, **after["flashmm_secrets"]}.values())
    assert not [v for v in values if v in out]
    assert not secrets_outside_env(stack, values)
    assert loop.running_at_end, f"the loop ended ({loop.ops} operations) before the rotation"
    assert loop.ops >= 200, loop.ops
    assert loop.failures == 0, loop.errors[:5]
    assert loop.app_failures and all(v == 0 for v in loop.app_failures.values()), \
        loop.app_failures
    print(f"redis rotation: {loop.ops} client operations, {loop.failures} failed; app "
          f"processes seen: {len(loop.app_failures)}; downtimes {downtimes(proc.stdout)}")
    for host in stack.hosts:
        assert env_of(stack, host)["REDIS_PASSWORD"] == new
        assert env_of(stack, host)["REDIS_PASSWORD_PREVIOUS"] == ""
        assert auth_reply(stack, host, old).startswith(b"-WRONGPASS")
        assert auth_reply(stack, host, new) == b"+OK"
        assert auth_reply(stack, host, old_deploy, DEPLOY_USER).startswith(b"-WRONGPASS")
        assert auth_reply(stack, host, new_deploy, DEPLOY_USER) == b"+OK"
        assert env_of(stack, host)["REDIS_DEPLOY_PASSWORD"] == ""      # never the app's
        c = stack.containers(host)["redis"]
        assert (c["id"], c["started_at"]) == (redis_ids[host], redis_started[host]), \
            "Redis was restarted: its clients were dropped"
    # a restart of Redis reads the ACL file: only the new password
    host = stack.hosts[0]
    stack.engine.docker("restart", stack.containers(host)["redis"]["name"])
    for _ in range(100):
        if auth_reply_safe(stack, host, new) == b"+OK":
            break
        time.sleep(0.1)
    assert auth_reply(stack, host, old).startswith(b"-WRONGPASS")
    assert auth_reply(stack, host, new) == b"+OK"
    stack.wait_health(host)
    again = rotate(stack, "redis")
    assert again.returncode == 0, again.stdout[-3000:]
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), recap(again.stdout)


def secrets_outside_env(stack: Stack, values: set[str]) -> list[str]:
    """Where any of ``values`` appears: host files other than .env and the app's secret
    files (secrets/, compose secrets), and Redis values."""
    found = []
    for host in stack.hosts:
        for path in stack.root(host).rglob("*"):
            if path.is_file() and path.name != ".env" and path.parent.name != "secrets":
                data = path.read_bytes()
                found += [f"{path}" for v in values if v.encode() in data]
        client = stack.redis(host)
        for key in client.scan_iter("*"):
            if client.type(key) == "string":
                found += [f"{host} redis {key}" for v in values if v in (client.get(key) or "")]
    return found


def auth_reply_safe(stack: Stack, host: str, password: str) -> bytes:
    try:
        return auth_reply(stack, host, password)
    except OSError:
        return b""


def write_records(stack: Stack, host: str, key: str, count: int) -> dict[str, bytes]:
    f = Fernet(key.encode())
    client = stack.redis(host)
    plain = {f"flashmm:secure:rec:{i}": f"record {i} {secrets.token_hex(4)}".encode()
             for i in range(count)}
    pipe = client.pipeline(transaction=False)
    for name, value in plain.items():
        pipe.set(name, f.encrypt(value))
    for i in range(0, count, 1000):          # a few records with a TTL, which must survive
        pipe.expire(f"flashmm:secure:rec:{i}", 86400)
    pipe.execute()
    return plain


def test_encryption_key_rotation_moves_10000_records_throttled_then_resumed(stack):
    host = stack.hosts[0]
    old_key = vault(stack)["flashmm_secrets"]["encryption_key"]
    plain = write_records(stack, host, old_key, 10_000)
    first = rotate(stack, "encryption", "-e", "rotate_max_records=4000", "-e", "rotate_serial=2")
    out = first.stdout + first.stderr
    assert first.returncode != 0
    assert "6000 record(s) on sandbox-01 are still readable only with the old encryption key" \
        in " ".join(out.split()), out[-3000:]
    mid = vault(stack)["flashmm_secrets"]
    new_key = mid["encryption_key"]
    assert new_key != old_key and mid["old_encryption_key"] == old_key
    env = env_of(stack, host)
    assert (env["ENCRYPTION_KEY"], env["OLD_ENCRYPTION_KEY"]) == (new_key, old_key)
    # /secure decrypts all 10,000 records with both keys: seconds under a load of 30, more
    # than stack.get's default 5 s timeout (seen twice on a clean clone's parallel run)
    stack.wait_health(host)
    status, body = stack.get(host, "/secure", timeout=120)
    assert status == 200 and body["readable"] == 10_000 and body["unreadable"] == 0
    assert body["readable_with_old_key_only"] == 6000

    second = rotate(stack, "encryption", "-e", "rotate_serial=2")
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-2000:]
    moved = [line for line in second.stdout.splitlines() if "record(s) re-encrypted" in line]
    assert any("sandbox-01: 6000 record(s) re-encrypted" in line for line in moved), moved
    print("encryption rotation:", moved)
    final = vault(stack)["flashmm_secrets"]
    assert final["encryption_key"] == new_key and "old_encryption_key" not in final
    assert env_of(stack, host)["OLD_ENCRYPTION_KEY"] == ""
    alone = Fernet(new_key.encode())
    client = stack.redis(host)
    raw = dict(zip(plain, client.mget(list(plain))))
    assert all(alone.decrypt(raw[name].encode()) == value for name, value in plain.items())
    assert 0 < client.ttl("flashmm:secure:rec:1000") <= 86400
    assert client.ttl("flashmm:secure:rec:1") == -1
    status, body = stack.get(host, "/secure", timeout=120)
    assert body["readable"] == 10_000 and body["readable_with_old_key_only"] == 0
    third = rotate(stack, "encryption", "-e", "rotate_serial=2")
    assert all(r["changed"] == 0 for r in recap(third.stdout).values()), recap(third.stdout)
    client.delete(*plain)


def test_api_and_generated_secrets_roll_with_the_app_restart_only(stack, tmp_path):
    before = vault(stack)["flashmm_secrets"]
    new_keys = {"cambrian_api_key": "cam-" + secrets.token_urlsafe(24),
                "cambrian_secret_key": "cs-" + secrets.token_urlsafe(24)}
    keys_file = tmp_path / "new-keys.yml"
    keys_file.write_text(yaml.safe_dump({"rotate_new_values": new_keys}))
    identities = stack.identities()
    proc = rotate(stack, "api,generated", "-e", f"@{keys_file}", "-e", "rotate_serial=2", "-vvv")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    after = vault(stack)["flashmm_secrets"]
    for name in ("secret_key", "api_auth_token"):
        assert after[name] != before[name]
    assert {k: after[k] for k in new_keys} == new_keys
    for host in stack.hosts:
        env = env_of(stack, host)
        assert env["CAMBRIAN_API_KEY"] == new_keys["cambrian_api_key"]
        assert env["SECRET_KEY"] == after["secret_key"]
        now = stack.containers(host)
        assert now["redis"]["id"] == identities[host]["redis"][0]
        assert now["flashmm"]["id"] != identities[host]["flashmm"][0]
        stack.wait_health(host)
    measured = downtimes(proc.stdout)       # figures for the notes: no timed assertion here
    assert len(measured) == 2 * len(stack.hosts) and all(m >= 0 for m in measured), measured
    print("api+generated rotation downtime per host and roll (s):", measured)
    out = proc.stdout + proc.stderr
    values = set(new_keys.values()) | {before[k] for k in ("secret_key", "api_auth_token")} | \
        {after[k] for k in ("secret_key", "api_auth_token")}
    assert not [v for v in values if v in out]
    assert not secrets_outside_env(stack, values)


def test_a_failure_midway_leaves_every_host_with_a_working_secret(stack):
    first, second = stack.hosts
    old = vault(stack)["flashmm_secrets"]["redis_password"]
    env_file = stack.root(second) / ".env"
    saved = env_file.read_bytes()
    env_file.unlink()
    env_file.mkdir()                # the second host's files cannot be written
    try:
        proc = rotate(stack, "redis", "-e", "rotation_id=midway")
    finally:
        env_file.rmdir()
        env_file.write_bytes(saved)
        env_file.chmod(0o600)
    assert proc.returncode != 0
    mid = vault(stack)["flashmm_secrets"]
    new = mid["redis_password"]
    assert mid["redis_password_previous"] == old            # both kept until the end
    assert auth_reply(stack, first, new) == b"+OK"           # rolled host: new works
    assert auth_reply(stack, first, old) == b"+OK"           # ... and old still does
    assert env_of(stack, second)["REDIS_PASSWORD"] == old
    assert auth_reply(stack, second, old) == b"+OK"          # untouched host works as it was
    stack.wait_health(first)
    stack.wait_health(second)
    resumed = rotate(stack, "redis", "-e", "rotation_id=midway")
    assert resumed.returncode == 0, resumed.stdout[-5000:]
    assert "redis: resuming rotation" in resumed.stdout
    assert vault(stack)["flashmm_secrets"]["redis_password"] == new
    for host in stack.hosts:
        assert auth_reply(stack, host, old).startswith(b"-WRONGPASS")
        assert auth_reply(stack, host, new) == b"+OK"


def test_bad_requests_are_refused_and_check_mode_changes_nothing(stack):
    before = stack.vault_path.read_bytes()
    for args, message in ((("-e", "rotate=passwords"), "rotate='passwords': choose one"),
                          ((), "rotate='': choose one")):
        proc = ansible_playbook("playbooks/rotate_secrets.yml", stack.inventory, *args,
                                env=stack.env)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert stack.vault_path.read_bytes() == before
    files = {h: (stack.root(h) / ".env").read_bytes() for h in stack.hosts}
    check = rotate(stack, "all", "--check", "--diff", "-vvv")
    out = check.stdout + check.stderr
    assert check.returncode == 0, out[-3000:]
    assert "check mode: the vault would renew the secrets above" in out
    assert stack.vault_path.read_bytes() == before
    assert {h: (stack.root(h) / ".env").read_bytes() for h in stack.hosts} == files
    assert not any(v in out for v in vault(stack)["flashmm_secrets"].values())
    for host in stack.hosts:
        stack.wait_health(host)
