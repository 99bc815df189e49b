"""The client library without Redis: every schema key by the env names the schema declares,
sections, explain, on_change and the file reload, and the validation of a runtime change
(pydantic, the deploy toolkit's rules).  Pure: no process, no socket."""

from __future__ import annotations

import pytest
import yaml

from flashmm_config.log import LogBase
from flashmm_config import ConfigManager, RuntimeSetRefused, load_fields
from flashmm_config.validation import check_change, check_key, check_value
from flashmm_deploy.config import env_strings
from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.config.schema import FIELDS

LIB_FIELDS = load_fields()


class ListLog(LogBase):
    """The library's log interface, kept in memory: (level, message) pairs."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def __call__(self, message, level="INFO"):
        self.lines.append((level, message))


def other_value(path):
    """A value of the key's type that is not its default."""
    spec = FIELDS[path]
    if spec.kind == "choice":
        return next(c for c in spec.choices if c != spec.default)
    if path.endswith("url") and not spec.secret:
        return {"storage.redis.url": "redis://cache.example:6380/1",
                "sei.ws_url": "wss://ws.example"}.get(path, "https://" + spec.env.lower() + ".example")
    return {"bool": not spec.default, "int": 7, "float": 0.5,
            "list": ["https://a.example"]}.get(spec.kind, "value-of-" + spec.env.lower())


def test_the_library_schema_is_the_deploy_schema():
    assert set(LIB_FIELDS) == set(FIELDS)
    for path, spec in FIELDS.items():
        lib = LIB_FIELDS[path]
        assert (lib.env, lib.kind, lib.secret, lib.runtime) == (spec.env, spec.kind,
                                                                spec.secret, spec.runtime)


def test_get_reads_every_key_by_the_env_name_the_schema_declares(tmp_path):
    """The seed's get() derived ``key.upper().replace(".", "_")`` and missed 22 keys
    (FLASHMM_DEBUG, INFLUXDB_BUCKET, HEALTH_CHECK_INTERVAL_SECONDS, ...)."""
    want = {path: other_value(path) for path in FIELDS}
    environ = {FIELDS[p].env: env_strings.render(FIELDS[p], v) for p, v in want.items()}
    config = ConfigManager(environ, tmp_path, log=ListLog())
    config.load()
    for path, value in want.items():
        assert config.get(path) == value, path
        assert config.explain(path)["layer"] == "env"
    assert config.get("app.debug") is (not FIELDS["app.debug"].default)
    seed_names = {p.upper().replace(".", "_") for p in FIELDS}
    assert len({f.env for f in FIELDS.values()} - seed_names) >= 22


def test_layers_sections_defaults_and_explain(tmp_path):
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "testnet.yml").write_text(yaml.safe_dump(
        {"trading": {"max_position_usdc": 150, "quote_frequency_hz": 2}}))
    environ = {"ENVIRONMENT": "testnet", "TRADING_QUOTE_FREQUENCY_HZ": "3",
               "SECRET_KEY": "s" * 40, "REDIS_URL": "redis://:pw-canary-77@cache:6380/2"}
    config = ConfigManager(environ, tmp_path, log=ListLog())
    config.load()
    assert config.get("trading.max_position_usdc") == 150.0
    assert isinstance(config.get("trading.max_position_usdc"), float)
    assert config.get("trading.quote_frequency_hz") == 3.0
    assert config.get("trading")["max_quote_levels"] == 3
    assert config.get("storage")["redis"]["port"] == 6379
    assert config.get("secrets.secret_key") == "s" * 40               # the process needs it
    assert config.get("secrets.twitter_api_key", "none") == "none"    # unset: the default
    assert config.get("no.such.key", 42) == 42
    info = config.explain("trading.quote_frequency_hz")
    assert (info["value"], info["layer"], info["layers"]) == (
        3.0, "env", {"default": 5.0, "file": 2.0, "env": 3.0})
    assert config.explain("secrets.secret_key")["value"] == "<redacted>"
    assert "pw-canary-77" not in str(config.explain("storage.redis.url"))
    assert config.endpoint.port == 6380 and config.endpoint.db == 2


def test_on_change_follows_the_file_and_a_bad_file_keeps_the_last_good(tmp_path):
    path = tmp_path / "environments" / "development.yml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"trading": {"risk_multiplier": 1.5}}))
    log = ListLog()
    config = ConfigManager({}, tmp_path, log=log)
    config.load()
    changes = []
    config.on_change(lambda key, value, layer: changes.append((key, value, layer)))
    path.write_text(yaml.safe_dump({"trading": {"risk_multiplier": 2.5}}) + "\n")
    assert config.reload_file() and changes == [("trading.risk_multiplier", 2.5, "file")]
    path.write_text("trading: {risk_multiplier: 'x'}\n")
    assert not config.reload_file()
    assert config.get("trading.risk_multiplier") == 2.5 and len(changes) == 1
    assert any(level == "ERROR" and "keeping the last good" in m and "risk_multiplier" in m
               for level, m in log.lines)


def _production(**secrets):
    return [LayerInput("environment", "production inventory", {
        "app": {"environment": "production", "debug": False, "log_level": "WARNING"},
        "sei": {"network": "mainnet", "rpc_url": "https://rpc.example",
                "ws_url": "wss://ws.example", "chain_id": "pacific-1"},
        "security": {"encryption_required": True, "audit_logging": True,
                     "ip_whitelist_enabled": True},
        "storage": {"redis": {"password_required": True}, "influxdb": {"auth_required": True}},
        "monitoring": {"alert_enabled": False}}),
        LayerInput("env", "process environment", secrets)]


def test_a_change_is_refused_by_the_production_rules_in_one_line():
    with pytest.raises(RuntimeSetRefused) as caught:
        check_change(_production(), {}, "monitoring.alert_enabled", True)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "monitoring.alert_enabled: refused, monitoring.alert_enabled = true breaks a rule: "
        "secrets.alert_webhook_url: is required but not set; needed because "
        "monitoring.alert_enabled is true in testnet or production")
    # problems the configuration already had (the missing Redis password, ...) refuse nothing
    check_change(_production(), {}, "trading.quote_frequency_hz", 2.5)
    check_change(_production(ALERT_WEBHOOK_URL="https://hooks.example/x"), {},
                 "monitoring.alert_enabled", True)
    with pytest.raises(RuntimeSetRefused, match="less than or equal to 10"):
        check_change(_production(), {}, "trading.quote_frequency_hz", 11.0)
    alerting = _production()
    alerting[0].data["monitoring"]["alert_enabled"] = True         # the inventory says true
    with pytest.raises(RuntimeSetRefused, match="removing it breaks a rule: secrets.alert_webh"):
        check_change(alerting, {"monitoring.alert_enabled": False}, "monitoring.alert_enabled",
                     None)


def test_only_runtime_keys_of_their_type():
    with pytest.raises(RuntimeSetRefused, match="api.port: not a runtime key"):
        check_key(LIB_FIELDS, "api.port")
    with pytest.raises(RuntimeSetRefused, match="did you mean trading.quote_frequency_hz"):
        check_key(LIB_FIELDS, "trading.quote_frequency")
    field = check_key(LIB_FIELDS, "trading.quote_frequency_hz")
    assert check_value(field, 3) == 3.0
    for bad in ("3", True, None, float("nan")):
        with pytest.raises(RuntimeSetRefused, match="expected a number"):
            check_value(field, bad)
