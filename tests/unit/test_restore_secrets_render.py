"""The restore's treatment of secrets on the controller (flashmm_deploy.backup.restore_secrets): the
backup's secret files with the vault's secrets, records re-encrypted deterministically under
the vault's key, the backup's secrets into the vault.  The whole restore on the real stack:
tests/integration/test_restore_secrets.py."""

from __future__ import annotations

import base64

import pytest
import yaml
from ansible.parsing.vault import VaultSecret
from cryptography.fernet import Fernet

from flashmm_deploy.backup import restore_secrets as rs
from flashmm_deploy.backup.backup_store import BackupError
from flashmm_deploy.secrets.secret_files import env_file
from flashmm_deploy.inventory.vault import VaultKeys

SECRET_ENV = {"REDIS_PASSWORD": "redis_password", "ENCRYPTION_KEY": "encryption_key",
              "OLD_ENCRYPTION_KEY": "old_encryption_key"}


def entry(key: str, value: bytes, ttl_ms: int = -1, kind: str = "string") -> dict:
    return {"key": key, "type": kind, "ttl_ms": ttl_ms,
            "values": [base64.b64encode(value).decode("ascii")]}


def value_of(e: dict) -> bytes:
    return base64.b64decode(e["values"][0])


def test_a_record_under_the_backups_key_is_reencrypted_once_and_for_all():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    under_old = Fernet(old.encode()).encrypt_at_time(b"exchange secret", 1_700_000_000)
    under_new = Fernet(new.encode()).encrypt(b"already current")
    entries = [entry("flashmm:secure:a", under_old, 3_600_000),
               entry("flashmm:secure:b", under_new),
               entry("flashmm:secure:c", b"not a token"),
               {"key": "flashmm:secure:h", "type": "hash", "ttl_ms": -1, "values": ["eA==", "eQ=="]},
               entry("flashmm:config:trading:quote_frequency_hz", b"2.5")]
    out, counts = rs.reencrypt(entries, new, [old, None])
    assert {k: counts[k] for k in ("records", "current", "reencrypted", "unreadable")} == \
        {"records": 4, "current": 1, "reencrypted": 1, "unreadable": 2}
    assert counts["unreadable_keys"] == ["flashmm:secure:c", "flashmm:secure:h"]
    assert out[1:] == entries[1:]                       # everything else as it was
    token = value_of(out[0])
    assert out[0]["ttl_ms"] == 3_600_000 and out[0]["key"] == "flashmm:secure:a"
    assert Fernet(new.encode()).decrypt(token) == b"exchange secret"
    assert Fernet(new.encode()).extract_timestamp(token) == 1_700_000_000
    again, _ = rs.reencrypt(entries, new, [old])
    assert again == out                                 # the same token: a rerun changes nothing
    other, _ = rs.reencrypt([dict(entries[0], key="flashmm:secure:z")], new, [old])
    assert value_of(other[0]) != token                  # the IV depends on the record's name


def test_without_a_current_key_records_are_restored_as_they_are():
    old = Fernet.generate_key().decode()
    entries = [entry("flashmm:secure:a", Fernet(old.encode()).encrypt(b"x"))]
    out, counts = rs.reencrypt(entries, None, [old])
    assert out == entries and counts["unreadable"] == 1


def test_the_backups_env_gets_the_vaults_secrets_as_deploy_renders_them():
    public = {"APP_ENVIRONMENT": "local", "REDIS_URL": "redis://redis:6379/0"}
    backup_secrets = {"REDIS_PASSWORD": "old-pass", "ENCRYPTION_KEY": "old-key"}
    backup_text, _ = env_file({"public": public, "redis_password_in_url": True}, SECRET_ENV,
                              backup_secrets)
    now = {"REDIS_PASSWORD": "new/pass@", "ENCRYPTION_KEY": "new-key"}
    fresh = rs.fresh_env(rs.dotenv_file.parse(backup_text), SECRET_ENV, now, False)
    deploy, _ = env_file({"public": public, "redis_password_in_url": True}, SECRET_ENV, now)
    assert fresh == deploy
    assert "old-" not in fresh


def test_influxdb_env_and_a_compose_file_that_fingerprints_the_acl():
    influx = {"DOCKER_INFLUXDB_INIT_MODE": "setup", "DOCKER_INFLUXDB_INIT_PASSWORD": "old",
              "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN": "old"}
    text = rs.fresh_influxdb_env(influx, {"INFLUXDB_ADMIN_PASSWORD": "pw1", "INFLUXDB_TOKEN": "t1"})
    assert rs.dotenv_file.parse(text) == {"DOCKER_INFLUXDB_INIT_MODE": "setup",
                                          "DOCKER_INFLUXDB_INIT_PASSWORD": "pw1",
                                          "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN": "t1"}
    compose = 'labels:\n  io.flashmm.acl-sha256: "' + "0" * 64 + '"\n'
    import hashlib
    assert rs.fresh_compose(compose, "user default on\n") == (
        'labels:\n  io.flashmm.acl-sha256: "'
        + hashlib.sha256(b"user default on\n").hexdigest() + '"\n')
    assert rs.fresh_compose("services: {}\n", "x") == "services: {}\n"


