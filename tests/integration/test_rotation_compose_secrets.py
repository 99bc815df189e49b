"""Secret rotations with compose secrets on (testnet's and production's setting: the app reads
every secret from /run/secrets), against the real stack: zero failed client operations, the app
recreated once per roll and Redis never, the new values in the files the app's container mounts
and none in docker inspect.  (Without compose secrets, and across several hosts:
test_rotation.py.)"""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from rotation_support import ClientLoop, auth_reply, env_of, rotate, vault
from stack_support import AppIdentities, Stack, ok
from support import recap

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files_stack(docker_engine, tmp_path_factory):
    """A second stack, with compose secrets on (testnet's and production's setting): the app
    reads every secret from /run/secrets.  One host: what differs from the stack above is per
    host (the files the app's container mounts); rolling several hosts is the tests' above."""
    s = Stack(docker_engine, tmp_path_factory.mktemp("rotation-files"), hosts=1,
              label="rotfile")
    s.set_group_var("flashmm_stack_compose_secrets", True)
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def test_rotations_with_compose_secrets_restart_the_app_once_per_roll(files_stack):
    """redis, then api: zero failed client operations (the loop reads the password from the
    host's secret file), the app recreated once per host and roll and Redis never, the new
    values in the files the app's container mounts, none in docker inspect."""
    stack = files_stack
    old = vault(stack)["flashmm_secrets"]["redis_password"]
    with ClientLoop(stack) as loop, ExitStack() as watching:
        seen = {h: watching.enter_context(AppIdentities(stack, h)) for h in stack.hosts}
        proc = rotate(stack, "redis")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert loop.running_at_end and loop.ops >= 100, loop.ops
    assert loop.failures == 0, loop.errors[:5]
    restarts = {h: (s.restarts("flashmm"), s.restarts("redis")) for h, s in seen.items()}
    print(f"redis rotation, compose secrets: {loop.ops} client operations, {loop.failures} "
          f"failed; (app, Redis) recreated per host: {restarts}")
    assert all(r == (1, 0) for r in restarts.values()), restarts
    new = vault(stack)["flashmm_secrets"]["redis_password"]
    for host in stack.hosts:
        assert "REDIS_PASSWORD" not in dotenv_values(stack.root(host) / ".env")
        assert env_of(stack, host)["REDIS_PASSWORD"] == new != old
        assert auth_reply(stack, host, old).startswith(b"-WRONGPASS")
        assert auth_reply(stack, host, new) == b"+OK"
        stack.wait_health(host)

    keys_file = Path(stack.inventory) / "new-keys.yml"
    new_key = "cam-" + secrets.token_urlsafe(24)
    keys_file.write_text(yaml.safe_dump({"cambrian_api_key": new_key}))
    with ExitStack() as watching:
        seen = {h: watching.enter_context(AppIdentities(stack, h)) for h in stack.hosts}
        proc = rotate(stack, "api", "-e", f"rotate_new_values_file={keys_file}")
    keys_file.unlink()
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    restarts = {h: (s.restarts("flashmm"), s.restarts("redis")) for h, s in seen.items()}
    assert all(r == (1, 0) for r in restarts.values()), restarts
    values = {v for v in vault(stack)["flashmm_secrets"].values() if len(v) >= 8} | {old}
    for host in stack.hosts:
        app = stack.containers(host)["flashmm"]["name"]
        seen_in_app = stack.engine.docker("exec", app, "cat",
                                          "/run/secrets/cambrian_api_key").stdout
        assert seen_in_app == new_key, "the app's container does not see the new key"
        inspect = stack.engine.docker("inspect", app).stdout
        assert not [v for v in values if v in inspect], "a secret value in docker inspect"
        stack.wait_health(host)
    again = rotate(stack, "api")
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), recap(again.stdout)
