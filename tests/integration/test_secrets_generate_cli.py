"""flashmm-config secrets generate as a process: files, modes, reruns and refusals."""

from __future__ import annotations

import pytest
import yaml
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.inventory.inventory import Inventory
import secrets

from cryptography.fernet import Fernet
from support import (ROOT, SANDBOX, VENV_BIN, ansible_playbook, copy_inventory, flashmm_config, recap,
                     run, vault_keys)
from unit.test_secrets_generate import vault_of

pytestmark = pytest.mark.integration


def test_generates_every_needed_secret_with_mode_0600_and_never_prints_one(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    vault_of(inv)[0].unlink(missing_ok=True)
    proc = flashmm_config("secrets", "generate", str(inv))
    assert proc.returncode == 0, proc.stderr
    path, secrets = vault_of(inv)
    assert path.stat().st_mode & 0o777 == 0o600
    assert set(secrets) == {"secret_key", "api_auth_token", "encryption_key"}
    assert not any(value in proc.stdout + proc.stderr for value in secrets.values())
    results = host_validation.validate_inventory(Inventory(inv), require_secrets=True)
    assert all(r.ok for r in results.values()), [i.render() for r in results.values() for i in r.errors]


def test_existing_secrets_are_kept_and_a_rerun_adds_nothing(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    vault_of(inv)[0].unlink(missing_ok=True)
    flashmm_config("secrets", "generate", str(inv))
    _, first = vault_of(inv)
    proc = flashmm_config("secrets", "generate", str(inv))
    assert "nothing to generate" in proc.stdout
    assert vault_of(inv)[1] == first


def test_password_required_environments_get_a_redis_password(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    vault_of(inv)[0].unlink(missing_ok=True)
    env = inv / "group_vars" / "all" / "flashmm.yml"
    data = yaml.safe_load(env.read_text())
    data["flashmm_config"]["storage"]["redis"]["password_required"] = True
    data["flashmm_config"]["storage"]["influxdb"] = {"auth_required": True}
    env.write_text(yaml.safe_dump(data))
    assert flashmm_config("secrets", "generate", str(inv)).returncode == 0
    made = vault_of(inv)[1]
    assert {"redis_password", "redis_deploy_password", "influxdb_token",
            "influxdb_admin_password"} <= set(made)
    assert made["redis_deploy_password"] != made["redis_password"]      # two users, two


def test_testnet_and_production_need_their_own_vault_password(tmp_path):
    for name in ("testnet", "production"):
        inv = copy_inventory(name, tmp_path)
        path = vault_of(inv)[0]
        assert not path.exists()           # never committed: made with the team's password
        proc = flashmm_config("secrets", "init", str(inv))
        assert proc.returncode == 2 and not path.exists()
        assert f"no vault password for vault id {name!r}" in proc.stderr
        password = tmp_path / f"{name}.pass"
        password.write_text(secrets.token_urlsafe(20) + "\n")
        proc = flashmm_config("--vault-id", f"{name}@{password}", "secrets", "init", str(inv))
        assert proc.returncode == 0, proc.stderr
        assert "still to set by hand (ansible-vault edit): alert_webhook_url, cambrian_api_key" \
            in proc.stdout
        raw = path.read_bytes()
        assert raw.startswith(f"$ANSIBLE_VAULT;1.2;AES256;{name}\n".encode())
        view = run([str(VENV_BIN / "ansible-vault"), "view", "--vault-id",
                    f"{name}@{password}", str(path)])
        assert view.returncode == 0, view.stderr
        data = yaml.safe_load(view.stdout)["flashmm_secrets"]
        assert data["cambrian_api_key"] == "__PLACEHOLDER__"
        assert len(data["secret_key"]) >= 64 and Fernet(data["encryption_key"].encode())
        assert not any(v in proc.stdout + proc.stderr for v in data.values() if len(v) > 20)
        again = flashmm_config("--vault-id", f"{name}@{password}", "secrets", "init", str(inv))
        assert again.returncode == 2 and "exists" in again.stderr and path.read_bytes() == raw


VAULT_WITH_COMMENTS = """\
---
# who to ask: the on-call channel
flashmm_secrets:
  # the test key, not the live one
  cambrian_api_key: "k-1"   # rotated 2026-10
  secret_key: __PLACEHOLDER__
flashmm_extra_note: kept   # a variable the generator does not own
"""


def test_generate_keeps_comments_other_variables_and_encrypts_plain_text(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    path = vault_of(inv)[0]
    path.write_text(VAULT_WITH_COMMENTS)
    proc = flashmm_config("secrets", "generate", str(inv))
    assert proc.returncode == 0, proc.stderr
    assert "generated api_auth_token, encryption_key, secret_key" in proc.stdout
    assert "encrypted it (vault id local)" in proc.stdout
    raw = path.read_bytes()
    assert raw.startswith(b"$ANSIBLE_VAULT;1.2;AES256;local\n")
    text = vault_keys().decrypt(raw, "vault").decode()
    for kept in ("# who to ask: the on-call channel", "# the test key, not the live one",
                 'cambrian_api_key: "k-1"   # rotated 2026-10',
                 "flashmm_extra_note: kept   # a variable the generator does not own"):
        assert kept in text
    assert "__PLACEHOLDER__" not in text
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    assert "nothing to generate" in flashmm_config("secrets", "generate", str(inv)).stdout
    assert path.read_bytes() == before                  # no rewrite, no new ciphertext


def test_generate_writes_through_a_symlinked_vault(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    path = vault_of(inv)[0]
    elsewhere = tmp_path / "secrets-repo" / "local-vault.yml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(VAULT_WITH_COMMENTS)
    path.unlink(missing_ok=True)
    path.symlink_to(elsewhere)
    assert flashmm_config("secrets", "generate", str(inv)).returncode == 0
    assert path.is_symlink() and path.resolve() == elsewhere
    assert "flashmm_extra_note: kept" in vault_keys().decrypt(elsewhere.read_bytes(), "v").decode()
    assert elsewhere.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["local-vault.yml"]  # no temp


def test_inline_vaulted_values_are_kept_as_they_are(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    path = vault_of(inv)[0]
    password = ROOT / ".state" / "vault" / "local.pass"
    enc = run([str(VENV_BIN / "ansible-vault"), "encrypt_string", "--vault-id",
               f"local@{password}", "--encrypt-vault-id", "local", "s3cr3t-value-of-40-chars-0123456789abcd",
               "--name", "secret_key"])
    assert enc.returncode == 0, enc.stderr
    path.write_text("flashmm_secrets:\n" + "\n".join("  " + line for line in enc.stdout.splitlines()) + "\n")
    proc = flashmm_config("secrets", "generate", str(inv))
    assert proc.returncode == 0, proc.stderr
    assert "generated api_auth_token, encryption_key;" in proc.stdout    # secret_key kept
    text = vault_keys().decrypt(path.read_bytes(), "v").decode()
    assert "secret_key: !vault |" in text and "s3cr3t" not in text


def test_bad_vault_files_are_one_line_errors_and_stay_untouched(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    path = vault_of(inv)[0]
    cases = {
        "invalid YAML": b"flashmm_secrets: [\n  secret_key: {{ x\n",
        "not UTF-8 text": b"flashmm_secrets:\n  secret_key: \xff\xfe\n",
        "expected a mapping": b"- a list\n",
        "cannot decrypt for vault id 'local'": b"$ANSIBLE_VAULT;1.2;AES256;local\n6162\n",
    }
    for expected, content in cases.items():
        path.write_bytes(content)
        proc = flashmm_config("secrets", "generate", str(inv))
        assert proc.returncode == 2, (expected, proc.stdout, proc.stderr)
        assert expected in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert path.read_bytes() == content


def test_an_interrupted_write_leaves_the_previous_vault(tmp_path, monkeypatch):
    from flashmm_deploy.hostside import filesync
    from flashmm_deploy.secrets import secret_gen
    from flashmm_deploy.inventory.inventory import Inventory

    inv = copy_inventory("sandbox", tmp_path)
    path = vault_of(inv)[0]
    path.write_text(VAULT_WITH_COMMENTS)
    before = path.read_bytes()

    def disk_full(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(filesync.os, "replace", disk_full)
    with pytest.raises(OSError):
        secret_gen.update_vault(Inventory(inv), vault_keys())
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if p.name != ".vault.lock") == sorted(
        p.name for p in (SANDBOX / "group_vars" / "all").iterdir() if p.name != "vault.yml") + ["vault.yml"]


def test_the_secrets_playbook_runs_the_same_code_with_the_runs_vault_ids(tmp_path):
    inv = copy_inventory("testnet", tmp_path)
    password = tmp_path / "testnet.pass"
    password.write_text(secrets.token_urlsafe(20) + "\n")
    args = ("--vault-id", f"testnet@{password}", "-e", "secrets_action=init", "-vvv")
    proc = ansible_playbook("playbooks/secrets.yml", inv, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    path = inv / "group_vars" / "all" / "vault.yml"
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;testnet\n")
    view = run([str(VENV_BIN / "ansible-vault"), "view", "--vault-id", f"testnet@{password}",
                str(path)])
    data = yaml.safe_load(view.stdout)["flashmm_secrets"]
    assert "created; generated api_auth_token, encryption_key, secret_key" in proc.stdout
    assert not any(v in proc.stdout + proc.stderr for v in data.values() if len(v) > 20)
    again = ansible_playbook("playbooks/secrets.yml", inv, "--vault-id", f"testnet@{password}")
    assert again.returncode == 0 and "nothing to generate" in again.stdout
    assert all(r["changed"] == 0 for r in recap(again.stdout).values())
    refused = ansible_playbook("playbooks/secrets.yml", inv, *args[:4])
    assert refused.returncode != 0 and "exists" in refused.stdout + refused.stderr


def test_two_runs_at_once_do_not_lose_an_update(tmp_path):
    """The vault's edit lock: two `secrets generate` at once on a new inventory give one vault
    that both agree on (one generates, the other finds nothing to do)."""
    import subprocess
    from support import tool_env
    inv = copy_inventory("sandbox", tmp_path)
    cmd = [str(VENV_BIN / "flashmm-config"), "secrets", "generate", str(inv)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=tool_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(o[0].split(": ", 1)[1].split(";")[0].strip() for o in outs)
    assert said == ["created", "nothing to generate"], said
    assert set(vault_of(inv)[1]) == {"secret_key", "api_auth_token", "encryption_key"}


def test_a_vault_password_client_script_opens_testnet(tmp_path):
    """Testnet's password from outside the repo through a client script (as Ansible runs one:
    an executable file that prints the password)."""
    inv = copy_inventory("testnet", tmp_path)
    secret = secrets.token_urlsafe(20)
    script = tmp_path / "vault-client.sh"
    script.write_text(f"#!/bin/sh\necho '{secret}'\n")
    script.chmod(0o700)
    made = flashmm_config("--vault-id", f"testnet@{script}", "secrets", "init", str(inv))
    assert made.returncode == 0, made.stderr
    proc = flashmm_config("--vault-id", f"testnet@{script}", "validate", str(inv))
    assert proc.returncode == 0 and "not opened" not in proc.stderr, proc.stderr
    assert "secrets.cambrian_api_key: is still a placeholder" in proc.stderr
    assert secret not in made.stdout + made.stderr + proc.stdout + proc.stderr
