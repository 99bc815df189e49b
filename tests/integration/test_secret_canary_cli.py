"""The secret canary through the CLI and ansible-playbook -vvv: planted as valid and invalid
secrets, absent from every output."""

from __future__ import annotations

import traceback
import pytest
from flashmm_deploy.core.errors import InventoryError
from flashmm_deploy.inventory.inventory import Inventory
from support import ansible_playbook, copy_inventory, flashmm_config, recap, tool_env
from unit.test_secret_canary import assert_no_canary, canary, canary_inventory

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def canary_inventories(tmp_path_factory):
    base = tmp_path_factory.mktemp("canary")
    return {v: canary_inventory(base, v) for v in ("valid", "invalid")}


def test_unparsable_inventory_file_never_shows_the_canary(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    (inv / "group_vars" / "all" / "vault.yml").write_text(
        f"flashmm_secrets:\n  secret_key: {canary('yaml')}\n\tapi_auth_token: [\n",
        encoding="utf-8")
    with pytest.raises(InventoryError) as info:
        Inventory(inv).host_layers("local-1")
    exc = info.value
    for text in (str(exc), repr(exc), "".join(traceback.format_exception(exc))):
        assert_no_canary(text, "InventoryError")
    proc = flashmm_config("validate", str(inv))
    assert proc.returncode == 2
    assert_no_canary(proc.stdout + proc.stderr, "flashmm-config on unparsable YAML")


def test_cli_validate_explain_diff_never_show_the_canary(canary_inventories):
    valid, invalid = str(canary_inventories["valid"]), str(canary_inventories["invalid"])
    runs = [
        (("validate", valid), 0),
        (("validate", "--require-secrets", valid), 0),
        (("validate", invalid), 1),
        (("validate", invalid, valid, "inventories/testnet"), 1),
        (("explain", valid, "secrets.secret_key"), 0),
        (("explain", valid, "secrets.cambrian_secret_key", "--json"), 0),
        (("explain", invalid, "secrets.api_auth_token", "--host", "local-1"), 1),
        (("explain", invalid, "secrets.encryption_key", "--json", "--host", "local-1"), 1),
        (("diff", valid, "inventories/local"), 0),
        (("diff", valid, invalid), 1),
    ]
    for args, code in runs:
        proc = flashmm_config(*args)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert_no_canary(proc.stdout + proc.stderr, f"flashmm-config {' '.join(args)}")
    assert "secrets.api_auth_token" in flashmm_config("validate", invalid).stderr


@pytest.mark.parametrize("variant,rc", [("valid", 0), ("invalid", 2)])
def test_validate_playbook_at_vvv_never_shows_the_canary(canary_inventories, tmp_path, variant,
                                                         rc):
    proc = ansible_playbook("playbooks/validate.yml", canary_inventories[variant], "-vvv",
                            env=tool_env(FLASHMM_SANDBOX=str(tmp_path)))
    output = proc.stdout + proc.stderr
    assert proc.returncode == rc, output
    assert_no_canary(output, f"ansible-playbook validate.yml -vvv ({variant})")
    if variant == "valid":
        assert recap(proc.stdout)["local-1"]["failed"] == 0
        assert "3 host(s) valid" in output
    else:
        assert recap(proc.stdout)["local-1"]["failed"] == 1
        assert "secrets.secret_key" in output and "secrets.api_auth_token" in output