def test_a_backup_env_deploy_did_not_write_is_refused_naming_it():
    files = {".env": (b"REDIS_PASSWORD=unquoted-secret\n", "0600", True)}
    with pytest.raises(BackupError) as err:
        rs.backup_env(files, "h1", "20261203T000000Z")
    assert ".env in backup 20261203T000000Z" in str(err.value)
    assert "unquoted-secret" not in str(err.value)
    assert rs.backup_env({}, "h1", "x") is None


def test_vault_values_agree_across_hosts_or_name_the_variable():
    a = {"REDIS_PASSWORD": "p1", "ENCRYPTION_KEY": "k1", "OLD_ENCRYPTION_KEY": ""}
    assert rs.vault_values({"h1": a, "h2": dict(a)}, SECRET_ENV, "b") == \
        {"redis_password": "p1", "encryption_key": "k1", "old_encryption_key": None}
    with pytest.raises(BackupError) as err:
        rs.vault_values({"h1": a, "h2": dict(a, ENCRYPTION_KEY="k2")}, SECRET_ENV, "b")
    assert "ENCRYPTION_KEY differs between h1 and h2" in str(err.value)
    assert "k1" not in str(err.value) and "k2" not in str(err.value)


@pytest.mark.parametrize("value,want", [(True, True), ("true", True), ("no", False),
                                        (None, False), ("", False)])
def test_restore_secrets_flag(value, want):
    assert rs.flag(value) is want


def test_restore_secrets_flag_refuses_anything_else():
    with pytest.raises(BackupError, match="restore_secrets must be true or false"):
        rs.flag("maybe")


def _vault(tmp_path, data: dict) -> tuple:
    keys = VaultKeys.of_secrets([("local", VaultSecret(b"unit-test-password"))])
    path = tmp_path / "vault.yml"
    path.write_bytes(keys.encrypt(yaml.safe_dump(data).encode(), "local", "vault.yml"))
    return path, keys


def _read(path, keys) -> dict:
    return yaml.safe_load(keys.decrypt(path.read_bytes(), "vault.yml"))


def test_write_vault_keeps_other_variables_bumps_the_generation_and_reruns_unchanged(tmp_path):
    path, keys = _vault(tmp_path, {"flashmm_secrets": {"redis_password": "new", "other": "kept",
                                                       "old_encryption_key": "prev"},
                                   "flashmm_unrelated": 1})
    values = {"redis_password": "old", "old_encryption_key": None}
    dry = rs.write_vault(path, keys, values, "B1", check=True)
    assert dry["changed"] and _read(path, keys)["flashmm_secrets"]["redis_password"] == "new"
    done = rs.write_vault(path, keys, values, "B1", check=False)
    assert done["names"] == ["old_encryption_key", "redis_password"]
    data = _read(path, keys)
    assert data["flashmm_secrets"] == {"redis_password": "old", "other": "kept"}
    assert data["flashmm_unrelated"] == 1
    assert data["flashmm_secrets_generation"]["id"] == "restore B1: secrets"
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    assert rs.write_vault(path, keys, values, "B1", check=False)["changed"] is False
    assert path.read_bytes() == before


def test_write_vault_refuses_while_a_rotation_is_rolling(tmp_path):
    path, keys = _vault(tmp_path, {"flashmm_secrets": {"redis_password": "x"},
                                   "flashmm_rotations": {"redis": {"id": "r1",
                                                                   "state": "rolling"}}})
    before = path.read_bytes()
    with pytest.raises(BackupError, match=r"rotation redis \(r1\) is still rolling"):
        rs.write_vault(path, keys, {"redis_password": "y"}, "B1", check=False)
    assert path.read_bytes() == before


def test_the_planned_generation_is_the_one_write_vault_leaves(tmp_path):
    path, keys = _vault(tmp_path, {"flashmm_secrets": {"redis_password": "new"},
                                   "flashmm_secrets_generation": {"number": 5, "id": "r", "at": ""}})
    values = {"redis_password": "old"}
    planned = rs.planned_generation(path, keys, values, "B1", 1_800_000_000)
    assert planned["number"] == 1_800_000_000 and planned["id"] == "restore B1: secrets"
    rs.write_vault(path, keys, values, "B1", check=False, now=1_800_000_000)
    assert _read(path, keys)["flashmm_secrets_generation"] == planned
    # the vault holds the values already: the hosts record its generation as it is
    assert rs.planned_generation(path, keys, values, "B1", 1_900_000_000) == planned
