"""Every validation rule of the configuration model (README "Where configuration lives",
docs/configuration.md), one failing mutation each.

Each rejected mutation must name the dotted path, the layer and the file that set the bad value
in the rendered message.  Configs are built from LayerInputs with fake inventory file names; a
few mutations also go through a real inventory copy and ``flashmm-config validate``.
"""

from __future__ import annotations

import copy
import math
import random
import re
import secrets as random_tokens
import time
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.config.schema import FIELDS
from flashmm_deploy.config.validate import validate_layers
from support import flashmm_config, valid_secrets

ENV_SRC = "inventories/t/group_vars/all/flashmm.yml"
VAULT_SRC = "inventories/t/group_vars/all/vault.yml"
GROUP_SRC = "inventories/t/group_vars/flashmm/flashmm.yml"
HOST_SRC = "inventories/t/host_vars/mm-01.yml"
ENVVAR_SRC = "inventories/t/host_vars/mm-01.yml (env overrides)"

SEI = {
    "mainnet": {"network": "mainnet", "rpc_url": "https://rpc.sei-apis.com",
                "ws_url": "wss://rpc.sei-apis.com/websocket", "chain_id": "pacific-1"},
    "testnet": {"network": "testnet", "rpc_url": "https://sei-testnet-rpc.polkachu.com",
                "ws_url": "wss://sei-testnet-rpc.polkachu.com/websocket", "chain_id": "atlantic-2"},
    "devnet": {"network": "devnet", "rpc_url": "https://rpc-arctic-1.sei-apis.com",
               "ws_url": "wss://rpc-arctic-1.sei-apis.com/websocket", "chain_id": "arctic-1"},
}


def dev_config() -> dict:
    return {"app": {"environment": "development", "debug": True, "log_level": "DEBUG"},
            "sei": dict(SEI["testnet"])}


def prod_config() -> dict:
    return {
        "app": {"environment": "production", "debug": False, "log_level": "WARNING"},
        "sei": dict(SEI["mainnet"]),
        "storage": {"redis": {"password_required": True}, "influxdb": {"auth_required": True}},
        "security": {"encryption_required": True, "audit_logging": True,
                     "ip_whitelist_enabled": True},
    }


