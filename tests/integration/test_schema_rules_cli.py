"""Schema rules through flashmm-config validate, as an operator meets them: exit code, the key, the
file and the layer."""

from __future__ import annotations

import secrets as random_tokens
import pytest
from support import copy_inventory
from unit.test_schema_rules import cli_rejects, edit_yaml

pytestmark = pytest.mark.integration


def test_cli_rejects_out_of_range_position_naming_the_group_file(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    file = inv / "group_vars" / "all" / "flashmm.yml"
    edit_yaml(file, lambda d: d["flashmm_config"]["trading"].update(max_position_usdc=0))
    proc = cli_rejects(inv, "trading.max_position_usdc", file)
    assert "layer 'environment'" in proc.stderr


def test_cli_rejects_a_bad_host_value_naming_the_host_file(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    file = inv / "host_vars" / "local-2.yml"
    edit_yaml(file, lambda d: d["flashmm_host_config"]["storage"]["redis"].update(db=-1))
    proc = cli_rejects(inv, "storage.redis.db", file)
    assert "layer 'host'" in proc.stderr and "hosts: local-2" in proc.stderr


def test_cli_rejects_the_seed_testnet_combination(tmp_path):
    inv = copy_inventory("testnet", tmp_path)
    file = inv / "group_vars" / "all" / "flashmm.yml"
    edit_yaml(file, lambda d: d["flashmm_config"]["sei"].update(
        rpc_url="https://rpc.sei-apis.com", ws_url="wss://rpc.sei-apis.com/websocket",
        chain_id="pacific-1"))
    cli_rejects(inv, "sei.chain_id", file)


def test_cli_rejects_debug_in_production(tmp_path):
    inv = copy_inventory("production", tmp_path)
    file = inv / "group_vars" / "all" / "flashmm.yml"
    edit_yaml(file, lambda d: d["flashmm_config"]["app"].update(debug=True))
    proc = cli_rejects(inv, "app.debug", file)
    assert "production" in proc.stderr


def test_cli_rejects_yaml_nan_and_typos(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    file = inv / "group_vars" / "all" / "flashmm.yml"
    text = file.read_text(encoding="utf-8")
    text = text.replace("quote_frequency_hz: 1.0", "quote_frequency_hz: .nan\n    max_postion_usdc: 5")
    file.write_text(text, encoding="utf-8")
    proc = cli_rejects(inv, "trading.quote_frequency_hz", file)
    assert "trading.max_postion_usdc" in proc.stderr
    assert "did you mean trading.max_position_usdc" in proc.stderr


def test_cli_rejects_a_secret_in_the_environment_file(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    file = inv / "group_vars" / "all" / "flashmm.yml"
    value = random_tokens.token_urlsafe(40)
    edit_yaml(file, lambda d: d["flashmm_config"].update(secrets={"secret_key": value}))
    proc = cli_rejects(inv, "secrets.secret_key", file)
    assert value not in proc.stdout + proc.stderr
