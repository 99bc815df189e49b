"""Environment variables: the seed's env schema maps onto schema keys both ways, values round
trip through their env spelling, and env strings are parsed strictly (no silent coercion)."""

from __future__ import annotations

import math
import secrets as random_tokens

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from flashmm_deploy.config import env_strings, effective
from flashmm_deploy.config.layers import LayerInput, resolve
from flashmm_deploy.config.schema import FIELDS, FIELDS_BY_ENV
from flashmm_deploy.config.validate import validate_layers

ENV_SRC = "inventories/t/group_vars/all/flashmm.yml"
VAULT_SRC = "inventories/t/group_vars/all/vault.yml"
ENVVAR_SRC = "command line"

# The seed's env schema (its .env template), with the key each variable must set.  This is the
# contract: a rename here is a breaking change for every deployed .env.
SEED_ENV_VARS = {
    "ENVIRONMENT": "app.environment",
    "FLASHMM_DEBUG": "app.debug",
    "FLASHMM_LOG_LEVEL": "app.log_level",
    "FLASHMM_VERSION": "app.version",
    "SEI_NETWORK": "sei.network",
    "SEI_RPC_URL": "sei.rpc_url",
    "SEI_WS_URL": "sei.ws_url",
    "SEI_CHAIN_ID": "sei.chain_id",
    "TRADING_MAX_POSITION_USDC": "trading.max_position_usdc",
    "TRADING_QUOTE_FREQUENCY_HZ": "trading.quote_frequency_hz",
    "TRADING_MAX_QUOTE_LEVELS": "trading.max_quote_levels",
    "CAMBRIAN_API_KEY": "secrets.cambrian_api_key",
    "CAMBRIAN_SECRET_KEY": "secrets.cambrian_secret_key",
    "CAMBRIAN_BASE_URL": "cambrian.base_url",
    "REDIS_URL": "storage.redis.url",
    "REDIS_PASSWORD": "secrets.redis_password",
    "INFLUXDB_URL": "storage.influxdb.url",
    "INFLUXDB_TOKEN": "secrets.influxdb_token",
    "INFLUXDB_ORG": "storage.influxdb.org",
    "INFLUXDB_BUCKET": "storage.influxdb.bucket",
    "GRAFANA_API_KEY": "secrets.grafana_api_key",
    "GRAFANA_URL": "monitoring.grafana_url",
    "TWITTER_BEARER_TOKEN": "secrets.twitter_bearer_token",
    "TWITTER_API_KEY": "secrets.twitter_api_key",
    "TWITTER_API_SECRET": "secrets.twitter_api_secret",
    "SECRET_KEY": "secrets.secret_key",
    "ENCRYPTION_KEY": "secrets.encryption_key",
    "API_AUTH_TOKEN": "secrets.api_auth_token",
    "ML_MODEL_PATH": "ml.model_path",
    "ML_CONFIDENCE_THRESHOLD": "ml.confidence_threshold",
    "ML_INFERENCE_TIMEOUT_MS": "ml.inference_timeout_ms",
    "HEALTH_CHECK_INTERVAL_SECONDS": "monitoring.health_check_interval_seconds",
    "METRICS_COLLECTION_INTERVAL_SECONDS": "monitoring.metrics_collection_interval_seconds",
    "ALERT_WEBHOOK_URL": "secrets.alert_webhook_url",
}
SEED_SECRETS = {"CAMBRIAN_API_KEY", "CAMBRIAN_SECRET_KEY", "REDIS_PASSWORD", "INFLUXDB_TOKEN",
                "GRAFANA_API_KEY", "TWITTER_BEARER_TOKEN", "TWITTER_API_KEY", "TWITTER_API_SECRET",
                "SECRET_KEY", "ENCRYPTION_KEY", "API_AUTH_TOKEN", "ALERT_WEBHOOK_URL"}


# ---- the mapping, both ways ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SEED_ENV_VARS))
def test_seed_env_var_maps_to_exactly_one_schema_key_and_back(name):
    assert name in FIELDS_BY_ENV, f"{name} has no schema key"
    spec = FIELDS_BY_ENV[name]
    assert spec.path == SEED_ENV_VARS[name]
    assert [f.path for f in FIELDS.values() if f.env == name] == [spec.path]
    assert FIELDS[spec.path].env == name


