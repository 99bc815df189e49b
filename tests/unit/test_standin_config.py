"""The stand-in's configuration layers: provenance, precedence, strict parsing, secrets kept
out of every message, keep-last-good file reloads.  Pure: no process, no socket."""

from __future__ import annotations

import io
import os

import pytest
import yaml

from flashmm_config.layers import (LAYERS, REQUIRED_ENV, ConfigError, Field,
                                                  check_typed, dotted_key, env_layer,
                                                  file_layer, load_fields, missing_required,
                                                  redis_key, resolve, runtime_value)
from flashmm_config.state import ConfigState
from flashmm_deploy.standin.event_log import EventLog

FIELDS = load_fields()
REQUIRED = {name: "" for name in REQUIRED_ENV}
CANARY = "canary-Zq8vXw3LpT"


def write_env_file(config_dir, name, data):
    path = config_dir / "environments" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def state_for(tmp_path, environ, file=None, name="testnet"):
    if file is not None:
        write_env_file(tmp_path, name, file)
    stream = io.StringIO()
    state = ConfigState(FIELDS, {"ENVIRONMENT": name, **REQUIRED, **environ}, tmp_path,
                        EventLog(stream))
    return state, stream


def test_fields_json_is_the_schema_the_app_needs():
    assert {k for k, f in FIELDS.items() if f.runtime} == {
        "trading.max_position_usdc", "trading.quote_frequency_hz", "ml.confidence_threshold",
        "monitoring.alert_enabled"}
    assert not any(f.secret for f in FIELDS.values() if f.runtime)
    envs = {f.env for f in FIELDS.values()}
    assert set(REQUIRED_ENV) <= envs
    assert {"REDIS_URL", "ENCRYPTION_KEY", "OLD_ENCRYPTION_KEY", "API_HOST", "API_PORT"} <= envs
    assert LAYERS == ("default", "file", "env", "runtime")


def test_defaults_only(tmp_path):
    state, _ = state_for(tmp_path, {})
    state.load()
    effective = state.effective()
    assert effective["api.port"] == (8000, "default")
    assert effective["api.cors_origins"] == (["*"], "default")
    # the required variables are present but empty: an empty string is a value for a str
    assert effective["sei.rpc_url"] == ("", "env")
    assert effective["app.environment"] == ("testnet", "env")


def test_each_layer_and_its_precedence(tmp_path):
    state, _ = state_for(tmp_path, {"TRADING_MAX_QUOTE_LEVELS": "4",
                                    "TRADING_QUOTE_FREQUENCY_HZ": "3.5"},
                         file={"trading": {"max_position_usdc": 150,
                                           "quote_frequency_hz": 2.0,
                                           "max_quote_levels": 2},
                               "monitoring": {"alert_thresholds": {"min_uptime_percent": 99}},
                               "app": {"name": "FromFile"}})
    state.load()
    state.set_runtime("trading.quote_frequency_hz", 1.5)
    effective = state.effective()
    assert effective["trading.max_position_usdc"] == (150.0, "file")      # int -> float
    assert isinstance(effective["trading.max_position_usdc"][0], float)
    assert effective["monitoring.alert_thresholds.min_uptime_percent"] == (99.0, "file")
    assert effective["app.name"] == ("FromFile", "file")
    assert effective["trading.max_quote_levels"] == (4, "env")            # env over file
    assert effective["trading.quote_frequency_hz"] == (1.5, "runtime")    # runtime over env
    assert effective["app.version"] == ("1.0.0", "default")
    state.drop_runtime("trading.quote_frequency_hz")
    assert state.effective()["trading.quote_frequency_hz"] == (3.5, "env")


def test_resolve_takes_the_highest_layer():
    key = "ml.confidence_threshold"
    layers = {"file": {key: 0.1}, "env": {key: 0.2}, "runtime": {key: 0.3}}
    assert resolve(FIELDS, layers)[key] == (0.3, "runtime")
    del layers["runtime"]
    assert resolve(FIELDS, layers)[key] == (0.2, "env")
    del layers["env"]
    assert resolve(FIELDS, layers)[key] == (0.1, "file")
    assert resolve(FIELDS, {})[key] == (0.6, "default")


