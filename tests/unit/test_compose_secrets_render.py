"""Compose secrets (``flashmm_stack_compose_secrets``) on the controller: what the plan renders
(the compose file's secrets and label, the app's files, ``.env`` with ``<VAR>_FILE`` and no
secret value), the label's properties, the masked diff entries, the check's preview arguments,
and a backup's files read back and rendered with today's secrets.  On the real stack:
tests/integration/test_compose_secrets.py."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import yaml
from dotenv import dotenv_values

from flashmm_deploy.secrets import compose_secrets, secret_files
from flashmm_deploy.backup import restore_secrets
from flashmm_deploy.plan import stack_check
from flashmm_deploy.config.effective import SECRET_ENV
from support import build_plan
from test_plan_result import CONFIG, VAULT as BASE_VAULT

ON = {"flashmm_stack_compose_secrets": True}
VAULT = dict(BASE_VAULT, redis_deploy_password="d" * 32)       # a protected Redis: deploy's user too
PROTECTED = dict(CONFIG, storage={"redis": {"password_required": True}})


def host(vault=VAULT, **extra) -> dict:
    return {"flashmm_config": PROTECTED, "flashmm_secrets": dict(vault), "flashmm_root": "/srv/h",
            "flashmm_compose_up": True, **extra}


def plan_of(**hosts):
    return build_plan(hosts).fact()


def compose(fact, name) -> dict:
    part = fact["hosts"][name]
    return yaml.safe_load(next(f["content"] for f in part["files"]
                               if f["path"] == "docker-compose.yml"))


def written(fact, name, vault=VAULT) -> dict[str, dict]:
    part = fact["hosts"][name]
    secrets = secret_files.pick_secrets(fact["secret_env"], vault, None)
    return {f["path"]: f for f in secret_files.host_secret_files(part, fact["secret_env"],
                                                                 secrets)}


@pytest.fixture(scope="module")
def fact():
    return plan_of(on=host(**ON), off=host())


def test_off_renders_no_secret_files_and_env_vars_as_before(fact):
    doc = compose(fact, "off")
    assert "secrets" not in doc and "secrets" not in doc["services"]["flashmm"]
    assert compose_secrets.LABEL not in doc["services"]["flashmm"]["labels"]
    files = written(fact, "off")
    assert list(files) == [".env"]
    env = dotenv_values(stream=io.StringIO(files[".env"]["content"]))
    assert env["SECRET_KEY"] == VAULT["secret_key"]
    assert not [k for k in env if k.endswith("_FILE")]


def test_on_gives_the_app_every_secret_as_a_file_and_env_holds_none(fact):
    files = written(fact, "on")
    env_text = files[".env"]["content"]
    assert not [v for v in VAULT.values() if v in env_text]
    env = dotenv_values(stream=io.StringIO(env_text))
    app_vars = compose_secrets.app_vars(SECRET_ENV, secret_files.NOT_FOR_THE_APP, True)
    assert "REDIS_URL" in app_vars and not set(app_vars) & secret_files.NOT_FOR_THE_APP
    for var in app_vars:
        assert var not in env
        assert env[var + "_FILE"] == f"/run/secrets/{var.lower()}"
        spec = files[f"secrets/{var.lower()}"]
        assert (spec["mode"], spec["mask"]) == ("0600", "all")
    assert files["secrets/secret_key"]["content"] == VAULT["secret_key"]      # no newline
    assert files["secrets/cambrian_api_key"]["content"] == ""                 # unset: empty
    assert VAULT["redis_password"] in files["secrets/redis_url"]["content"]
    assert files[".env"]["mask_keys"] == sorted(n for n in secret_files.NOT_FOR_THE_APP
                                                if n in env)
    doc = compose(fact, "on")
    names = sorted(v.lower() for v in app_vars)
    assert doc["services"]["flashmm"]["secrets"] == names
    assert doc["secrets"] == {n: {"file": f"./secrets/{n}"} for n in names}
    for service in ("redis",):
        assert "secrets" not in doc["services"][service]
    # the plan (a fact for the whole run) holds no value; the stack step knows the files
    assert not [v for v in VAULT.values() if v in json.dumps(fact)]
    assert fact["hosts"]["on"]["stack"]["app_secret_files"] == [f"secrets/{n}" for n in names]


def test_the_label_digests_the_files_written_and_no_single_secret(fact):
    label = compose(fact, "on")["services"]["flashmm"]["labels"][compose_secrets.LABEL]
    files = {p: f["content"] for p, f in written(fact, "on").items() if p.startswith("secrets/")}
    assert label == compose_secrets.digest("on", files)
    assert all(hashlib.sha256(c.encode()).hexdigest() != label for c in files.values())
    assert compose_secrets.digest("other-host", files) != label
    for path in files:                  # any one file changing changes it
        assert compose_secrets.digest("on", dict(files, **{path: files[path] + "x"})) != label
    # a changed vault value: another label, and the plan says so
    changed = plan_of(on=host(dict(VAULT, cambrian_api_key="k" * 30), **ON))
    assert compose(changed, "on")["services"]["flashmm"]["labels"][compose_secrets.LABEL] != label
    # the same input: the same label (a rerun changes nothing)
    again = plan_of(on=host(**ON))
    assert compose(again, "on") == compose(fact, "on")


def test_the_digest_cannot_be_made_by_moving_bytes_between_files():
    assert compose_secrets.digest("h", {"secrets/a": "xy", "secrets/b": ""}) != \
        compose_secrets.digest("h", {"secrets/a": "x", "secrets/b": "y"})


def test_the_checks_preview_gets_digests_of_the_secret_files_never_their_content(fact):
    part = fact["hosts"]["on"]
    files = stack_check.deploy_files(fact, part, VAULT, None)
    args = stack_check.preview_args(part, files)
    assert args["app_secret_files"] == part["stack"]["app_secret_files"]
    assert "secrets/secret_key" in args["planned_sha256"]
    assert not [v for v in VAULT.values() if v in json.dumps(args)]
    assert stack_check.stale_app_args(part)["task"] == "restart_stale_app"
    assert stack_check.stale_app_args(fact["hosts"]["off"]) is None


def backup_of(fact, name, vault) -> dict[str, tuple[bytes, str, bool]]:
    """A host's files as a backup holds them (path -> (content, mode, secret))."""
    part = fact["hosts"][name]
    out = {f["path"]: (f["content"].encode(), f["mode"], False) for f in part["files"]}
    out.update({p: (f["content"].encode(), f["mode"], True)
                for p, f in written(fact, name, vault).items()})
    return out