@pytest.mark.parametrize("name", sorted(SEED_SECRETS))
def test_seed_secret_env_vars_are_secret_fields(name):
    assert FIELDS_BY_ENV[name].secret


def test_every_schema_field_has_a_unique_env_var():
    names = [f.env for f in FIELDS.values()]
    assert all(n and n == n.upper() and n.replace("_", "").isalnum() for n in names), names
    assert len(set(names)) == len(names)
    assert set(FIELDS_BY_ENV) == set(names)
    assert all(FIELDS_BY_ENV[f.env] is f for f in FIELDS.values())


# ---- round trip through the env spelling -------------------------------------------------------

def samples(spec) -> list:
    """Values of the field's type worth round-tripping (not necessarily valid for its range)."""
    out = [] if spec.default is None else [spec.default]
    if spec.optional:
        out.append(None)
    out += {
        "bool": [True, False],
        "int": [0, 1, 8000, -3, 65535],
        "float": [0.1, 2.0, 1e-07, 100000.0, 12345.678, 5.0, -0.5, 1e21],
        "list": [[], ["*"], ["https://a.example", "b c", "ü"]],
        "choice": list(spec.choices),
        "str": ["1.10", "a b#c$d=e", "ünïcødé", "0", "true", random_token()],
    }[spec.kind]
    return out


RANDOM_TOKENS: set[str] = set()


def random_token() -> str:
    """A new random token, named "<random token>" in test ids: pytest-xdist's workers must
    collect the same ids."""
    token = random_tokens.token_urlsafe(32)
    RANDOM_TOKENS.add(token)
    return token


ROUND_TRIPS = [(path, v) for path, spec in FIELDS.items() for v in samples(spec)]


def _id(path: str, value) -> str:
    random = isinstance(value, str) and value in RANDOM_TOKENS
    return f"{path}={'<random token>' if random else repr(value)}"


@pytest.mark.parametrize("path,value", ROUND_TRIPS, ids=[_id(p, v) for p, v in ROUND_TRIPS])
def test_value_round_trips_through_its_env_spelling(path, value):
    spec = FIELDS[path]
    text = env_strings.render(spec, value)
    assert isinstance(text, str)
    back = env_strings.parse(spec, text)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("path", [p for p, s in FIELDS.items() if s.secret])
def test_secret_value_round_trips_from_a_secretstr(path):
    value = random_tokens.token_urlsafe(40)
    spec = FIELDS[path]
    assert env_strings.parse(spec, env_strings.render(spec, SecretStr(value))) == value


def two_values(spec):
    """Two distinct values of the field's type (A for the environment/vault layer, B for env)."""
    if spec.kind == "choice":
        return spec.choices[0], spec.choices[1]
    if spec.secret:
        return random_tokens.token_urlsafe(40), random_tokens.token_urlsafe(40)
    if spec.env.endswith("_URL"):
        scheme = {"SEI_WS_URL": "wss", "REDIS_URL": "redis"}.get(spec.env, "https")
        return f"{scheme}://a.example", f"{scheme}://b.example"
    return {"bool": (False, True), "int": (7, 9), "float": (0.25, 0.5),
            "list": (["https://a.example"], ["https://b.example", "https://c.example"]),
            "str": ("value-a", "value-b")}[spec.kind]


def nested(path, value):
    out: dict = {}
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


@pytest.mark.parametrize("path", list(FIELDS))
def test_env_override_wins_over_the_file_layers(path):
    spec = FIELDS[path]
    a, b = two_values(spec)
    lower = (LayerInput("vault", VAULT_SRC, nested(path, a)) if spec.secret
             else LayerInput("environment", ENV_SRC, nested(path, a)))
    env = LayerInput("env", ENVVAR_SRC, {spec.env: env_strings.render(spec, b)})
    res = resolve([env, lower])
    assert res.issues == [], [i.render() for i in res.issues]
    assert res.values[path] == b
    assert res.provenance[path].origin.layer == "env"
    assert res.provenance[path].origin.source == ENVVAR_SRC
    assert res.provenance[path].shadowed[-1] == (lower.origin, a)