def test_empty_optional_env_means_unset():
    values = env_layer(FIELDS, {"INFLUXDB_URL": "", "API_AUTH_TOKEN": "", "REDIS_URL": "",
                                "SEI_NETWORK": ""})
    assert "storage.influxdb.url" not in values
    assert "secrets.api_auth_token" not in values
    assert "storage.redis.url" not in values
    assert values["sei.network"] == ""            # not optional: the empty string is a value


def test_strict_env_parsing_names_every_bad_variable():
    with pytest.raises(ConfigError) as caught:
        env_layer(FIELDS, {"TRADING_MAX_QUOTE_LEVELS": "3.0", "FLASHMM_DEBUG": "yes",
                           "TRADING_MAX_POSITION_USDC": "nan", "API_CORS_ORIGINS": "*",
                           "API_PORT": "8000"})
    text = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 4
    for name, key in (("TRADING_MAX_QUOTE_LEVELS", "trading.max_quote_levels"),
                      ("FLASHMM_DEBUG", "app.debug"),
                      ("TRADING_MAX_POSITION_USDC", "trading.max_position_usdc"),
                      ("API_CORS_ORIGINS", "api.cors_origins")):
        assert f"{name} ({key})" in text
    assert "'3.0'" in text                        # a non-secret value is shown


def test_env_parse_error_hides_a_secret_value():
    fields = {"x.token": Field("x.token", "X_TOKEN", "int", False, True, False, None),
              "x.count": Field("x.count", "X_COUNT", "int", False, False, False, 1)}
    with pytest.raises(ConfigError) as caught:
        env_layer(fields, {"X_TOKEN": CANARY, "X_COUNT": "many"})
    text = str(caught.value)
    assert "X_TOKEN (x.token)" in text and "hidden" in text
    assert CANARY not in text
    assert "'many'" in text


def test_secret_env_values_are_taken_verbatim():
    values = env_layer(FIELDS, {"CAMBRIAN_API_KEY": " a$b'c ", "ENCRYPTION_KEY": CANARY})
    assert values["secrets.cambrian_api_key"] == " a$b'c "
    assert values["secrets.encryption_key"] == CANARY


def test_required_env_vars_must_be_present_even_if_empty():
    assert missing_required(REQUIRED) == []
    environ = dict(REQUIRED)
    del environ["SEI_CHAIN_ID"], environ["CAMBRIAN_API_KEY"]
    assert missing_required(environ) == ["CAMBRIAN_API_KEY", "SEI_CHAIN_ID"]


def test_file_type_errors_name_the_key_and_hide_secret_values(tmp_path):
    path = write_env_file(tmp_path, "x", {
        "trading": {"max_quote_levels": "many", "max_position_usdc": True},
        "api": {"cors_origins": "*"},
        "secrets": {"api_auth_token": 123456789},
    })
    with pytest.raises(ConfigError) as caught:
        file_layer(FIELDS, path)
    text = "\n".join(caught.value.problems)
    assert "trading.max_quote_levels: expected an integer, got str 'many'" in text
    assert "trading.max_position_usdc: expected a number, got bool" in text
    assert "api.cors_origins: expected a list of strings" in text
    assert "secrets.api_auth_token: expected a string, got int" in text
    assert "123456789" not in text


def test_file_unknown_keys_are_reported_not_fatal(tmp_path):
    path = write_env_file(tmp_path, "x", {"trading": {"max_quote_levels": 2, "nope": 1},
                                          "extra": {"a": 1}, "storage": {"redis": {"db": 3}}})
    values, unknown = file_layer(FIELDS, path)
    assert values == {"trading.max_quote_levels": 2, "storage.redis.db": 3}
    assert sorted(unknown) == ["extra", "trading.nope"]


def test_invalid_yaml_shows_the_position_not_the_content(tmp_path):
    path = write_env_file(tmp_path, "x", f"trading:\n  max_quote_levels: [1\nsecret: {CANARY}\n")
    with pytest.raises(ConfigError) as caught:
        file_layer(FIELDS, path)
    assert "not valid YAML at line" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_missing_or_empty_file_is_an_empty_layer(tmp_path):
    assert file_layer(FIELDS, tmp_path / "none.yml") == ({}, [])
    assert file_layer(FIELDS, write_env_file(tmp_path, "empty", "")) == ({}, [])
    with pytest.raises(ConfigError):
        file_layer(FIELDS, write_env_file(tmp_path, "list", "- 1\n"))


