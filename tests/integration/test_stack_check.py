"""Check mode of the stack step, and the escape hatch's restart, against the real engine
(issue 14, cases 6-7): ``deploy.yml --check --diff`` says which container ``docker compose
up`` would create, recreate or start, and why, and reports the stack step ``changed`` exactly
when the real run does; a stopped Redis is "would start", not a compose error; the escape
hatch (``flashmm_stack_redis_restart_on_acl_change``) recreates Redis once, and the next
plain deploy leaves it running.

Each test has a one-host stack of its own (a generated local inventory, its own compose
project, ports chosen free; removed by a finalizer) and asserts on what an operator sees: the
stack task's lines in the output, ``docker inspect`` (container ids and start times), the
files, Redis."""

from __future__ import annotations

import re
import secrets

import pytest

from stack_support import APP_USER, Stack, ok
from support import ansible_playbook, recap, snapshot_files

pytestmark = pytest.mark.integration

STACK_TASK = "Bring the compose stack up and wait until it is healthy"


@pytest.fixture
def stack(docker_engine, tmp_path):
    s = Stack(docker_engine, tmp_path, hosts=1, label="check")
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def task_block(stdout: str, name: str = STACK_TASK) -> str:
    """The lines an operator sees for task ``name``: from its TASK header to the next one."""
    blocks = re.split(r"^(?=TASK \[|PLAY \[|PLAY RECAP)", stdout, flags=re.M)
    found = [b for b in blocks if b.startswith("TASK [") and name in b.splitlines()[0]]
    assert len(found) == 1, f"task {name!r} ran {len(found)} times:\n{stdout[-4000:]}"
    return found[0]


def status(block: str, host: str) -> str:
    """ok, changed, failed, ... of ``host`` in a task's block."""
    m = re.search(r"^(ok|changed|fatal|failed|skipping): \[" + re.escape(host) + r"\]", block,
                  re.M)
    assert m, block
    return m.group(1)


def would(block: str, action: str, container: str) -> str:
    """The check's line about ``container`` (``would <action> <container> (<service>): why``)."""
    lines = [ln for ln in block.splitlines() if ln.startswith(f"would {action} {container} ")]
    assert len(lines) == 1, block
    return lines[0]


def ids(stack: Stack, host: str) -> dict[str, tuple[str, str, str]]:
    """service -> (container id, start time, status)."""
    return {s: (c["id"], c["started_at"], c["status"]) for s, c in stack.containers(host).items()}


def files(stack: Stack, host: str) -> dict:
    return {p: v for p, v in snapshot_files(stack.root(host)).items()
            if "/.flashmm/" not in f"/{p}"}


def healthy(stack: Stack, host: str) -> dict:
    containers = stack.containers(host)
    assert {s: (c["status"], c["health"]) for s, c in containers.items()} == \
        {"flashmm": ("running", "healthy"), "redis": ("running", "healthy")}, containers
    stack.wait_health(host)
    return containers


def test_check_of_a_config_change_names_the_app_container_and_the_run_recreates_it(stack):
    host = stack.hosts[0]
    app, redis = f"{stack.project(host)}-flashmm-1", f"{stack.project(host)}-redis-1"
    before, before_files = ids(stack, host), files(stack, host)
    levels = stack.redis(host).get("flashmm:config:trading:max_quote_levels")
    stack.edit_env_layer(lambda c: c["trading"].update(
        max_quote_levels=c["trading"].get("max_quote_levels", 3) + 1))

    check = ok(stack.deploy("--check", "--diff"))
    block = task_block(check.stdout)
    assert status(block, host) == "changed", block
    line = would(block, "recreate", app)
    assert line.startswith(f"would recreate {app} (flashmm): "), block
    assert "its configuration file changed (io.flashmm.config-sha256)" in line
    assert "its env file .env changes" in line      # TRADING_MAX_QUOTE_LEVELS is there too
    assert redis not in block, block
    assert ids(stack, host) == before and files(stack, host) == before_files
    assert stack.redis(host).get("flashmm:config:trading:max_quote_levels") == levels

    real = ok(stack.deploy())
    assert status(task_block(real.stdout), host) == "changed"
    after = healthy(stack, host)
    assert after["flashmm"]["id"] != before["flashmm"][0]
    assert (after["redis"]["id"], after["redis"]["started_at"]) == before["redis"][:2]

    # converged: check and rerun agree that nothing changes
    block = task_block(ok(stack.deploy("--check", "--diff")).stdout)
    assert status(block, host) == "ok" and "would " not in block, block
    assert recap(ok(stack.deploy()).stdout)[host]["changed"] == 0
    assert {s: v[0] for s, v in ids(stack, host).items()} == \
        {s: c["id"] for s, c in after.items()}