def test_env_vars_of_a_valid_config_read_back_to_the_same_config():
    """What deploy renders into .env, read back as env overrides, is the same configuration."""
    env_layer = {"app": {"environment": "development", "version": "1.10"},
                 "sei": {"network": "devnet", "rpc_url": "https://rpc.example",
                         "ws_url": "wss://rpc.example/websocket", "chain_id": "arctic-1"},
                 "api": {"cors_origins": ["https://a.example", "https://b.example"]},
                 "trading": {"max_position_usdc": 1234.5678}}
    vault = {"secrets": {"secret_key": random_tokens.token_urlsafe(40),
                         "api_auth_token": random_tokens.token_urlsafe(40),
                         "encryption_key": Fernet.generate_key().decode(),
                         "alert_webhook_url": "https://hooks.example/" + random_tokens.token_urlsafe(8)}}
    first = validate_layers([LayerInput("environment", ENV_SRC, env_layer),
                             LayerInput("vault", VAULT_SRC, vault)])
    assert first.ok, [i.render() for i in first.errors]
    rendered = {**effective.public_env(first.config), **effective.secret_env(first.config)}
    again = validate_layers([LayerInput("env", ENVVAR_SRC, rendered)])
    assert again.ok, [i.render() for i in again.errors]
    assert effective.effective(again.config, redact=False) == \
        effective.effective(first.config, redact=False)
    assert all(again.resolution.origin(FIELDS_BY_ENV[n].path).layer == "env"
               for n, v in rendered.items() if v != "")      # "" unsets an optional key


# ---- strict parsing -----------------------------------------------------------------------------

def spec_of(name):
    return FIELDS_BY_ENV[name]


def test_string_that_looks_like_a_number_stays_a_string():
    assert env_strings.parse(spec_of("FLASHMM_VERSION"), "1.10") == "1.10"
    result = validate_layers([
        LayerInput("environment", ENV_SRC, {"sei": {"network": "testnet",
                                                    "rpc_url": "https://r.example",
                                                    "ws_url": "wss://r.example",
                                                    "chain_id": "atlantic-2"}}),
        LayerInput("env", ENVVAR_SRC, {"FLASHMM_VERSION": "1.10", "INFLUXDB_ORG": "007"}),
    ], vault_available=False)
    assert result.ok, [i.render() for i in result.errors]
    assert result.config.app.version == "1.10"
    assert result.config.storage.influxdb.org == "007"


@pytest.mark.parametrize("raw", ["abc", "yes", "nan", "NaN", "inf", "-inf", "Infinity", "", " ",
                                 "1,5", "0x10", "1e999"])
def test_float_env_var_rejects_non_numbers(raw):
    with pytest.raises(env_strings.EnvParseError):
        env_strings.parse(spec_of("TRADING_MAX_POSITION_USDC"), raw)


@pytest.mark.parametrize("raw,value", [("2.5", 2.5), ("10", 10.0), ("1e3", 1000.0),
                                       ("-0.5", -0.5), (".5", 0.5), ("5.", 5.0)])
def test_float_env_var_accepts_decimal_and_exponent(raw, value):
    parsed = env_strings.parse(spec_of("TRADING_QUOTE_FREQUENCY_HZ"), raw)
    assert parsed == value and isinstance(parsed, float) and math.isfinite(parsed)


@pytest.mark.parametrize("raw", ["8000.0", "1e3", "abc", "", "8_000", "0x1F40", "true", "8000 1"])
def test_int_env_var_rejects_anything_but_digits(raw):
    with pytest.raises(env_strings.EnvParseError):
        env_strings.parse(spec_of("ML_INFERENCE_TIMEOUT_MS"), raw)


@pytest.mark.parametrize("raw,value", [("8000", 8000), ("-3", -3), ("+7", 7), ("0", 0)])
def test_int_env_var_accepts_digits(raw, value):
    parsed = env_strings.parse(spec_of("TRADING_MAX_QUOTE_LEVELS"), raw)
    assert parsed == value and type(parsed) is int


@pytest.mark.parametrize("raw,value", [("true", True), ("TRUE", True), ("True", True),
                                       ("tRuE", True), ("1", True), ("false", False),
                                       ("FALSE", False), ("False", False), ("0", False)])
def test_bool_env_var_accepts_true_false_1_0_in_any_case(raw, value):
    assert env_strings.parse(spec_of("FLASHMM_DEBUG"), raw) is value


@pytest.mark.parametrize("raw", ["yes", "no", "on", "off", "2", "", "y", "n", "-1", "truee"])
def test_bool_env_var_rejects_other_spellings(raw):
    with pytest.raises(env_strings.EnvParseError):
        env_strings.parse(spec_of("FLASHMM_DEBUG"), raw)