def with_value(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


def without(data: dict, path: str) -> dict:
    data = copy.deepcopy(data)
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    del node[leaf]
    return data


def check(env_data, secrets=None, *, extra=(), require_secrets=False, vault_available=True):
    layers = [LayerInput("environment", ENV_SRC, env_data)]
    if secrets is not False:
        layers.append(LayerInput("vault", VAULT_SRC,
                                 {"secrets": valid_secrets() if secrets is None else secrets}))
    layers.extend(extra)
    return validate_layers(layers, require_secrets=require_secrets,
                           vault_available=vault_available)


def rendered(issues) -> str:
    return "\n".join(i.render() for i in issues)


def assert_valid(result):
    assert result.errors == [], rendered(result.errors)
    assert result.config is not None


def assert_rejected(result, path, *, source=ENV_SRC, layer="environment", only=True):
    """An error at ``path`` whose rendered text names the path, the layer and the file."""
    hits = [i for i in result.errors if i.path == path]
    assert hits, f"no error at {path}; errors:\n{rendered(result.errors)}"
    text = hits[0].render()
    assert path in text
    assert source in text, text
    assert f"'{layer}'" in text, text
    assert result.config is None
    if only:
        assert {i.path for i in result.errors} == {path}, rendered(result.errors)
    return hits


def test_base_configs_are_valid():
    assert_valid(check(dev_config()))
    assert_valid(check(prod_config()))


# ---- seed rules: ranges and formats ----------------------------------------------------------

REJECTED = [
    ("trading.max_position_usdc", 0),
    ("trading.max_position_usdc", -1),
    ("trading.max_position_usdc", 100000.01),
    ("trading.max_position_usdc", 250000),
    ("trading.quote_frequency_hz", 0),
    ("trading.quote_frequency_hz", -0.5),
    ("trading.quote_frequency_hz", 10.01),
    ("trading.max_quote_levels", 0),
    ("trading.max_quote_levels", -1),
    ("trading.max_quote_levels", 2.5),
    ("trading.max_quote_levels", True),
    ("sei.rpc_url", "rpc.sei-apis.com"),
    ("sei.rpc_url", "ftp://rpc.sei-apis.com"),
    ("sei.rpc_url", "wss://rpc.sei-apis.com/websocket"),
    ("sei.rpc_url", "https://"),
    ("cambrian.base_url", "api.cambrian.com"),
    ("cambrian.base_url", "ws://api.cambrian.com"),
    ("monitoring.grafana_url", "flashmm.grafana.net"),
    ("monitoring.grafana_url", "grafana://flashmm.grafana.net"),
    ("sei.ws_url", "https://rpc.sei-apis.com/websocket"),
    ("sei.ws_url", "rpc.sei-apis.com/websocket"),
    ("storage.redis.url", "http://redis:6379/0"),
    ("storage.redis.url", "redis:6379"),
    ("storage.influxdb.url", "influxdb:8086"),
    ("ml.confidence_threshold", -0.01),
    ("ml.confidence_threshold", 1.01),
    ("api.port", 0),
    ("api.port", -1),
    ("api.port", 65536),
    ("storage.redis.port", 70000),
    ("app.log_level", "TRACE"),
    ("app.log_level", "info"),
    ("app.log_level", ""),
    ("sei.network", "localnet"),
    ("sei.network", "Mainnet"),
    ("app.environment", "staging"),
]


@pytest.mark.parametrize("path,value", REJECTED, ids=[f"{p}={v!r}" for p, v in REJECTED])
def test_out_of_range_or_malformed_value_is_rejected(path, value):
    result = check(with_value(dev_config(), path, value))
    issue = assert_rejected(result, path)[0]
    assert f"got {value!r}" in issue.message            # a plain value is shown to the operator
    assert FIELDS[path].doc in issue.message             # with what is expected


ACCEPTED = [
    ("trading.max_position_usdc", 100000),
    ("trading.max_position_usdc", 100000.0),
    ("trading.max_position_usdc", 0.01),
    ("trading.quote_frequency_hz", 10),
    ("trading.quote_frequency_hz", 0.1),
    ("trading.max_quote_levels", 1),
    ("trading.max_quote_levels", 20),
    ("sei.rpc_url", "http://127.0.0.1:26657"),
    ("sei.ws_url", "ws://127.0.0.1:26657/websocket"),
    ("cambrian.base_url", "http://127.0.0.1:8080"),
    ("monitoring.grafana_url", "http://grafana.local:3000"),
    ("storage.redis.url", "redis://127.0.0.1:6379/0"),
    ("storage.redis.url", "rediss://redis.example:6380/2"),
    ("storage.influxdb.url", "https://influx.example"),
    ("ml.confidence_threshold", 0),
    ("ml.confidence_threshold", 1),
    ("ml.confidence_threshold", 0.95),
    ("api.port", 1),
    ("api.port", 65535),
    ("app.log_level", "DEBUG"),
    ("app.log_level", "CRITICAL"),
]


@pytest.mark.parametrize("path,value", ACCEPTED, ids=[f"{p}={v!r}" for p, v in ACCEPTED])
def test_boundary_and_well_formed_value_is_accepted(path, value):
    result = check(with_value(dev_config(), path, value))
    assert_valid(result)
    assert result.resolution.values[path] == value


def test_int_for_a_float_field_is_accepted_as_a_number():
    result = check(with_value(dev_config(), "trading.quote_frequency_hz", 5))
    assert_valid(result)
    assert result.config.trading.quote_frequency_hz == 5.0


# ---- strict typing and non-finite numbers ------------------------------------------------------

STRICT = [
    ("trading.max_position_usdc", "100"),       # a string is not a float
    ("trading.quote_frequency_hz", "5.0"),
    ("trading.max_quote_levels", "3"),
    ("trading.max_quote_levels", True),          # true is not an int
    ("api.port", True),
    ("app.debug", "false"),                      # a string is not a bool
    ("app.debug", 0),                            # nor is an int
    ("app.version", 1.1),                        # YAML's 1.10 is a float, not the string "1.10"
    ("api.cors_origins", "*"),                   # a list field wants a list
    ("api.cors_origins", ["https://a.example", 3]),
]


@pytest.mark.parametrize("path,value", STRICT, ids=[f"{p}={v!r}" for p, v in STRICT])
def test_values_are_not_coerced_between_types(path, value):
    assert_rejected(check(with_value(dev_config(), path, value)), path)


NON_FINITE = [
    ("trading.max_position_usdc", math.nan),
    ("trading.max_position_usdc", math.inf),
    ("trading.quote_frequency_hz", -math.inf),
    ("ml.confidence_threshold", math.nan),
    ("trading.risk_multiplier", math.inf),       # only gt=0: the range alone would let inf through
    ("trading.spread_buffer_bps", math.nan),
]


@pytest.mark.parametrize("path,value", NON_FINITE, ids=[f"{p}={v!r}" for p, v in NON_FINITE])
def test_nan_and_infinity_are_rejected(path, value):
    assert_rejected(check(with_value(dev_config(), path, value)), path)


# ---- unknown keys and malformed sections -------------------------------------------------------

def test_misspelt_key_is_rejected_with_did_you_mean():
    result = check(with_value(dev_config(), "trading.max_postion_usdc", 500.0))
    issue = assert_rejected(result, "trading.max_postion_usdc")[0]
    assert "did you mean trading.max_position_usdc" in issue.render()


def test_key_in_the_wrong_section_suggests_the_right_section():
    result = check(with_value(dev_config(), "trading.confidence_threshold", 0.7))
    issue = assert_rejected(result, "trading.confidence_threshold")[0]
    assert "did you mean ml.confidence_threshold" in issue.render()


def test_unknown_section_is_rejected_with_did_you_mean():
    data = dev_config()
    data["tradng"] = {"max_position_usdc": 500.0}
    issue = assert_rejected(check(data), "tradng")[0]
    assert "did you mean trading" in issue.render()


def test_unknown_nested_key_is_rejected():
    result = check(with_value(dev_config(), "storage.redis.passwd", "x"))
    assert_rejected(result, "storage.redis.passwd")


@pytest.mark.parametrize("path,value", [("trading", 5), ("trading", ["max_position_usdc"]),
                                        ("storage.redis", "redis://redis:6379/0"),
                                        ("monitoring.alert_thresholds", 2.0)])
def test_section_that_is_not_a_mapping_is_rejected(path, value):
    issue = assert_rejected(check(with_value(dev_config(), path, value)), path)[0]
    assert "mapping" in issue.message


def test_layer_that_is_not_a_mapping_is_rejected():
    result = check(["app", "sei"])
    hits = [i for i in result.errors if ENV_SRC in i.render() and "mapping" in i.message]
    assert hits, rendered(result.errors)
    assert result.config is None


@pytest.mark.parametrize("path", ["sei.network", "sei.rpc_url", "sei.ws_url", "sei.chain_id"])
def test_required_sei_key_missing_is_an_error(path):
    result = check(without(dev_config(), path))
    hits = [i for i in result.errors if i.path == path]
    assert hits, rendered(result.errors)
    text = hits[0].render()
    assert "required" in text
    assert FIELDS[path].env in text                       # where it could come from instead
    assert "group_vars/all/flashmm.yml" in text
    assert result.config is None


def test_missing_required_key_names_the_environment_file_and_layer():
    """Every error names its dotted path, layer and file (README "Everyday use").  A missing
    required key has no winning value, so the file to name is the environment layer's, where
    it belongs."""
    result = check(without(dev_config(), "sei.chain_id"))
    hits = [i for i in result.errors if i.path == "sei.chain_id"]
    assert hits, rendered(result.errors)
    text = hits[0].render()
    assert ENV_SRC in text, text
    assert "'environment'" in text, text


def test_missing_sei_section_is_an_error():
    data = dev_config()
    del data["sei"]
    result = check(data)
    assert any(i.path == "sei" and "required" in i.message for i in result.errors), \
        rendered(result.errors)


# ---- cross-field rules -------------------------------------------------------------------------

CHAIN_PAIRS = [(net, chain) for net in SEI for chain in ("pacific-1", "atlantic-2", "arctic-1",
                                                         "sei-devnet-3")
               if chain != SEI[net]["chain_id"]]


@pytest.mark.parametrize("network,chain_id", CHAIN_PAIRS,
                         ids=[f"{n}-{c}" for n, c in CHAIN_PAIRS])
def test_chain_id_must_match_network(network, chain_id):
    data = dev_config()
    data["sei"] = dict(SEI[network], chain_id=chain_id)
    issue = assert_rejected(check(data), "sei.chain_id")[0]
    text = issue.render()
    assert repr(SEI[network]["chain_id"]) in text       # says what it expected
    assert "sei.network" in text                         # and which key it disagrees with


@pytest.mark.parametrize("network", list(SEI))
def test_matching_chain_id_is_accepted(network):
    data = dev_config()
    data["sei"] = dict(SEI[network])
    result = check(data)
    assert_valid(result)
    assert result.config.sei.chain_id == SEI[network]["chain_id"]


def test_seed_testnet_combination_is_rejected():
    """Seed erratum: its testnet.yml says network testnet but points at mainnet."""
    data = dev_config()
    data["app"]["environment"] = "testnet"
    data["sei"] = {"network": "testnet", "rpc_url": "https://rpc.sei-apis.com",
                   "ws_url": "wss://rpc.sei-apis.com/websocket", "chain_id": "pacific-1"}
    issue = assert_rejected(check(data), "sei.chain_id")[0]
    assert "'atlantic-2'" in issue.render()


def test_chain_id_error_names_the_file_of_each_key():
    """network from the environment file, chain_id from a host file: both are named."""
    host = LayerInput("host", HOST_SRC, {"sei": {"chain_id": "pacific-1"}})
    result = check(dev_config(), extra=[host])
    issue = assert_rejected(result, "sei.chain_id", source=HOST_SRC, layer="host")[0]
    text = issue.render()
    assert ENV_SRC in text and "sei.network" in text


PRODUCTION_RULES = [
    ("app.debug", True),
    ("app.log_level", "INFO"),
    ("app.log_level", "DEBUG"),
    ("security.encryption_required", False),
    ("security.audit_logging", False),
    ("security.ip_whitelist_enabled", False),
    ("storage.redis.password_required", False),
    ("storage.influxdb.auth_required", False),
]


@pytest.mark.parametrize("path,value", PRODUCTION_RULES,
                         ids=[f"{p}={v!r}" for p, v in PRODUCTION_RULES])
def test_production_requirement_is_enforced(path, value):
    issue = assert_rejected(check(with_value(prod_config(), path, value)), path)[0]
    assert "production" in issue.render()


@pytest.mark.parametrize("path,value", PRODUCTION_RULES,
                         ids=[f"{p}={v!r}" for p, v in PRODUCTION_RULES])
def test_production_requirement_does_not_apply_outside_production(path, value):
    data = with_value(prod_config(), path, value)
    data["app"]["environment"] = "testnet"
    assert_valid(check(data))


@pytest.mark.parametrize("level", ["WARNING", "ERROR", "CRITICAL"])
def test_production_accepts_warning_or_higher(level):
    assert_valid(check(with_value(prod_config(), "app.log_level", level)))


def test_production_requirement_left_at_its_default_names_the_defaults_layer():
    data = prod_config()
    del data["security"]["audit_logging"]
    result = check(data)
    assert_rejected(result, "security.audit_logging", source="schema default", layer="defaults")


def test_production_rule_names_the_host_file_that_broke_it():
    host = LayerInput("host", HOST_SRC, {"app": {"debug": True}})
    assert_rejected(check(prod_config(), extra=[host]), "app.debug", source=HOST_SRC, layer="host")


# ---- all errors in one pass --------------------------------------------------------------------

def test_all_errors_are_reported_in_one_pass():
    data = dev_config()
    data["trading"] = {"max_position_usdc": 0, "quote_frequency_hz": 50,
                       "max_postion_usdc": 10.0}
    data["ml"] = {"confidence_threshold": 1.5}
    data["api"] = {"port": 99999}
    data["sei"]["chain_id"] = "pacific-1"
    result = check(data)
    paths = {i.path for i in result.errors}
    expected = {"trading.max_position_usdc", "trading.quote_frequency_hz",
                "trading.max_postion_usdc", "ml.confidence_threshold", "api.port", "sei.chain_id"}
    assert expected <= paths, rendered(result.errors)
    assert len(result.errors) >= 5
    assert all(ENV_SRC in i.render() for i in result.errors)


# ---- secrets: where they may live ----------------------------------------------------------------

PLAIN_LAYERS = [("environment", ENV_SRC), ("group", GROUP_SRC), ("host", HOST_SRC)]


@pytest.mark.parametrize("layer,source", PLAIN_LAYERS, ids=[name for name, _ in PLAIN_LAYERS])
@pytest.mark.parametrize("key", ["secret_key", "redis_password", "cambrian_api_key"])
def test_secret_in_a_plain_text_layer_is_rejected(layer, source, key):
    value = "plain-" + random_tokens.token_urlsafe(32)
    data = {"secrets": {key: value}}
    if layer == "environment":
        result = check(dict(dev_config(), **data))
    else:
        result = check(dev_config(), extra=[LayerInput(layer, source, data)])
    issue = assert_rejected(result, f"secrets.{key}", source=source, layer=layer)[0]
    assert "vault" in issue.message
    assert value not in repr(result.errors)
    # and the plain-text value never becomes the effective one
    assert result.resolution.values[f"secrets.{key}"] != value


def test_secrets_from_the_vault_and_env_layers_are_accepted():
    env = LayerInput("env", ENVVAR_SRC, {"API_AUTH_TOKEN": random_tokens.token_urlsafe(40)})
    result = check(dev_config(), extra=[env])
    assert_valid(result)
    assert result.resolution.origin("secrets.api_auth_token").layer == "env"
    assert result.resolution.origin("secrets.secret_key").layer == "vault"


# ---- secret value rules ------------------------------------------------------------------------

UNSAFE = [("'", "single quote"), ("\\", "backslash"), ("\n", "newline"),
          ("${", "dollar sign followed by an opening brace")]


@pytest.mark.parametrize("char,name", UNSAFE, ids=["quote", "backslash", "newline", "dollar-brace"])
@pytest.mark.parametrize("key", ["cambrian_api_key", "secret_key", "twitter_api_secret"])
def test_secret_with_a_character_the_env_dialects_disagree_on_is_rejected(char, name, key):
    secrets = valid_secrets()
    secrets[key] = random_tokens.token_urlsafe(20) + char + random_tokens.token_urlsafe(20)
    issue = assert_rejected(check(dev_config(), secrets), f"secrets.{key}",
                            source=VAULT_SRC, layer="vault")[0]
    text = issue.render()
    assert FIELDS[f"secrets.{key}"].env in text        # names the variable
    assert name in text
    assert secrets[key] not in text


@pytest.mark.parametrize("char", ["'", "\\", "\n", "${"], ids=["quote", "backslash", "newline",
                                                             "dollar-brace"])
def test_secret_env_override_with_an_unsafe_character_is_rejected(char):
    value = random_tokens.token_urlsafe(24) + char + "x" * 10
    env = LayerInput("env", ENVVAR_SRC, {"CAMBRIAN_SECRET_KEY": value})
    # a control character is refused where the layer is read: the env override is named there
    path = "secrets.cambrian_secret_key" + (" (CAMBRIAN_SECRET_KEY)" if char == "\n" else "")
    issue = assert_rejected(check(dev_config(), extra=[env]), path,
                            source=ENVVAR_SRC, layer="env")[0]
    assert "CAMBRIAN_SECRET_KEY" in issue.render() and value not in issue.render()


def test_plain_value_with_an_unsafe_character_is_rejected_too():
    issue = assert_rejected(check(with_value(dev_config(), "app.name", "Flash'MM")), "app.name")[0]
    assert "FLASHMM_APP_NAME" in issue.render()


@pytest.mark.parametrize("key,minimum", [("secret_key", 32), ("api_auth_token", 32),
                                         ("redis_password", 16)])
def test_secret_shorter_than_its_minimum_is_rejected(key, minimum):
    secrets = valid_secrets()
    secrets[key] = "a" * (minimum - 1)
    issue = assert_rejected(check(dev_config(), secrets), f"secrets.{key}",
                            source=VAULT_SRC, layer="vault")[0]
    assert FIELDS[f"secrets.{key}"].env in issue.render() and str(minimum) in issue.render()
    secrets[key] = "a" * minimum
    assert_valid(check(dev_config(), secrets))


@pytest.mark.parametrize("key", ["encryption_key", "old_encryption_key"])
@pytest.mark.parametrize("bad", ["x" * 44, random_tokens.token_urlsafe(32), "not-a-key",
                                 Fernet.generate_key().decode()[:-2] + "==" + "A"],
                         ids=["44-x", "token-43", "short", "bad-padding"])
def test_encryption_key_must_be_a_fernet_key(key, bad):
    secrets = valid_secrets()
    secrets[key] = bad
    issue = assert_rejected(check(dev_config(), secrets), f"secrets.{key}",
                            source=VAULT_SRC, layer="vault")[0]
    assert "Fernet" in issue.render() and bad not in issue.render()


def test_fernet_key_is_accepted():
    secrets = valid_secrets()
    secrets["encryption_key"] = Fernet.generate_key().decode()
    assert_valid(check(dev_config(), secrets))


@pytest.mark.parametrize("url", ["http://hooks.example.com/T0/B0", "hooks.example.com/T0",
                                 "ftp://hooks.example.com/x"])
def test_alert_webhook_must_be_https(url):
    secrets = valid_secrets()
    secrets["alert_webhook_url"] = url
    issue = assert_rejected(check(dev_config(), secrets), "secrets.alert_webhook_url",
                            source=VAULT_SRC, layer="vault")[0]
    assert "ALERT_WEBHOOK_URL" in issue.render() and "https://" in issue.render()
    assert url not in issue.render()


def test_empty_secret_is_rejected():
    secrets = valid_secrets()
    secrets["twitter_api_key"] = ""
    assert_rejected(check(dev_config(), secrets), "secrets.twitter_api_key",
                    source=VAULT_SRC, layer="vault")


def test_secret_of_the_wrong_type_is_rejected_without_its_value():
    secrets = valid_secrets()
    secrets["cambrian_api_key"] = ["list-value-abcdef"]
    issue = assert_rejected(check(dev_config(), secrets), "secrets.cambrian_api_key",
                            source=VAULT_SRC, layer="vault")[0]
    assert "list-value-abcdef" not in issue.render()


# ---- required secrets: warning or error -------------------------------------------------------

def required_secrets_missing(result, key):
    return [i for i in result.errors + result.warnings if i.path == f"secrets.{key}"]


@pytest.mark.parametrize("key", ["secret_key", "encryption_key", "api_auth_token"])
def test_missing_secret_is_a_warning_when_the_vault_is_unavailable(key):
    result = check(dev_config(), secrets=False, vault_available=False)
    assert not result.errors, rendered(result.errors)
    assert result.config is not None
    warned = [w for w in result.warnings if w.path == f"secrets.{key}"]
    assert warned and FIELDS[f"secrets.{key}"].env in warned[0].render()


@pytest.mark.parametrize("key", ["secret_key", "encryption_key", "api_auth_token"])
def test_missing_secret_is_an_error_with_require_secrets(key):
    result = check(dev_config(), secrets=False, vault_available=False, require_secrets=True)
    assert [i for i in result.errors if i.path == f"secrets.{key}"], rendered(result.errors)
    assert result.config is None


def test_missing_secret_is_an_error_when_the_vault_is_readable():
    """The vault was opened and lacks a needed secret: that is not 'unavailable'."""
    secrets = valid_secrets()
    del secrets["api_auth_token"]
    result = check(dev_config(), secrets)
    assert [i for i in result.errors if i.path == "secrets.api_auth_token"], \
        rendered(result.errors)


def test_placeholder_secret_is_a_warning_in_validate():
    secrets = valid_secrets()
    secrets["secret_key"] = "__PLACEHOLDER__"
    secrets["encryption_key"] = "__PLACEHOLDER__"     # not a Fernet error: it is a placeholder
    result = check(dev_config(), secrets)
    assert not result.errors, rendered(result.errors)
    warned = {w.path: w for w in result.warnings}
    assert {"secrets.secret_key", "secrets.encryption_key"} <= set(warned)
    text = warned["secrets.secret_key"].render()
    assert "placeholder" in text and VAULT_SRC in text and "SECRET_KEY" in text


def test_placeholder_secret_is_an_error_with_require_secrets():
    secrets = valid_secrets()
    secrets["secret_key"] = "__PLACEHOLDER__"
    result = check(dev_config(), secrets, require_secrets=True)
    issue = assert_rejected(result, "secrets.secret_key", source=VAULT_SRC, layer="vault")[0]
    assert "placeholder" in issue.message


CONDITIONAL = [
    ("redis_password", "storage.redis.password_required", True),
    ("influxdb_token", "storage.influxdb.auth_required", True),
    ("grafana_api_key", "monitoring.grafana_enabled", True),
    ("twitter_bearer_token", "monitoring.twitter_enabled", True),
    ("twitter_api_key", "monitoring.twitter_enabled", True),
    ("twitter_api_secret", "monitoring.twitter_enabled", True),
    ("cambrian_api_key", "app.environment", "testnet"),
    ("cambrian_secret_key", "app.environment", "testnet"),
    ("alert_webhook_url", "app.environment", "testnet"),
]


@pytest.mark.parametrize("key,switch,on", CONDITIONAL, ids=[c[0] for c in CONDITIONAL])
def test_conditional_secret_is_needed_only_when_its_feature_is_on(key, switch, on):
    secrets = valid_secrets()
    del secrets[key]
    off = check(dev_config(), secrets, require_secrets=True)
    assert not required_secrets_missing(off, key), rendered(off.errors)
    data = with_value(dev_config(), switch, on)
    needed = check(data, secrets, require_secrets=True)
    hits = [i for i in needed.errors if i.path == f"secrets.{key}"]
    assert hits, rendered(needed.errors)
    assert switch in hits[0].message or f"{on}" in hits[0].message


def test_alert_webhook_is_not_needed_when_alerts_are_off():
    secrets = valid_secrets()
    del secrets["alert_webhook_url"]
    data = with_value(with_value(dev_config(), "app.environment", "testnet"),
                      "monitoring.alert_enabled", False)
    assert_valid(check(data, secrets, require_secrets=True))


# ---- the same rules through a real inventory and the CLI ---------------------------------------

def edit_yaml(path: Path, change):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def cli_rejects(inventory: Path, path: str, file: Path):
    proc = flashmm_config("validate", str(inventory))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert path in proc.stderr
    assert str(file) in proc.stderr, proc.stderr
    return proc


# ---- URLs never carry credentials, and always name a host -----------------------------------

@pytest.mark.parametrize("path,url", [
    ("storage.redis.url", "redis://:Pw-CANARY-9f@redis:6379/0"),
    ("storage.redis.url", "redis://user:Pw/CANARY#x?y@redis:6379/0"),   # '/', '#', '?' inside
    ("sei.rpc_url", "https://user:CANARY-rpc@rpc.example"),
    ("storage.influxdb.url", "http://token-CANARY@influxdb:8086"),
])
def test_a_url_with_credentials_is_refused_and_never_shown(path, url):
    result = check(with_value(dev_config(), path, url))
    text = rendered(result.errors)
    assert f"{path}: must not carry credentials" in text and "(value hidden)" in text
    assert "CANARY" not in text


def test_explain_of_a_url_with_credentials_masks_them():
    from flashmm_deploy.config import effective
    result = check(with_value(dev_config(), "storage.redis.url", "redis://:CANARY-x@redis:1/0"))
    assert "CANARY" not in str(effective.explain(result.resolution, "storage.redis.url"))


@pytest.mark.parametrize("url", ["https://", "https:// ", "https://:8080", "https://a b.example",
                                 "https:///path"])
def test_a_url_without_a_valid_host_is_refused(url):
    assert_rejected(check(with_value(dev_config(), "sei.rpc_url", url)), "sei.rpc_url")


def test_a_huge_string_is_refused_and_not_echoed_whole():
    result = check(with_value(dev_config(), "app.name", "x" * 100000))
    text = rendered(result.errors)
    assert "app.name" in text and len(text) < 2000


def test_the_credential_check_takes_linear_time_and_still_finds_what_it_found():
    """The credential-URL pattern was quadratic in a run of scheme characters (100 kB of 'x'
    took 11 s); the linear one matches exactly the strings the old pattern matched."""
    from flashmm_deploy.config.layers import _CREDENTIAL_URL

    started = time.perf_counter()
    result = check(with_value(dev_config(), "app.name", "x" * 200000 + "://"))
    assert "app.name" in rendered(result.errors)
    assert time.perf_counter() - started < 2
    reference = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@]*:[^\s@]*@")
    rng = random.Random(16)
    pieces = ["a", "Z", "0", "9", "+", ".", "-", ":", "/", "@", " ", "\t", "x",
              "://", "http://u:p@", "1a://:@", "://:"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 16)))
        assert bool(_CREDENTIAL_URL.search(text)) == bool(reference.search(text)), text
