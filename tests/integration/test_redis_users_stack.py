"""The Redis users on the real stack: a stack deployed by the code before the app and deploy
users existed (one all-powerful ``default``) is brought to them by a plain deploy, live
(Redis not restarted), once the vault has the new secret (deploy refuses before, naming the
command that adds it); afterwards the app works as its own user, which gets NOPERM for what it
must not do, ``default`` cannot log in, a rerun changes nothing and no password is printed at
-vvv."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import redis

from flashmm_deploy.hostside.redis_acl import APP_USER, DEPLOY_USER
from stack_support import Stack
from support import ROOT, flashmm_config, read_vault, recap, tool_env, write_vault

pytestmark = pytest.mark.integration

# The last commit whose deploy wrote the single all-powerful default user
BEFORE_USERS = "6623614"


def old_checkout(dest: Path) -> Path:
    """The project as it was before the users (git archive: no worktree of the shared repo)."""
    data = subprocess.run(["git", "archive", "--format=tar", BEFORE_USERS], cwd=ROOT,
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest)            # noqa: S202 - our own repository's tree
    return dest


def old_deploy(stack: Stack, old: Path) -> subprocess.CompletedProcess:
    """ansible-playbook deploy.yml of the old checkout (its plugins import its own package)."""
    env = tool_env(DOCKER_HOST=stack.engine.host, ANSIBLE_CONFIG=str(old / "ansible.cfg"),
                   ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
                   PYTHONPATH=str(old / "src"))
    return subprocess.run([str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" /
                           "ansible-playbook"), str(old / "deploy.yml"), "-i",
                           str(stack.inventory)], cwd=old, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("users")
    s = Stack(docker_engine, tmp, hosts=1, label="users")
    try:
        yield s
    finally:
        s.down()


def without(stack: Stack, *names: str) -> dict:
    data = read_vault(stack.vault_path)
    removed = {n: data["flashmm_secrets"].pop(n) for n in names}
    write_vault(stack.vault_path, data)
    return removed


def test_an_old_stack_upgrades_live_and_the_app_user_is_confined(stack, tmp_path):
    host = stack.hosts[0]
    without(stack, "redis_deploy_password")
    proc = old_deploy(stack, old_checkout(tmp_path / "old"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    acl_path = stack.root(host) / "redis" / "users.acl"
    assert acl_path.read_text().startswith("user default on #")      # the old single user
    stack.wait_health(host)
    # the old app's way in: default with the app's password, a connection kept open
    legacy = redis.Redis(host="127.0.0.1", port=stack.redis_port(host),
                         password=stack.password(), socket_timeout=5, protocol=2)
    assert legacy.ping()

    # the new code refuses a vault without deploy's user's password, before any change
    before = acl_path.read_text()
    refused = stack.deploy()
    assert refused.returncode != 0
    out = " ".join((refused.stdout + refused.stderr).split())
    assert "secrets.redis_deploy_password" in out and "flashmm-config secrets generate" in out, \
        out[-3000:]
    assert acl_path.read_text() == before
    app_password = stack.password()
    gen = flashmm_config("secrets", "generate", str(stack.inventory))
    assert gen.returncode == 0, gen.stdout + gen.stderr
    vault = read_vault(stack.vault_path)["flashmm_secrets"]
    assert vault["redis_password"] == app_password and len(vault["redis_deploy_password"]) >= 32

    redis_before = stack.containers(host)["redis"]
    upgraded = stack.deploy("-vvv")
    assert upgraded.returncode == 0, upgraded.stdout[-5000:] + upgraded.stderr[-2000:]
    everything = upgraded.stdout + upgraded.stderr
    assert not [n for n, v in vault.items() if isinstance(v, str) and len(v) > 8
                and v in everything]                               # no secret at -vvv
    redis_after = stack.containers(host)["redis"]
    assert (redis_after["id"], redis_after["started_at"]) == \
        (redis_before["id"], redis_before["started_at"]), "Redis was restarted"
    acl = acl_path.read_text()
    assert acl.startswith("user default off ") and f"user {APP_USER} on #" in acl
    assert f"user {DEPLOY_USER} on #" in acl
    env = (stack.root(host) / ".env").read_text()
    assert f"REDIS_URL='redis://{APP_USER}:" in env and vault["redis_deploy_password"] not in env
    stack.wait_health(host)
    again = stack.deploy()              # the upgrade is done: a rerun changes nothing
    assert again.returncode == 0, again.stdout[-3000:]
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), recap(again.stdout)

    # default: nobody logs in as it any more
    for password in (app_password, vault["redis_deploy_password"]):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=stack.redis_port(host), password=password,
                        socket_timeout=5, protocol=2).ping()
    legacy.close()
    # the app's user: its keys, nothing else
    app = stack.redis(host)
    assert app.get("flashmm:meta:version") is not None
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"),
                    ("CONFIG", "SET", "maxmemory", "1"), ("ACL", "LIST"),
                    ("ACL", "SETUSER", APP_USER, "+@all"), ("SHUTDOWN", "NOSAVE"),
                    ("KEYS", "*"), ("GET", "other"),
                    ("SET", "other", "1"), ("PUBLISH", "other", "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*command)
    # the app and the operator's runtime commands work as the app's user
    got = flashmm_config("runtime", "set", str(stack.inventory), "trading.quote_frequency_hz",
                         "2.5", "--host", host)
    assert got.returncode == 0, got.stdout + got.stderr
    assert app.get("flashmm:config:trading:quote_frequency_hz") == "2.5"
    status, body = stack.get(host, "/config")
    assert status == 200 and "2.5" in str(body)
    got = flashmm_config("runtime", "unset", str(stack.inventory), "trading.quote_frequency_hz",
                         "--host", host)
    assert got.returncode == 0, got.stdout + got.stderr