@pytest.mark.parametrize("raw,value", [('["*"]', ["*"]), ("[]", []),
                                       ('["https://a.example", "https://b.example"]',
                                        ["https://a.example", "https://b.example"])])
def test_list_env_var_accepts_a_json_array_of_strings(raw, value):
    assert env_strings.parse(spec_of("API_CORS_ORIGINS"), raw) == value


@pytest.mark.parametrize("raw", ["*", "https://a.example,https://b.example", "[1, 2]",
                                 '["a", null]', '{"a": "b"}', '"*"', "[", "", "['*']"])
def test_list_env_var_rejects_anything_but_a_json_array_of_strings(raw):
    with pytest.raises(env_strings.EnvParseError):
        env_strings.parse(spec_of("API_CORS_ORIGINS"), raw)


def test_choice_env_var_is_taken_as_is_and_checked_by_the_schema():
    env = LayerInput("env", ENVVAR_SRC, {"FLASHMM_LOG_LEVEL": "verbose"})
    result = validate_layers([LayerInput("environment", ENV_SRC, {"sei": {
        "network": "testnet", "rpc_url": "https://r.example", "ws_url": "wss://r.example",
        "chain_id": "atlantic-2"}}), env], vault_available=False)
    hits = [i for i in result.errors if i.path == "app.log_level"]
    assert hits and hits[0].origin.layer == "env" and ENVVAR_SRC in hits[0].render()


def test_empty_string_unsets_an_optional_key():
    assert env_strings.parse(spec_of("REDIS_URL"), "") is None
    assert env_strings.parse(spec_of("INFLUXDB_URL"), "") is None


@pytest.mark.parametrize("name,raw", [("TRADING_MAX_POSITION_USDC", "yes"),
                                      ("TRADING_MAX_QUOTE_LEVELS", "3.0"),
                                      ("FLASHMM_DEBUG", "on"),
                                      ("API_CORS_ORIGINS", "*")])
def test_unparsable_env_override_is_an_error_naming_the_variable_and_key(name, raw):
    res = resolve([LayerInput("env", ENVVAR_SRC, {name: raw})])
    assert len(res.issues) == 1
    text = res.issues[0].render()
    assert name in text and FIELDS_BY_ENV[name].path in text
    assert "layer 'env'" in text and ENVVAR_SRC in text
    assert FIELDS_BY_ENV[name].path not in res.provenance or \
        res.provenance[FIELDS_BY_ENV[name].path].origin.layer != "env"


@pytest.mark.parametrize("name,raw,value", [("TRADING_MAX_QUOTE_LEVELS", 4, 4),
                                            ("TRADING_MAX_POSITION_USDC", 250, 250.0),
                                            ("FLASHMM_DEBUG", True, True),
                                            ("ML_CONFIDENCE_THRESHOLD", 0.75, 0.75)])
def test_env_override_given_as_a_yaml_scalar_is_read_as_its_string(name, raw, value):
    """-e JSON and YAML host vars hand over ints and bools; they mean their env spelling."""
    res = resolve([LayerInput("env", ENVVAR_SRC, {name: raw})])
    assert res.issues == []
    assert res.values[FIELDS_BY_ENV[name].path] == value


def test_env_override_that_is_not_a_scalar_is_an_error():
    res = resolve([LayerInput("env", ENVVAR_SRC, {"SEI_RPC_URL": ["https://a.example"]})])
    assert len(res.issues) == 1 and "string" in res.issues[0].message


def test_unknown_env_var_gets_a_did_you_mean():
    res = resolve([LayerInput("env", ENVVAR_SRC, {"FLASHMM_DEBUGG": "true"})])
    assert len(res.issues) == 1
    text = res.issues[0].render()
    assert "FLASHMM_DEBUGG" in text and "did you mean FLASHMM_DEBUG?" in text
    assert ENVVAR_SRC in text


def test_unknown_env_var_holding_a_secret_does_not_echo_it():
    value = random_tokens.token_urlsafe(40)
    res = resolve([LayerInput("env", ENVVAR_SRC, {"SECRET_KEYY": value})])
    assert "did you mean SECRET_KEY?" in res.issues[0].render()
    assert value not in repr(res.issues)
