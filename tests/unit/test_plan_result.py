"""The result the plan task registers (``Plan.fact``) and how the per-host action plugins read
their part of it (``secret_files.host_part``, ``pick_secrets``)."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from flashmm_deploy.secrets import secret_files
from support import build_plan

SEI = {"network": "testnet", "rpc_url": "https://sei-testnet-rpc.polkachu.com",
       "ws_url": "wss://sei-testnet-rpc.polkachu.com/websocket", "chain_id": "atlantic-2"}
CONFIG = {"app": {"environment": "local"}, "sei": SEI}
VAULT = {"secret_key": "s" * 40, "api_auth_token": "t" * 40,
         "encryption_key": Fernet.generate_key().decode(), "redis_password": "r" * 32}


def host(root: str, **extra) -> dict:
    return {"flashmm_config": CONFIG, "flashmm_secrets": VAULT, "flashmm_root": root, **extra}


@pytest.fixture(scope="module")
def fact():
    plan = build_plan({
        "plain": host("/srv/a", flashmm_compose_up=False),   # files + seed in one call
        "stacked": host("/srv/b", flashmm_compose_up=True),  # stack, then its own seed
    })
    return plan.fact()


def test_the_groups_of_the_later_plays_come_from_the_plan(fact):
    assert fact["stack_hosts"] == ["stacked"]
    assert fact["runtime_hosts"] == ["stacked"]
    # one add_host entry per host that joins a group; hosts seeded with their files join none
    assert fact["groups"] == [{"name": "stacked",
                               "groups": ["flashmm_stack_hosts", "flashmm_runtime_hosts"]}]
    assert fact["hosts"]["plain"]["runtime_with_files"] is True
    assert fact["hosts"]["stacked"]["runtime_with_files"] is False


def test_the_registered_result_holds_no_secret(fact):
    text = json.dumps(fact)
    for value in VAULT.values():
        assert value not in text


def test_host_part_returns_the_whole_plan_and_the_hosts_part(fact):
    whole, part = secret_files.host_part(fact, "flashmm_plan", "plain")
    assert whole is fact and part is fact["hosts"]["plain"]


@pytest.mark.parametrize("value", [None, "", [], {"run_id": "x"}, {"hosts": ["plain"]}])
def test_host_part_refuses_what_is_not_a_plan_by_name(value):
    with pytest.raises(secret_files.SecretFileError,
                       match=r"'my_plan' is not the result of the flashmm role's plan task"):
        secret_files.host_part(value, "my_plan", "plain")


def test_host_part_names_a_host_the_plan_does_not_hold(fact):
    with pytest.raises(secret_files.SecretFileError,
                       match=r"'flashmm_plan' holds no plan for host 'elsewhere'"):
        secret_files.host_part(fact, "flashmm_plan", "elsewhere")


def test_pick_secrets_env_layer_wins_and_empty_unsets(fact):
    secret_env = fact["secret_env"]
    picked = secret_files.pick_secrets(secret_env, VAULT, {"REDIS_PASSWORD": "o" * 20,
                                                           "API_AUTH_TOKEN": ""})
    assert picked["REDIS_PASSWORD"] == "o" * 20
    assert "API_AUTH_TOKEN" not in picked
    assert picked["SECRET_KEY"] == VAULT["secret_key"]


@pytest.mark.parametrize("vault, overrides, message", [
    (["not", "a", "mapping"], None, "flashmm_secrets must be a mapping"),
    (None, "REDIS_PASSWORD=x", "flashmm_env_overrides must be a mapping"),
    ({"redis_password": 12345678}, None, "the value of REDIS_PASSWORD must be a string"),
])
def test_pick_secrets_refuses_misshapen_layers_without_the_value(fact, vault, overrides,
                                                                 message):
    with pytest.raises(secret_files.SecretFileError, match=message) as caught:
        secret_files.pick_secrets(fact["secret_env"], vault, overrides)
    assert "12345678" not in str(caught.value)


# ---- what restarts the app ----------------------------------------------------------------

def _app_inputs(**trading) -> tuple[str, str, dict]:
    """(compose file, config file, .env's public vars) the plan renders for one stack host."""
    config = dict(CONFIG, trading=trading) if trading else CONFIG
    plan = build_plan({"h": dict(host("/srv/h", flashmm_compose_up=True),
                                 flashmm_config=config)})
    part = plan.fact()["hosts"]["h"]
    files = {f["path"]: f["content"] for f in part["files"]}
    return files["docker-compose.yml"], files["config/environments/local.yml"], \
        part["env"]["public"]


def test_a_runtime_only_change_leaves_the_compose_file_and_env_alone():
    compose, config_file, env = _app_inputs()
    runtime = _app_inputs(quote_frequency_hz=7.5, max_position_usdc=321.0)
    assert runtime[1] != config_file and "quote_frequency_hz: 7.5" in runtime[1]
    assert (runtime[0], runtime[2]) == (compose, env)
    assert "TRADING_QUOTE_FREQUENCY_HZ" not in env and "TRADING_MAX_POSITION_USDC" not in env


def test_any_other_change_moves_the_apps_fingerprint():
    compose, _, env = _app_inputs()
    other = _app_inputs(spread_buffer_bps=9.75)
    assert other[0] != compose and other[2] != env
    changed = [line for line in other[0].splitlines() if line not in compose.splitlines()]
    assert len(changed) == 1 and "io.flashmm.config-sha256" in changed[0]