def test_check_with_redis_stopped_says_it_would_start_it_and_changes_nothing(stack):
    host = stack.hosts[0]
    redis = f"{stack.project(host)}-redis-1"
    stack.engine.docker("stop", "--time", "5", redis)
    before, before_files = ids(stack, host), files(stack, host)
    assert before["redis"][2] == "exited"

    check = ok(stack.deploy("--check", "--diff"))
    block = task_block(check.stdout)
    assert status(block, host) == "changed", block
    assert f"would start {redis} (redis): it is exited" in block, block
    assert "flashmm-1" not in block, block
    assert "dependency failed to start" not in check.stdout
    assert ids(stack, host) == before and files(stack, host) == before_files

    # the real run starts it (the same container) and touches nothing else
    real = ok(stack.deploy())
    assert status(task_block(real.stdout), host) == "changed"
    after = healthy(stack, host)
    assert after["redis"]["id"] == before["redis"][0]
    assert (after["flashmm"]["id"], after["flashmm"]["started_at"]) == before["flashmm"][:2]
    assert recap(ok(stack.deploy()).stdout)[host]["changed"] == 0


def test_check_of_a_missing_app_container_says_it_would_create_it(stack):
    host = stack.hosts[0]
    app = f"{stack.project(host)}-flashmm-1"
    stack.engine.docker("rm", "--force", app)
    before = ids(stack, host)
    assert set(before) == {"redis"}
    block = task_block(ok(stack.deploy("--check", "--diff")).stdout)
    assert status(block, host) == "changed", block
    assert f"would create {app} (flashmm): it has no container" in block, block
    assert "-redis-1" not in block, block
    assert ids(stack, host) == before
    ok(stack.deploy())
    after = healthy(stack, host)
    assert (after["redis"]["id"], after["redis"]["started_at"]) == before["redis"][:2]


def test_escape_hatch_restarts_redis_once_and_a_plain_deploy_keeps_it(stack):
    """A Redis whose password is lost (the vault holds another): the hatch recreates Redis
    once, from the new ACL file; the next plain deploy, and the hatch's rerun, leave it
    running.  Check mode with the hatch says it would recreate Redis, and changes nothing."""
    host = stack.hosts[0]
    hatch = ("-e", "flashmm_stack_redis_restart_on_acl_change=true")
    redis_name = f"{stack.project(host)}-redis-1"
    old, new = stack.password(), secrets.token_urlsafe(32)
    stack.set_secret("redis_password", new)
    before = ids(stack, host)

    ok(stack.deploy(*hatch))
    first = healthy(stack, host)
    assert first["redis"]["id"] != before["redis"][0]
    assert stack.raw_redis(host, ["AUTH", APP_USER, new], ["PING"]) == [b"+OK", b"+PONG"]
    assert stack.raw_redis(host, ["AUTH", APP_USER, old])[0].startswith(b"-WRONGPASS")

    # plain deploys, then the hatch again: Redis keeps running, nothing changes
    plain = ok(stack.deploy())
    assert status(task_block(plain.stdout), host) == "ok"
    assert ids(stack, host)["redis"][:2] == (first["redis"]["id"], first["redis"]["started_at"])
    assert recap(plain.stdout)[host]["changed"] == 0
    block = task_block(ok(stack.deploy("--check", "--diff", *hatch)).stdout)
    assert status(block, host) == "ok", block
    assert recap(ok(stack.deploy(*hatch)).stdout)[host]["changed"] == 0
    assert recap(ok(stack.deploy()).stdout)[host]["changed"] == 0
    after = healthy(stack, host)
    assert (after["redis"]["id"], after["redis"]["started_at"]) == \
        (first["redis"]["id"], first["redis"]["started_at"])

    # lost again: check mode says it would recreate Redis, and changes nothing
    newer = secrets.token_urlsafe(32)
    stack.set_secret("redis_password", newer)
    before, before_files = ids(stack, host), files(stack, host)
    check = ok(stack.deploy("--check", "--diff", *hatch))
    block = task_block(check.stdout)
    assert status(block, host) == "changed", block
    assert would(block, "recreate", redis_name).endswith(
        "its ACL file changes and flashmm_stack_redis_restart_on_acl_change is set")
    assert ids(stack, host) == before and files(stack, host) == before_files
    out = check.stdout + check.stderr
    assert new not in out and newer not in out


