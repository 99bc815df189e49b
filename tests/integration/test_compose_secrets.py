"""Secrets as files in the app's container (``flashmm_stack_compose_secrets``, on in testnet
and production) on the real stack: a stack deployed with it shows no secret value of the vault
to the container API (``docker inspect`` of every container) nor in the engine's stored
container configuration (``<data root>/containers/<id>/config.v2.json``), while the app is
healthy and authenticated to Redis with what it read from ``/run/secrets``.  A changed secret
recreates the app exactly once and reaches it; ``--check --diff`` names the recreation and
holds no secret; backup and restore (today's secrets, then the backup's) keep files, label and
vault in step; turning the setting off removes the files.

The tests share one stack and run in file order."""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from stack_support import Stack, ok
from support import ansible_playbook, read_vault, recap

pytestmark = pytest.mark.integration

SETTING = "flashmm_stack_compose_secrets"


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compose-secrets")
    s = Stack(docker_engine, tmp, hosts=1, label="csec")
    s.backups = tmp / "backups"
    s.set_group_var(SETTING, True)
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def secret_values(stack: Stack) -> set[str]:
    """Every secret of the vault (and so every one deploy writes), long enough to be told."""
    return {v for v in stack.vault().values() if isinstance(v, str) and len(v) >= 8}


def engine_root(stack: Stack) -> Path:
    return Path(stack.engine.docker("info", "--format", "{{.DockerRootDir}}").stdout.strip())


def leaks(stack: Stack, host: str, values: set[str]) -> list[str]:
    """Where a value shows: ``docker inspect`` of each container of the host's project, and
    the engine's stored configuration of each (names only, never the value)."""
    found = []
    root = engine_root(stack)
    for service, c in stack.containers(host).items():
        inspect = stack.engine.docker("inspect", c["id"]).stdout
        found += [f"docker inspect {service}" for v in values if v in inspect]
        for name in ("config.v2.json", "hostconfig.json"):
            stored = (root / "containers" / c["id"] / name).read_text()
            found += [f"{root.name}/containers/{c['id'][:12]}/{name} ({service})"
                      for v in values if v in stored]
    return found


def container_file(stack: Stack, host: str, path: str) -> str:
    """The sha256 of a file as the app's container sees it (read in the container; a failed
    comparison shows digests, never a value)."""
    name = stack.containers(host)["flashmm"]["name"]
    return sha(stack.engine.docker("exec", name, "cat", path).stdout)


def host_file(stack: Stack, host: str, rel: str) -> str:
    """The sha256 of a file under the host's root."""
    return sha((stack.root(host) / rel).read_text())


def sha(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def app_env(stack: Stack, host: str) -> dict[str, str]:
    return dotenv_values(stack.root(host) / ".env")


def test_the_container_api_and_the_engine_hold_no_secret_value(stack):
    host = stack.hosts[0]
    values = secret_values(stack)
    assert len(values) >= 5, "the vault holds the generated secrets"
    assert stack.wait_health(host)["status"] == "ok"      # a Redis operation succeeded
    status, stats = stack.get(host, "/stats")
    assert status == 200 and stats["redis_failures"] == 0, stats
    assert leaks(stack, host, values) == []
    # what the app reads instead: files, 0600, named by .env
    env = app_env(stack, host)
    vault = stack.vault()
    assert not [v for v in values if v in (stack.root(host) / ".env").read_text()]
    for var, key in (("SECRET_KEY", "secret_key"), ("API_AUTH_TOKEN", "api_auth_token"),
                     ("ENCRYPTION_KEY", "encryption_key"), ("REDIS_URL", None),
                     ("REDIS_PASSWORD", "redis_password")):
        assert var not in env and env[var + "_FILE"] == f"/run/secrets/{var.lower()}", var
        on_host = stack.root(host) / "secrets" / var.lower()
        assert stat.S_IMODE(on_host.stat().st_mode) == 0o600, var
        assert container_file(stack, host, f"/run/secrets/{var.lower()}") == \
            sha(on_host.read_text()), var
        if key:
            assert sha(on_host.read_text()) == sha(vault[key]), var
    carried = stack.password() in (stack.root(host) / "secrets" / "redis_url").read_text()
    assert carried, "secrets/redis_url does not carry the Redis password"
    assert "REDIS_PASSWORD_PREVIOUS_FILE" not in env     # deploy's own: never the app's
    # the label that recreates the app is no hash of one secret
    labels = json.loads(stack.engine.docker("inspect", stack.containers(host)["flashmm"]["id"]
                                            ).stdout)[0]["Config"]["Labels"]
    digest = labels["io.flashmm.secrets-digest"]
    assert all(hashlib.sha256(v.encode()).hexdigest() != digest for v in values)
    rerun = ok(stack.deploy("-vvv"))
    assert all(r["changed"] == 0 for r in recap(rerun.stdout).values()), recap(rerun.stdout)
    assert not [v for v in values if v in rerun.stdout + rerun.stderr], "a secret in -vvv"


def test_a_changed_secret_recreates_the_app_once_and_reaches_it(stack):
    host = stack.hosts[0]
    before = stack.containers(host)
    old = stack.vault().get("cambrian_api_key")       # local's vault may have none
    new = "cam-" + secrets.token_urlsafe(24)
    stack.set_secret("cambrian_api_key", new)
    check = ok(stack.deploy("--check", "--diff", "-vvv"))
    out = check.stdout + check.stderr
    assert "a secret file it mounts changed (io.flashmm.secrets-digest)" in " ".join(out.split())
    assert not [v for v in secret_values(stack) | {old} if v and v in out]
    assert stack.containers(host)["flashmm"]["id"] == before["flashmm"]["id"]
    ok(stack.deploy())
    after = stack.containers(host)
    assert after["flashmm"]["id"] != before["flashmm"]["id"]
    assert after["redis"]["id"] == before["redis"]["id"]
    stack.wait_health(host)
    assert container_file(stack, host, "/run/secrets/cambrian_api_key") == sha(new)
    again = ok(stack.deploy())
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), recap(again.stdout)
    assert stack.containers(host)["flashmm"]["id"] == after["flashmm"]["id"]
    assert leaks(stack, host, secret_values(stack) | ({old} - {None})) == []