def test_a_backup_taken_with_files_reads_back_as_the_apps_variables(fact):
    files = backup_of(fact, "on", VAULT)
    env = restore_secrets.backup_env(files, "on", "b1")
    assert env["SECRET_KEY"] == VAULT["secret_key"] and "SECRET_KEY_FILE" not in env
    assert VAULT["redis_password"] in env["REDIS_URL"]
    assert restore_secrets.backup_as_files(files) == compose_secrets.app_vars(
        SECRET_ENV, secret_files.NOT_FOR_THE_APP, True)
    # what restore_secrets=true writes into the vault
    values = restore_secrets.vault_values({"on": env}, SECRET_ENV, "b1")
    assert values["secret_key"] == VAULT["secret_key"]
    del files["secrets/secret_key"]
    with pytest.raises(restore_secrets.BackupError, match="holds no secrets/secret_key|no "
                       "secrets/secret_key"):
        restore_secrets.backup_env(files, "on", "b1")


def test_a_restore_renders_the_backups_files_with_todays_secrets_and_label(fact):
    files = backup_of(fact, "on", VAULT)
    today = dict(VAULT, secret_key="n" * 40)
    secrets = secret_files.pick_secrets(SECRET_ENV, today, None)
    part = fact["hosts"]["on"]
    fresh = restore_secrets.fresh_app_files(files, "on", "b1", SECRET_ENV, secrets, True,
                                            part["env"].get("redis_user"))
    deploy_now = {p: f["content"] for p, f in written(plan_of(on=host(today, **ON)), "on",
                                                      today).items()}
    assert fresh == deploy_now
    text = files["docker-compose.yml"][0].decode()
    relabelled = restore_secrets.fresh_secrets_label(text, "on", fresh)
    assert relabelled == next(f["content"] for f in plan_of(on=host(today, **ON))["hosts"]["on"]
                              ["files"] if f["path"] == "docker-compose.yml")


def test_a_backup_from_either_setting_restores_whichever_is_on_now(fact):
    from flashmm_deploy.backup import backup_tasks

    for name in ("on", "off"):
        allowed = backup_tasks.planned_paths(fact["hosts"][name], fact["secret_env"])
        assert "secrets/secret_key" in allowed and "secrets/redis_url" in allowed
        assert "secrets/redis_password_previous" not in allowed


def test_export_k8s_puts_the_values_into_the_secret_not_the_file_paths(fact):
    from flashmm_deploy.config import dotenv_file

    files = {p: c for p, (c, _, _) in backup_of(fact, "on", VAULT).items()}
    env = restore_secrets.with_app_secret_files(dotenv_file.parse(files[".env"].decode()), files)
    assert env["SECRET_KEY"] == VAULT["secret_key"]
    assert not [k for k in env if k.endswith("_FILE")]
