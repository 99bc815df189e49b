"""Layer provenance seen from the outside: flashmm-config explain/diff as processes, vaults
encrypted with ansible-vault, and the layer variables ansible-inventory picks."""

from __future__ import annotations

import json
import secrets as random_tokens
import pytest
import yaml
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.core.errors import InventoryError
from flashmm_deploy.inventory.inventory import LAYER_VARS, Inventory
from flashmm_deploy.config.layers import REDACTED
from flashmm_deploy.inventory.vault import VaultKeys
from support import SANDBOX, VENV_BIN, copy_inventory, flashmm_config, run, tool_env, valid_secrets
from unit.test_layers_provenance import base_files, encrypted_local, local_secrets, write_inventory

pytestmark = pytest.mark.integration


# Inventories Ansible reads in ways a naive reader would not: JSON vars files, hidden and
# backup files (ignored), a directory beside a same-named file (the directory wins, the file is
# ignored), nested directories, host vars inline and in files, group priority.  Every layer
# variable is defined once per host (twice is an error of its own).
READER_CASES = {
    "yaml-and-json": {
        "hosts": {"all": {"vars": {"flashmm_env_overrides": {"TRADING_MAX_QUOTE_LEVELS": "5"}},
                          "children": {"flashmm": {"hosts": {"h1": None, "h2": None}}}}},
        "files": {"group_vars/flashmm.json": {"flashmm_group_config": {
                      "trading": {"quote_frequency_hz": 2.0}}},
                  "host_vars/h1.json": {"flashmm_host_config": {"app": {"name": "json"}}}}},
    "hidden-and-backup-files-are-ignored": {
        "hosts": {"all": {"children": {"flashmm": {"hosts": {"h1": None}}}}},
        "files": {"group_vars/all/.old.yml": {"flashmm_group_config": {"app": {"name": "x"}}},
                  "group_vars/flashmm/flashmm.yml~": {"flashmm_group_config": {
                      "app": {"name": "backup"}}},
                  "group_vars/flashmm/live.yml": {"flashmm_group_config": {
                      "app": {"name": "live"}}}}},
    "a-directory-wins-over-a-same-named-file": {
        "hosts": {"all": {"children": {"flashmm": {"hosts": {"h1": None}}}}},
        "files": {"group_vars/flashmm.yml": {"flashmm_group_config": {"app": {"name": "file"}}},
                  "group_vars/flashmm/nested/deeper.yml": {"flashmm_group_config": {
                      "app": {"name": "dir"}}}}},
    "inline-host-and-group-vars-with-priorities": {
        "hosts": {"all": {"children": {
            "eu": {"vars": {"ansible_group_priority": 5}, "hosts": {"h1": {
                "flashmm_host_config": {"app": {"name": "inline"}}}}},
            "prod": {"vars": {"ansible_group_priority": 2,
                              "flashmm_env_overrides": {"API_PORT": "8100"}},
                     "hosts": {"h1": None, "h2": None}}}}},
        "files": {"group_vars/eu.yml": {"flashmm_group_config": {"api": {"port": 8200}}}}},
}


