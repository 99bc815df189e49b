"""flashmm-config secrets generate as a process: files, modes, reruns and refusals."""

from __future__ import annotations

import pytest
import yaml
from flashmm_deploy import host_validation
from flashmm_deploy.inventory import Inventory
from support import copy_inventory, flashmm_config
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
    assert {"redis_password", "influxdb_token", "influxdb_admin_password"} <= set(vault_of(inv)[1])


def test_refuses_testnet_and_production(tmp_path):
    for name in ("testnet", "production"):
        inv = copy_inventory(name, tmp_path)
        before = vault_of(inv)[0].read_bytes()
        proc = flashmm_config("secrets", "generate", str(inv))
        assert proc.returncode == 2 and "ansible-vault" in proc.stderr
        assert vault_of(inv)[0].read_bytes() == before