def play(stack: Stack, playbook: str, *args: str):
    return ansible_playbook(playbook, stack.inventory, *args,
                            "-e", f"flashmm_backup_dir={stack.backups}", env=stack.env)


def test_backup_and_restore_keep_files_label_and_vault_in_step(stack):
    host = stack.hosts[0]
    taken = stack.vault()["cambrian_api_key"]
    ok(play(stack, "playbooks/backup.yml"))
    env_dir = stack.backups / "local"
    backup_id = sorted(p.name for p in env_dir.iterdir() if p.name[0].isdigit())[-1]
    manifest = json.loads((env_dir / backup_id / host / "manifest.json").read_text())
    stored = {p: i for p, i in manifest["files"].items() if p.startswith("secrets/")}
    assert "secrets/cambrian_api_key" in stored
    assert all(i["secret"] is True and i["stored"] == "secrets.vault" for i in stored.values())
    assert not (env_dir / backup_id / host / "files" / "secrets").exists()
    assert not [v for v in secret_values(stack)
                for p in (env_dir / backup_id).rglob("*") if p.is_file()
                if v.encode() in p.read_bytes()]

    # the vault moves on; a restore keeps today's secrets in every secret file
    today = "cam-" + secrets.token_urlsafe(24)
    stack.set_secret("cambrian_api_key", today)
    ok(stack.deploy())
    (stack.root(host) / "secrets" / "secret_key").write_text("drifted-by-hand")   # in place
    check = ok(stack.deploy("--check", "--diff"))
    said = " ".join((check.stdout + check.stderr).split())
    assert "its secret file secrets/secret_key is rewritten" in said, said[-3000:]
    assert not [v for v in secret_values(stack) if v in said]
    restored = ok(play(stack, "playbooks/restore.yml", "-e", f"backup_id={backup_id}"))
    assert host_file(stack, host, "secrets/cambrian_api_key") == sha(today)
    assert host_file(stack, host, "secrets/secret_key") == sha(stack.vault()["secret_key"])
    stack.wait_health(host)
    # the file put back is the one the app's container sees (it was recreated)
    assert container_file(stack, host, "/run/secrets/secret_key") == \
        sha(stack.vault()["secret_key"])
    rerun = ok(stack.deploy())
    assert all(r["changed"] == 0 for r in recap(rerun.stdout).values()), \
        (recap(restored.stdout), recap(rerun.stdout))

    # restore_secrets: the backup's secrets into the files and the vault
    ok(play(stack, "playbooks/restore.yml", "-e", f"backup_id={backup_id}",
            "-e", "restore_secrets=true"))
    assert sha(read_vault(stack.vault_path)["flashmm_secrets"]["cambrian_api_key"]) == sha(taken)
    assert host_file(stack, host, "secrets/cambrian_api_key") == sha(taken)
    stack.wait_health(host)
    assert container_file(stack, host, "/run/secrets/cambrian_api_key") == sha(taken)
    rerun = ok(stack.deploy())
    assert all(r["changed"] == 0 for r in recap(rerun.stdout).values()), recap(rerun.stdout)


def test_turning_it_off_removes_the_files_and_on_again_brings_them_back(stack):
    host = stack.hosts[0]
    stack.set_group_var(SETTING, None)                          # local's default: off
    try:
        ok(stack.deploy())
        assert not [p for p in (stack.root(host) / "secrets").glob("*")] \
            if (stack.root(host) / "secrets").exists() else True
        env = app_env(stack, host)
        assert sha(env["SECRET_KEY"]) == sha(stack.vault()["secret_key"])
        assert not [k for k in env if k.endswith("_FILE")]
        stack.wait_health(host)
        rerun = ok(stack.deploy())
        assert all(r["changed"] == 0 for r in recap(rerun.stdout).values()), recap(rerun.stdout)
    finally:
        stack.set_group_var(SETTING, True)
    ok(stack.deploy())
    assert host_file(stack, host, "secrets/secret_key") == sha(stack.vault()["secret_key"])
    stack.wait_health(host)
    assert leaks(stack, host, secret_values(stack)) == []