@pytest.mark.parametrize("case", sorted(READER_CASES))
def test_reader_picks_the_same_layer_variables_as_ansible(tmp_path, case):
    """The CLI and the playbook must agree: compare with ansible-inventory's host vars."""
    spec = READER_CASES[case]
    files = base_files(**{"group_vars/all/vault.yml": {"flashmm_secrets": {"secret_key": "s" * 40}}})
    root = write_inventory(tmp_path / "inv", spec["hosts"], files)
    for rel, data in spec["files"].items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data) if rel.endswith(".json") else yaml.safe_dump(data))
    proc = run([str(VENV_BIN / "ansible-inventory"), "-i", str(root / "hosts.yml"), "--list"],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ansible_vars = json.loads(proc.stdout)["_meta"]["hostvars"]
    inv = Inventory(root)
    by_layer = {v: k for k, v in LAYER_VARS.items()}
    assert sorted(ansible_vars) == inv.hosts
    for host in inv.hosts:
        hl = inv.host_layers(host)
        assert hl.issues == [], [i.render() for i in hl.issues]
        ours = {by_layer[lay.name]: (lay.data["secrets"] if lay.name == "vault" else lay.data)
                for lay in hl.layers}
        theirs = {k: v for k, v in ansible_vars[host].items() if k in LAYER_VARS}
        assert ours == theirs, host


def test_encrypted_vault_without_password_makes_the_vault_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv, _ = encrypted_local(tmp_path, local_secrets())
    hl = Inventory(inv).host_layers("local-1")
    assert hl.vault_available is False
    assert all(layer.name != "vault" for layer in hl.layers)
    assert hl.sources["flashmm_secrets"].endswith("vault.yml (encrypted, not opened)")
    result = host_validation.validate_host(Inventory(inv), "local-1")
    assert result.ok
    assert {"secrets.secret_key", "secrets.api_auth_token"} <= {w.path for w in result.warnings}
    assert all("not available" in w.message for w in result.warnings)
    strict = host_validation.validate_host(Inventory(inv), "local-1", require_secrets=True)
    assert "secrets.secret_key" in {e.path for e in strict.errors}


def test_encrypted_vault_is_read_with_the_password_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    secrets = local_secrets()
    inv, password = encrypted_local(tmp_path, secrets)
    inventory = Inventory(inv, VaultKeys.given(password_files=[str(password)]))
    assert inventory.host_layers("local-1").vault_available is True
    result = host_validation.validate_host(inventory, "local-1", require_secrets=True)
    assert result.ok, [i.render() for i in result.errors]
    assert result.warnings == []
    res = result.resolution
    assert res.values["secrets.secret_key"] == secrets["secret_key"]
    assert res.origin("secrets.secret_key").layer == "vault"
    assert res.origin("secrets.secret_key").source.endswith("sandbox/group_vars/all/vault.yml")


def test_vault_password_file_from_the_environment_is_used(tmp_path):
    inv, password = encrypted_local(tmp_path, local_secrets())
    closed = flashmm_config("validate", "--require-secrets", str(inv))
    assert closed.returncode == 1
    assert "vault.yml: not opened (encrypted for vault id 'sandbox'; give --vault-id " \
        "sandbox@FILE or sandbox@prompt)" in closed.stderr
    proc = flashmm_config("validate", "--require-secrets", str(inv),
                          env=tool_env(ANSIBLE_VAULT_PASSWORD_FILE=str(password)))
    assert proc.returncode == 0, proc.stderr
    assert "not opened" not in proc.stderr


def test_vault_ids_open_each_environment_with_its_own_password(tmp_path):
    inv, password = encrypted_local(tmp_path, local_secrets())
    proc = flashmm_config("--vault-id", f"sandbox@{password}", "validate", "--require-secrets",
                          str(inv))
    assert proc.returncode == 0, proc.stderr
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-it\n")
    proc = flashmm_config("--vault-id", f"sandbox@{wrong}", "explain", str(inv), "app.name")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("cannot decrypt for vault id 'sandbox' with the vault "
                                        "passwords given (vault ids given: local, development, "
                                        "sandbox)")
    assert "Traceback" not in proc.stderr
    missing = flashmm_config("--vault-id", f"sandbox@{tmp_path / 'nope'}", "validate", str(inv))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.endswith(f"sandbox@{tmp_path / 'nope'}: {tmp_path / 'nope'}: no such file\n")


def test_wrong_vault_password_is_an_inventory_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv, _ = encrypted_local(tmp_path, local_secrets())
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    with pytest.raises(InventoryError, match="cannot decrypt"):
        Inventory(inv, VaultKeys.given(vault_ids=[f"sandbox@{wrong}"])).host_layers("local-1")


def test_cli_opens_the_vault_with_vault_password_file(tmp_path):
    inv, password = encrypted_local(tmp_path, local_secrets())
    closed = flashmm_config("validate", "--require-secrets", str(inv))
    assert closed.returncode == 1 and "not available" in closed.stderr
    opened = flashmm_config("--vault-password-file", str(password), "validate",
                            "--require-secrets", str(inv))
    assert opened.returncode == 0, opened.stderr
    assert "3 host(s) valid" in opened.stdout


def test_explain_shows_value_layer_file_and_shadowed(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    proc = flashmm_config("explain", str(inv), "storage.redis.db", "--host", "local-2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("storage.redis.db = 2") and "REDIS_DB" in lines[0]
    assert lines[1] == f"  from layer 'host', {inv / 'host_vars' / 'local-2.yml'}"
    assert f"shadows 0 from layer 'environment', {inv / 'group_vars' / 'all' / 'flashmm.yml'}" \
        in proc.stdout
    assert "shadows 0 from layer 'defaults', schema default" in proc.stdout


def test_explain_json_matches_the_resolution(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    proc = flashmm_config("explain", str(inv), "trading.quote_frequency_hz", "--host", "local-3",
                          "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["host"] == "local-3" and info["value"] == 1.0
    assert info["layer"] == "environment"
    assert info["source"] == str(inv / "group_vars" / "all" / "flashmm.yml")
    assert info["runtime_overridable"] is True and info["env"] == "TRADING_QUOTE_FREQUENCY_HZ"
    assert info["shadowed"] == [{"layer": "defaults", "source": "schema default", "value": 5.0}]


def test_explain_redacts_secrets_and_what_they_shadow(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    secrets = local_secrets()
    (inv / "group_vars" / "all" / "vault.yml").write_text(
        yaml.safe_dump({"flashmm_secrets": secrets}), encoding="utf-8")
    override = random_tokens.token_urlsafe(40)
    host_file = inv / "host_vars" / "local-1.yml"
    data = yaml.safe_load(host_file.read_text(encoding="utf-8"))
    data["flashmm_env_overrides"] = {"SECRET_KEY": override}
    host_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    proc = flashmm_config("explain", str(inv), "secrets.secret_key", "--host", "local-1", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["value"] == REDACTED and info["layer"] == "env" and info["secret"] is True
    assert info["source"] == str(host_file)
    assert [s["layer"] for s in info["shadowed"]] == ["defaults", "vault"]
    assert info["shadowed"][1]["value"] == REDACTED
    text = flashmm_config("explain", str(inv), "secrets.secret_key", "--host", "local-1")
    for out in (proc.stdout + proc.stderr, text.stdout + text.stderr):
        assert override not in out and secrets["secret_key"] not in out
    assert "<redacted>" in text.stdout


def test_explain_of_an_invalid_host_still_explains_and_exits_1(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    host_file = inv / "host_vars" / "local-1.yml"
    host_file.write_text(yaml.safe_dump({"flashmm_host_config": {
        "trading": {"max_position_usdc": 0}}}), encoding="utf-8")
    proc = flashmm_config("explain", str(inv), "trading.max_position_usdc", "--host", "local-1")
    assert proc.returncode == 1
    assert proc.stdout.startswith("trading.max_position_usdc = 0")
    assert "INVALID" in proc.stderr and str(host_file) in proc.stderr


def test_diff_of_testnet_and_production_lists_chain_id():
    proc = flashmm_config("diff", "inventories/testnet", "inventories/production")
    assert proc.returncode == 0, proc.stderr
    assert '  sei.chain_id: "atlantic-2" -> "pacific-1"' in proc.stdout
    assert '  app.environment: "testnet" -> "production"' in proc.stdout
    assert "__PLACEHOLDER__" not in proc.stdout


def test_diff_says_secrets_differ_without_their_values(tmp_path):
    testnet, production = copy_inventory("testnet", tmp_path), copy_inventory("production", tmp_path)
    a, b = valid_secrets(), valid_secrets()
    del a["redis_password"]
    for inv, secrets in ((testnet, a), (production, b)):
        (inv / "group_vars" / "all" / "vault.yml").write_text(
            yaml.safe_dump({"flashmm_secrets": secrets}), encoding="utf-8")
    proc = flashmm_config("diff", str(testnet), str(production))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "sei.chain_id" in out
    lines = {line.split(":")[0].strip(): line for line in proc.stdout.splitlines() if ":" in line}
    assert "<redacted> -> <redacted>" in lines["secrets.secret_key"]
    assert "differs" in lines["secrets.secret_key"]
    assert "<redacted>" in lines["secrets.redis_password"]
    for value in list(a.values()) + list(b.values()):
        assert value not in out


def test_diff_lists_only_what_differs():
    proc = flashmm_config("diff", str(SANDBOX), str(SANDBOX), "--host-b", "local-1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("0 key(s) differ")
    other = flashmm_config("diff", str(SANDBOX), str(SANDBOX), "--host-a", "local-1",
                           "--host-b", "local-3")
    assert '  storage.redis.db: 1 -> 3' in other.stdout
    assert '  storage.redis.url: "redis://127.0.0.1:6379/1" -> "redis://127.0.0.1:6379/3"' \
        in other.stdout
    assert other.stdout.strip().endswith("2 key(s) differ")