def test_restore_check_with_redis_stopped_names_what_the_restore_would_start_and_recreate(
        stack, tmp_path):
    """restore.yml's stack step compares with the backup's files: a backup from before a
    config change, restored --check while Redis is stopped, says it would recreate the app
    (the backup's config) and start Redis, and changes nothing; the restore then does that."""
    host = stack.hosts[0]
    app, redis = f"{stack.project(host)}-flashmm-1", f"{stack.project(host)}-redis-1"
    where = ("-e", f"flashmm_backup_dir={tmp_path / 'backups'}")
    ok(ansible_playbook("playbooks/backup.yml", stack.inventory, *where, env=stack.env))
    stack.edit_env_layer(lambda c: c["trading"].update(spread_buffer_bps=7.25))
    ok(stack.deploy())
    stack.engine.docker("stop", "--time", "5", redis)
    before, before_files = ids(stack, host), files(stack, host)
    restore = ("playbooks/restore.yml", stack.inventory, "-e", "backup_id=latest", *where)

    check = ok(ansible_playbook(*restore, "--check", "--diff", env=stack.env))
    block = task_block(check.stdout)
    assert status(block, host) == "changed", block
    assert "its configuration file changed" in would(block, "recreate", app)
    assert would(block, "start", redis).endswith("it is exited")
    assert "dependency failed to start" not in check.stdout
    assert ids(stack, host) == before and files(stack, host) == before_files

    real = ok(ansible_playbook(*restore, env=stack.env))
    assert status(task_block(real.stdout), host) == "changed"
    after = healthy(stack, host)
    assert after["flashmm"]["id"] != before["flashmm"][0]
    assert after["redis"]["id"] == before["redis"][0]
    block = task_block(ok(ansible_playbook(*restore, "--check", "--diff",
                                           env=stack.env)).stdout)
    assert status(block, host) == "ok", block


def test_check_of_an_image_that_is_another_image_now_says_the_app_would_be_recreated(stack):
    """The image name stays, the image behind it changes (rebuilt, retagged): compose
    recreates the container; the check says so first."""
    host = stack.hosts[0]
    app = f"{stack.project(host)}-flashmm-1"
    image = f"localhost/flashmm-standin:stackcheck-{secrets.token_hex(4)}"
    pin = ("-e", f"flashmm_stack_app_image={image}")
    base = stack.containers(host)["flashmm"]["image"]
    stack.engine.docker("tag", base, image)
    try:
        ok(stack.deploy(*pin))
        before = ids(stack, host)
        # another image under the same name: the app's image with one more label
        stack.engine.docker("commit", "--change", "LABEL io.flashmm.test=rebuilt", app, image)

        block = task_block(ok(stack.deploy("--check", "--diff", *pin)).stdout)
        assert status(block, host) == "changed", block
        assert f"image {image} is another image now" in would(block, "recreate", app)
        assert "-redis-1" not in block, block
        assert ids(stack, host) == before

        real = ok(stack.deploy(*pin))
        assert status(task_block(real.stdout), host) == "changed"
        after = healthy(stack, host)
        assert after["flashmm"]["id"] != before["flashmm"][0]
        assert after["redis"]["id"] == before["redis"][0]
        block = task_block(ok(stack.deploy("--check", "--diff", *pin)).stdout)
        assert status(block, host) == "ok", block
    finally:
        stack.down()
        stack.engine.docker("image", "rm", image, check=False)
