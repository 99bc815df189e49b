"""The controller side of backups without Ansible: storing a host's part (secrets encrypted,
sums in the manifest), sealing, verifying (what differs, named), retention, the id rules; the
Kubernetes export's names and objects against the Kubernetes schemas (kubernetes-validate)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import kubernetes_validate
import pytest
from ansible.parsing.vault import VaultSecret

from flashmm_deploy.backup import backup_store, backup_tasks
from flashmm_deploy.render import k8s_export
from flashmm_deploy.backup.backup_store import BackupError
from flashmm_deploy.inventory.vault import VaultKeys

SECRET = "s3cr3t-canary-value-0123456789"
KEYS = VaultKeys.of_secrets([("local", VaultSecret(b"unit-test-password"))])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def taken(version: str = "3") -> dict:
    files = {"config/environments/local.yml": b"app:\n  debug: true\n",
             ".env": f"REDIS_PASSWORD='{SECRET}'\n".encode(),
             "redis/users.acl": b"user default on #abc ~* &* +@all\n"}
    return {
        "files": {p: {"mode": "0600" if p != "config/environments/local.yml" else "0644",
                      "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "content": b64(d)}
                  for p, d in files.items()},
        "redis": [{"key": "flashmm:config:trading:max_position_usdc", "type": "string",
                   "ttl_ms": -1, "values": [b64(b"250.0")]},
                  {"key": "flashmm:meta:version", "type": "string", "ttl_ms": -1,
                   "values": [b64(version.encode())]},
                  {"key": "flashmm:meta:bin", "type": "list", "ttl_ms": 5000,
                   "values": [b64(b"\xff\x00"), b64(b"x")]},
                  {"key": "flashmm:secure:api", "type": "string", "ttl_ms": 60000,
                   "values": [b64(SECRET.encode())]}],
        "deployed_by": "run1", "deployed_at": "2026-11-26T00:00:00Z",
    }


def make_backup(root: Path, backup_id: str, created: str, hosts=("h1", "h2")) -> Path:
    env_dir = root / "local"
    staging = env_dir / (backup_store.PARTIAL + backup_id)
    run = {"id": backup_id, "environment": "local", "dir": str(env_dir), "staging": str(staging),
           "created": created, "toolkit": {"version": "0.1.0", "commit": "abc"}}
    for host in hosts:
        backup_store.write_host(run, host, taken(), {"config/environments/local.yml"}, KEYS)
    backup_store.commit(run, list(hosts), keep=7, keys=KEYS)
    return env_dir / backup_id


def test_a_stored_host_holds_no_secret_in_clear_and_verifies(tmp_path):
    path = make_backup(tmp_path, "20261126T000000Z", "2026-11-26T00:00:00Z")
    for p in path.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
            assert p.stat().st_mode & 0o777 == 0o600
        else:
            assert p.stat().st_mode & 0o777 == 0o700
    manifest = json.loads((path / "h1" / "manifest.json").read_text())
    assert manifest["config_version"] == 3
    assert {p: f["secret"] for p, f in manifest["files"].items()} == {
        "config/environments/local.yml": False, ".env": True, "redis/users.acl": True}
    checked = backup_store.verify(tmp_path / "local", "20261126T000000Z", KEYS,
                                  environment="local")
    h1 = checked.hosts["h1"]
    assert h1.files[".env"] == (f"REDIS_PASSWORD='{SECRET}'\n".encode(), "0600", True)
    entries = {e["key"]: backup_store.module_entry(e) for e in h1.redis}
    assert entries == {e["key"]: e for e in taken()["redis"]}      # binary values round-trip


def test_verify_names_each_file_that_differs(tmp_path):
    path = make_backup(tmp_path, "20261126T000000Z", "2026-11-26T00:00:00Z")
    (path / "h1" / "files" / "config" / "environments" / "local.yml").write_text("app: {}\n")
    (path / "h2" / "redis.json").unlink()
    wrong = VaultKeys.of_secrets([("local", VaultSecret(b"another"))])
    with pytest.raises(BackupError) as err:
        backup_store.verify(tmp_path / "local", "20261126T000000Z", wrong, environment="dev")
    text = str(err.value)
    assert "h1/files/config/environments/local.yml: 8 bytes, the manifest says 19" in text
    assert "h2/redis.json: missing" in text
    assert "h1/secrets.vault: cannot decrypt for vault id 'local'" in text
    assert "a backup of environment 'local'; the inventory's hosts are 'dev'" in text
    assert SECRET not in text


def test_a_manifest_naming_a_file_outside_the_backup_is_refused(tmp_path):
    path = make_backup(tmp_path, "20261126T000000Z", "2026-11-26T00:00:00Z", hosts=("h1",))
    mpath = path / "h1" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["redis"]["stored"] = "../../../etc/passwd"
    mpath.write_text(json.dumps(manifest))
    index = json.loads((path / "backup.json").read_text())
    index["hosts"]["h1"]["manifest_sha256"] = hashlib.sha256(mpath.read_bytes()).hexdigest()
    (path / "backup.json").write_text(json.dumps(index))
    with pytest.raises(BackupError, match="names a stored file outside the backup"):
        backup_store.verify(tmp_path / "local", "20261126T000000Z", KEYS)


def test_retention_keeps_the_newest_and_latest_is_the_newest(tmp_path):
    ids = [f"20261126T00000{i}Z" for i in range(4)]
    for i, backup_id in enumerate(ids):
        make_backup(tmp_path, backup_id, f"2026-11-26T00:00:0{i}Z", hosts=("h1",))
    (tmp_path / "local" / ".partial-20261126T000009Z").mkdir()     # a failed run's staging
    assert backup_store.prune(tmp_path / "local", 2) == ids[:2]
    assert [b.backup_id for b in backup_store.list_backups(tmp_path / "local")] == ids[2:]
    assert backup_store.resolve_id(tmp_path / "local", "latest") == ids[3]
    with pytest.raises(BackupError, match="no such backup"):
        backup_store.resolve_id(tmp_path / "local", ids[0])
    with pytest.raises(BackupError, match="expected 'latest' or an id"):
        backup_store.resolve_id(tmp_path / "local", "../etc")


def test_settings_as_the_command_line_gives_them():
    assert backup_tasks.restore_hosts("b, a,,") == ["a", "b"]
    assert backup_tasks.restore_hosts([]) is None
    assert backup_tasks.keep_setting("3") == 3
    for bad in (0, -1, "x", True):
        with pytest.raises(BackupError, match="flashmm_backup_keep"):
            backup_tasks.keep_setting(bad)


# ---- Kubernetes export --------------------------------------------------------------------

@pytest.mark.parametrize("text,label", [("local-1", "local-1"), ("Sandbox_01.Example", "sandbox-01-example"),
                                        ("--x--", "x")])
def test_dns_labels(text, label):
    assert k8s_export.dns_label(text) == label


def test_long_names_stay_valid_and_distinct():
    a, b = k8s_export.dns_label("h" * 80 + "a"), k8s_export.dns_label("h" * 80 + "b")
    assert a != b and len(a) <= 63 and len(b) <= 63


@pytest.mark.parametrize("host", ["local-1", "Host_With.Dots", "x" * 100])
def test_exported_objects_satisfy_the_kubernetes_schema(host):
    objs = k8s_export.objects(host, "production",
                              {"environments/production.yml": b"app:\n  debug: false\n"},
                              {"REDIS_PASSWORD": SECRET, "EMPTY": ""}, namespace="Trading")
    for obj in objs:
        assert kubernetes_validate.validate(obj, "1.37", strict=True) == "1.37"
        assert len(obj["metadata"]["name"]) <= 63
    config_map, secret = objs
    assert config_map["data"] == {"production.yml": "app:\n  debug: false\n"}
    assert json.loads(config_map["metadata"]["annotations"]["flashmm.io/paths"]) == {
        "production.yml": "environments/production.yml"}
    assert base64.b64decode(secret["data"]["REDIS_PASSWORD"]).decode() == SECRET
    text = k8s_export.to_yaml(objs)
    assert "production.yml: |" in text and SECRET not in text


def test_a_schema_violation_is_caught_by_the_validator():
    """The control: the schema check is real (a Secret's data values must be strings)."""
    config_map, secret = k8s_export.objects("h", "local", {}, {"A": "b"})
    secret["data"]["A"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(secret, "1.37", strict=True)
    config_map["spec"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(config_map, "1.37", strict=True)


def test_two_backups_in_the_same_second_get_two_ids(tmp_path, monkeypatch):
    monkeypatch.setattr("flashmm_deploy.backup.writer.toolkit",
                        lambda: {"version": None, "commit": None})
    runs = [backup_store.begin(tmp_path, "local", now=1_800_000_000) for _ in range(3)]
    assert [r["id"] for r in runs] == ["20270115T080000Z", "20270115T080000Z-2",
                                       "20270115T080000Z-3"]
    assert all(Path(r["staging"]).is_dir() for r in runs)


# ---- signatures, shapes, order (issues 14 and 15) ------------------------------------------

def _resum_index(path: Path) -> None:
    index = json.loads((path / "backup.json").read_text())
    for host in index["hosts"]:
        index["hosts"][host]["manifest_sha256"] = hashlib.sha256(
            (path / host / "manifest.json").read_bytes()).hexdigest()
    (path / "backup.json").write_text(json.dumps(index))


def test_an_edit_without_the_vault_password_breaks_the_signatures(tmp_path):
    path = make_backup(tmp_path, "20261126T000000Z", "2026-11-26T00:00:00Z", hosts=("h1",))
    mpath = path / "h1" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["config_version"] = 99
    mpath.write_text(json.dumps(manifest))
    _resum_index(path)
    with pytest.raises(BackupError) as err:
        backup_store.verify(tmp_path / "local", "20261126T000000Z", KEYS, environment="local")
    assert "h1/manifest.json: signature does not match" in str(err.value)
    assert "20261126T000000Z/backup.json: signature does not match" in str(err.value)
    # re-signed with the environment's vault password, it verifies again (the control)
    key = backup_store.signing_key(KEYS, "local", "test")
    mpath.write_text(json.dumps(backup_store.sign("manifest.json", manifest, key)))
    _resum_index(path)
    index = json.loads((path / "backup.json").read_text())
    (path / "backup.json").write_text(json.dumps(backup_store.sign("backup.json", index, key)))
    backup_store.verify(tmp_path / "local", "20261126T000000Z", KEYS, environment="local")
    # ... and another password's signature does not
    other = VaultKeys.of_secrets([("local", VaultSecret(b"another"))])
    with pytest.raises(BackupError, match="signature does not match"):
        backup_store.verify(tmp_path / "local", "20261126T000000Z", other, environment="local")


def test_the_mode_rules_are_deploys_own():
    from flashmm_deploy.config.role_settings import RULES

    for bits in range(0o1000):
        mode = f"{bits:04o}"
        assert (backup_store.mode_problem(mode, False) is None) == \
            (RULES["flashmm_files_config_mode"](mode) is None), mode
        assert (backup_store.mode_problem(mode, True) is None) == \
            (RULES["flashmm_files_secret_mode"](mode) is None), mode


@pytest.mark.parametrize("entry,problem", [
    (("flashmm:meta:h", "hash", -1, [b"a", b"1", b"b"]), "a hash with 3 value(s)"),
    (("flashmm:meta:h", "hash", -1, [b"a", b"1", b"a", b"2"]), "a hash field appears twice"),
    (("flashmm:meta:z", "zset", -1, [b"m", b"nan"]), "a zset score is not a number"),
    (("flashmm:meta:z", "zset", -1, [b"m", b"1_0"]), "a zset score is not a number"),
    (("flashmm:meta:s", "set", -1, [b"p", b"p"]), "a set member appears twice"),
    (("flashmm:meta:l", "list", -1, []), "a list with 0 value(s)"),
    (("flashmm:meta:s", "string", -1, [b"a", b"b"]), "a string with 2 value(s)"),
    (("flashmm:meta:s", "string", 0, [b"a"]), "TTL 0 ms"),
    (("flashmm:meta:s", "string", -2, [b"a"]), "TTL -2 ms"),
    (("flashmm:meta:s", "string", 10 ** 15, [b"a"]), "TTL 1000000000000000 ms"),
    (("flashmm:meta:s", "string", True, [b"a"]), "TTL True ms"),
    (("flashmm:meta:s", "stream", -1, [b"a"]), "type 'stream'"),
    (("flashmm:meta:s", "string", -1, ["a"]), "values that are not a list of strings"),
    (("other:key", "string", -1, [b"a"]), "not a key the backup holds"),
    (("flashmm:config:updates", "string", -1, [b"a"]), "not a key the backup holds"),
    (("flashmm:meta:version", "string", -1, [b"-1"]), "non-negative 64-bit integer"),
    (("flashmm:meta:version", "string", -1, [b"9223372036854775808"]), "64-bit"),
])
def test_the_shape_of_redis_data_is_checked(entry, problem):
    from flashmm_deploy.hostside.backup_host import entry_problem

    assert problem in (entry_problem(*entry) or "")


@pytest.mark.parametrize("entry", [
    ("flashmm:meta:z", "zset", 5000, [b"m", b"1.5", b"n", b"-2", b"o", b"inf", b"p", b"1e+20"]),
    ("flashmm:meta:h", "hash", -1, [b"a", b"", b"b", b"\xff"]),
    ("flashmm:meta:version", "string", -1, [b"9223372036854775807"]),
    ("flashmm:secure:api", "string", 1, [b"x"]),
])
def test_well_shaped_redis_data_passes(entry):
    from flashmm_deploy.hostside.backup_host import entry_problem

    assert entry_problem(*entry) is None


def test_a_symlink_or_a_host_name_outside_the_backup_is_refused(tmp_path):
    path = make_backup(tmp_path, "20261126T000000Z", "2026-11-26T00:00:00Z", hosts=("h1",))
    outside = tmp_path / "outside.yml"
    stored = path / "h1" / "files" / "config" / "environments" / "local.yml"
    outside.write_bytes(stored.read_bytes())       # same bytes: the sums still match
    stored.unlink()
    stored.symlink_to(outside)
    index = json.loads((path / "backup.json").read_text())
    index["hosts"]["../x"] = index["hosts"]["h1"]
    (path / "backup.json").write_text(json.dumps(index))
    with pytest.raises(BackupError) as err:
        backup_store.verify(tmp_path / "local", "20261126T000000Z", KEYS)
    text = str(err.value)
    assert "h1/files/config/environments/local.yml: a symlink" in text
    assert "host name '../x' is not a plain host name" in text
    with pytest.raises(BackupError, match="not a plain host name"):
        backup_store.write_host({"id": "x", "environment": "local", "staging": str(tmp_path),
                                 "created": "", "toolkit": {}}, "..", taken(), set(), KEYS)


def test_latest_and_retention_go_by_sequence_not_by_the_clock(tmp_path):
    future = make_backup(tmp_path, "20991231T000000Z", "2099-12-31T00:00:00Z", hosts=("h1",))
    env_dir = tmp_path / "local"
    staging = env_dir / ".partial-20261126T000000Z"
    run = {"id": "20261126T000000Z", "environment": "local", "dir": str(env_dir),
           "staging": str(staging), "created": "2026-11-26T00:00:00Z", "toolkit": {}}
    backup_store.write_host(run, "h1", taken(), {"config/environments/local.yml"}, KEYS)
    done = backup_store.commit(run, ["h1"], keep=1, keys=KEYS)
    assert done["pruned"] == [future.name] and done["sequence"] == 2
    assert backup_store.resolve_id(env_dir, "latest") == "20261126T000000Z"
    assert (env_dir / ".sequence").read_text() == "2\n"
    assert not future.exists() and not list(env_dir.glob(".pruned-*"))
    # a prune never removes what it protects, even when keep is smaller
    assert backup_store.prune(env_dir, 1, protect={"20261126T000000Z"}) == []


def test_listing_names_what_is_incomplete_and_skips_what_vanished(tmp_path):
    make_backup(tmp_path, "20261126T000000Z", "2026-11-26T00:00:00Z", hosts=("h1",))
    env_dir = tmp_path / "local"
    (env_dir / ".partial-20261126T000001Z").mkdir()
    (env_dir / "20261126T000002Z").mkdir()                      # half-written: no index
    assert [b.backup_id for b in backup_store.list_backups(env_dir)] == ["20261126T000000Z"]
    names = dict(backup_store.incomplete(env_dir))
    assert set(names) == {".partial-20261126T000001Z", "20261126T000002Z"}
    assert "missing" in names["20261126T000002Z"]
    with pytest.raises(backup_store.BackupGone):
        backup_store.verify(env_dir, "20261126T000009Z", KEYS)