def test_start_with_a_broken_file_or_env_fails_with_every_problem(tmp_path):
    state, _ = state_for(tmp_path, {"API_PORT": "http"},
                         file={"trading": {"max_quote_levels": "x"}})
    with pytest.raises(ConfigError) as caught:
        state.load()
    text = str(caught.value)
    assert "API_PORT (api.port)" in text and "trading.max_quote_levels" in text
    assert not state.loaded


def test_environment_name_cannot_leave_the_config_dir(tmp_path):
    state, _ = state_for(tmp_path, {}, name="../etc")
    with pytest.raises(ConfigError, match="ENVIRONMENT"):
        state.load()


def test_environment_defaults_to_development(tmp_path):
    write_env_file(tmp_path, "development", {"app": {"name": "Dev"}})
    state = ConfigState(FIELDS, dict(REQUIRED), tmp_path, EventLog(io.StringIO()))
    state.load()
    assert state.environment == "development"
    assert state.effective()["app.name"] == ("Dev", "file")


def _touch_later(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_a_broken_file_keeps_the_last_good_configuration(tmp_path):
    state, stream = state_for(tmp_path, {}, file={"trading": {"max_quote_levels": 2}})
    state.load()
    path = state.path
    path.write_text("trading:\n  max_quote_levels: lots\n")
    _touch_later(path)
    assert state.reload_file_if_changed() is False
    assert state.effective()["trading.max_quote_levels"] == (2, "file")
    assert "keeping the last good" in stream.getvalue()
    assert "trading.max_quote_levels" in stream.getvalue()
    assert state.reload_file_if_changed() is False      # unchanged file: not re-read
    path.write_text("trading:\n  max_quote_levels: 5\n")
    _touch_later(path)
    assert state.reload_file_if_changed() is True
    assert state.effective()["trading.max_quote_levels"] == (5, "file")
    assert "reloaded: trading.max_quote_levels changed" in stream.getvalue()
    path.unlink()
    assert state.reload_file_if_changed() is False
    assert state.effective()["trading.max_quote_levels"] == (5, "file")


@pytest.mark.parametrize("key,raw,expected", [
    ("trading.quote_frequency_hz", b"2.5", 2.5),
    ("trading.quote_frequency_hz", b"3", 3.0),
    ("ml.confidence_threshold", b"1e-1", 0.1),
    ("monitoring.alert_enabled", b"false", False),
])
def test_runtime_values_valid_for_their_kind(key, raw, expected):
    value = runtime_value(FIELDS[key], raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("key,raw", [
    ("trading.quote_frequency_hz", b"fast"),          # not JSON
    ("trading.quote_frequency_hz", b'"2.5"'),         # a JSON string, not a number
    ("trading.quote_frequency_hz", b"true"),
    ("trading.quote_frequency_hz", b"null"),
    ("trading.quote_frequency_hz", b"NaN"),
    ("monitoring.alert_enabled", b"1"),
    ("monitoring.alert_enabled", b'"true"'),
    ("ml.confidence_threshold", b"\xff"),
])
def test_runtime_values_invalid_for_their_kind(key, raw):
    with pytest.raises(ValueError):
        runtime_value(FIELDS[key], raw)


def test_check_typed_kinds():
    field = FIELDS["api.cors_origins"]
    assert check_typed(field, ["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError):
        check_typed(field, ["a", 1])
    with pytest.raises(ValueError):
        check_typed(FIELDS["api.port"], 8000.0)
    with pytest.raises(ValueError):
        check_typed(FIELDS["api.port"], True)


def test_redis_key_names():
    assert redis_key("trading.max_position_usdc") == "flashmm:config:trading:max_position_usdc"
    assert dotted_key("flashmm:config:trading:max_position_usdc") == "trading.max_position_usdc"
    assert dotted_key("flashmm:meta:version") is None
