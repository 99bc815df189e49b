"""``flashmm-config`` as an operator runs it: exit codes 0 (valid), 1 (invalid), 2 (usage)."""

from __future__ import annotations

import yaml

import pytest

from support import copy_inventory, flashmm_config

pytestmark = pytest.mark.integration

ALL_FOUR = ["inventories/local", "inventories/development", "inventories/testnet",
            "inventories/production"]


def break_local(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    file = inv / "group_vars" / "all" / "flashmm.yml"
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    data["flashmm_config"]["trading"]["quote_frequency_hz"] = 11
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    return inv, file


# ---- 0: valid ----------------------------------------------------------------------------------

def test_valid_inventory_exits_0(tmp_path):
    # a private copy with its secrets generated: the repo's local vault is per machine
    inv = copy_inventory("sandbox", tmp_path)
    (inv / "group_vars" / "all" / "vault.yml").unlink(missing_ok=True)
    assert flashmm_config("secrets", "generate", str(inv)).returncode == 0
    proc = flashmm_config("validate", str(inv), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{inv}: 3 host(s) valid"
    assert proc.stderr == ""


def test_all_four_inventories_validate_at_once_with_unavailable_secret_warnings():
    proc = flashmm_config("validate", *ALL_FOUR)
    assert proc.returncode == 0, proc.stderr
    for inv in ALL_FOUR:
        assert f"{inv}: " in proc.stdout and "host(s) valid" in proc.stdout
    assert "INVALID" not in proc.stderr
    for inv in ("inventories/testnet", "inventories/production"):
        assert f"{inv}: warning" in proc.stderr
        section = proc.stderr.split(f"{inv}: warning", 1)[1].split("inventories/", 1)[0]
        # their vaults are made by the team (secrets init): not in the repo, never opened here
        assert "secrets.secret_key: is not available" in section


def test_quiet_hides_warnings():
    proc = flashmm_config("validate", "inventories/testnet", "-q")
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert proc.stdout.startswith("inventories/testnet: 1 host(s) valid")   # a count at most
    assert "placeholder" not in proc.stdout


def test_validate_one_host():
    proc = flashmm_config("validate", "inventories/local", "--host", "local-2", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "1 host(s) valid" in proc.stdout


def test_help_exits_0():
    proc = flashmm_config("--help")
    assert proc.returncode == 0
    assert "validate" in proc.stdout and "explain" in proc.stdout


# ---- 1: invalid --------------------------------------------------------------------------------

def test_invalid_inventory_exits_1_and_says_each_problem_once(tmp_path):
    inv, file = break_local(tmp_path)
    proc = flashmm_config("validate", str(inv))
    assert proc.returncode == 1
    assert f"{inv}: INVALID: 1 problem(s) in 3 host(s)" in proc.stderr
    assert proc.stderr.count("trading.quote_frequency_hz:") == 1
    assert str(file) in proc.stderr
    assert "hosts: local-1, local-2, local-3" in proc.stderr


def test_one_invalid_inventory_among_valid_ones_exits_1(tmp_path):
    inv, _ = break_local(tmp_path)
    proc = flashmm_config("validate", "inventories/development", str(inv), "inventories/testnet")
    assert proc.returncode == 1
    assert "inventories/development: 1 host(s) valid" in proc.stdout
    assert "inventories/testnet: 1 host(s) valid" in proc.stdout
    assert f"{inv}: INVALID" in proc.stderr


def test_require_secrets_makes_testnet_missing_secrets_errors():
    proc = flashmm_config("validate", "--require-secrets", "inventories/testnet")
    assert proc.returncode == 1
    assert "inventories/testnet: INVALID" in proc.stderr
    assert "secrets.secret_key: is not available" in proc.stderr
    assert "group_vars/all/vault.yml" in proc.stderr


def test_explain_of_an_invalid_host_exits_1(tmp_path):
    inv, _ = break_local(tmp_path)
    proc = flashmm_config("explain", str(inv), "trading.quote_frequency_hz")
    assert proc.returncode == 1
    assert proc.stdout.startswith("trading.quote_frequency_hz = 11")


def test_diff_with_an_invalid_side_exits_1(tmp_path):
    inv, _ = break_local(tmp_path)
    proc = flashmm_config("diff", "inventories/local", str(inv))
    assert proc.returncode == 1
    assert f"{inv}: INVALID" in proc.stderr


# ---- 2: usage ----------------------------------------------------------------------------------

def assert_usage(proc, *needles):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_unknown_subcommand_exits_2():
    assert_usage(flashmm_config("frobnicate", "inventories/local"), "invalid choice")


def test_no_subcommand_exits_2():
    assert_usage(flashmm_config())


def test_missing_inventory_directory_exits_2(tmp_path):
    missing = tmp_path / "nope"
    assert_usage(flashmm_config("validate", str(missing)), "no hosts.yml")
    assert_usage(flashmm_config("explain", str(missing), "app.debug"), "no hosts.yml")
    assert_usage(flashmm_config("diff", "inventories/local", str(missing)), "no hosts.yml")


def test_unknown_host_exits_2_listing_the_hosts():
    assert_usage(flashmm_config("validate", "inventories/local", "--host", "local-9"),
                 "'local-9'", "local-1, local-2, local-3")
    assert_usage(flashmm_config("explain", "inventories/local", "app.debug", "--host", "nope"),
                 "'nope'")
    assert_usage(flashmm_config("diff", "inventories/local", "inventories/local",
                                "--host-b", "nope"), "'nope'")


def test_unknown_explain_key_exits_2_with_did_you_mean():
    assert_usage(flashmm_config("explain", "inventories/local", "trading.max_postion_usdc"),
                 "unknown key", "did you mean trading.max_position_usdc")
    assert_usage(flashmm_config("explain", "inventories/local", "trading.confidence_threshold"),
                 "did you mean ml.confidence_threshold")


def test_unparsable_inventory_exits_2_naming_the_file(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    file = inv / "host_vars" / "local-2.yml"
    file.write_text("flashmm_host_config:\n  storage: [\n", encoding="utf-8")
    assert_usage(flashmm_config("validate", str(inv)), str(file), "invalid YAML")


def test_bad_option_exits_2():
    assert_usage(flashmm_config("validate", "inventories/local", "--frobnicate"))
    assert_usage(flashmm_config("validate"))
