"""No secret value in any output: errors, logs, reprs, diffs (README "Everyday use": secrets
appear in no output and in no file but `.env` and `influxdb/influxdb.env`).

A canary (``CANARY-`` + a random url-safe token) is planted as many secrets, valid and invalid
(too short, with a quote, a backslash, ``${``, a newline, not a Fernet key, of the wrong type, in
a plain-text layer, as a failing env override, under a misspelt key), and everything the
validator can print is searched for it: issues, exceptions and their chains, reprs, the
effective and explain views, the plugin functions, the CLI and ``ansible-playbook -vvv``.
Only ``effective.env_vars()`` (documented as secret-bearing, for no_log tasks) may hold it.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets as random_tokens
import traceback
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.inventory import host_validation
from flashmm_deploy.cli import app as cli
from flashmm_deploy.config import effective
from flashmm_deploy.reports import filters
from flashmm_deploy.core.errors import ConfigInvalid, FlashmmError, format_issues
from flashmm_deploy.inventory.inventory import Inventory
from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.config.schema import FIELDS
from flashmm_deploy.config.validate import validate_layers
from support import build_plan, copy_inventory

CORE = random_tokens.token_urlsafe(18)            # 24 random characters: the needle
CANARY = "CANARY-" + CORE                          # 31 characters: too short for SECRET_KEY
NEEDLES = (CORE, CORE[:12], CORE[-12:])            # a truncated echo is a leak too


def canary(tag: str) -> str:
    return f"{CANARY}-{tag}-{random_tokens.token_urlsafe(8)}"


def assert_no_canary(text: str, where: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"secret canary found in {where}:\n{text}"


SEI = {"network": "testnet", "rpc_url": "https://sei-testnet-rpc.polkachu.com",
       "ws_url": "wss://sei-testnet-rpc.polkachu.com/websocket", "chain_id": "atlantic-2"}
ENV_CONFIG = {"app": {"environment": "local", "debug": True, "log_level": "DEBUG"}, "sei": SEI}

# Valid secrets holding the canary, in the vault and as env overrides.
VALID_VAULT = {
    "secret_key": canary("sk"),
    "api_auth_token": canary("api"),
    "encryption_key": Fernet.generate_key().decode(),
    "cambrian_api_key": canary("cam"),
    "twitter_api_secret": canary("tw"),
    "redis_password": canary("redis"),
    "influxdb_token": canary("influx"),
    "alert_webhook_url": "https://hooks.example.com/" + canary("hook"),
}
VALID_ENV = {"CAMBRIAN_SECRET_KEY": canary("env"), "GRAFANA_API_KEY": canary("graf")}

# Invalid ones: every rule that can reject a secret, each with the canary inside.
INVALID_VAULT = {
    "secret_key": CANARY,                                   # too short (31 < 32)
    "api_auth_token": canary("q") + "'" + "x" * 8,          # single quote
    "redis_password": canary("bs") + "\\" + "x" * 8,        # backslash
    "twitter_api_secret": canary("dl") + "${HOME}",         # ${
    "twitter_bearer_token": canary("nl") + "\nsecond",      # newline
    "encryption_key": canary("fk"),                         # not a Fernet key
    "alert_webhook_url": "http://hooks.example.com/" + canary("http"),   # not https
    "cambrian_api_key": [canary("list")],                   # wrong type
    "influxdb_token": {"nested": canary("dict")},           # wrong type
    "secret_kye": canary("typo"),                           # misspelt key
}
INVALID_PLAIN = {"secrets": {"cambrian_secret_key": canary("plain")}}       # environment layer
INVALID_HOST = {"secrets": {"grafana_api_key": canary("host")}}             # host layer
INVALID_ENV = {"ENCRYPTION_KEY": canary("envfk"),           # env override, not a Fernet key
               "SECRET_KEYY": canary("unknown"),            # unknown variable
               "OLD_ENCRYPTION_KEY": canary("envq") + "'",  # env override with a quote
               "API_AUTH_TOKEN": [canary("envlist")]}       # not a string


def valid_layers() -> list[LayerInput]:
    return [LayerInput("environment", "inv/group_vars/all/flashmm.yml", ENV_CONFIG),
            LayerInput("vault", "inv/group_vars/all/vault.yml", {"secrets": VALID_VAULT}),
            LayerInput("env", "inv/host_vars/h1.yml", VALID_ENV)]


def invalid_layers() -> list[LayerInput]:
    return [LayerInput("environment", "inv/group_vars/all/flashmm.yml",
                       dict(ENV_CONFIG, **INVALID_PLAIN)),
            LayerInput("vault", "inv/group_vars/all/vault.yml", {"secrets": INVALID_VAULT}),
            LayerInput("host", "inv/host_vars/h1.yml", INVALID_HOST),
            LayerInput("env", "inv/host_vars/h1.yml", INVALID_ENV),
            LayerInput("runtime", "redis", {"secrets.secret_key": canary("runtime")})]


@pytest.fixture(scope="module")
def valid():
    result = validate_layers(valid_layers(), require_secrets=True)
    assert result.ok, [i.render() for i in result.errors]
    return result


@pytest.fixture(scope="module")
def invalid():
    result = validate_layers(invalid_layers(), require_secrets=True)
    assert not result.ok
    return result


def test_every_planted_invalid_secret_is_reported(invalid):
    paths = {i.path for i in invalid.errors}
    expected = {"secrets.secret_key", "secrets.api_auth_token", "secrets.redis_password",
                "secrets.twitter_api_secret", "secrets.twitter_bearer_token",
                "secrets.encryption_key", "secrets.alert_webhook_url", "secrets.cambrian_api_key",
                "secrets.influxdb_token", "secrets.secret_kye", "secrets.cambrian_secret_key",
                "secrets.grafana_api_key", "SECRET_KEYY", "secrets.old_encryption_key"}
    assert expected <= paths, sorted(paths)
    assert any("API_AUTH_TOKEN" in p for p in paths)


# ---- in-process surfaces ------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["valid", "invalid"])
def test_issues_never_hold_the_canary(variant, request):
    result = request.getfixturevalue(variant)
    for issue in result.errors + result.warnings:
        assert_no_canary(str(issue), "str(Issue)")
        assert_no_canary(repr(issue), "repr(Issue)")
        assert_no_canary(issue.render(), "Issue.render()")
    assert_no_canary(format_issues({"h1": result.errors + result.warnings}, "t"), "format_issues")


def exception_texts(exc: BaseException):
    """Everything a handler or traceback could show of an exception and its chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield str(exc)
        yield repr(exc)
        yield repr(exc.args)
        yield repr(getattr(exc, "issues", None))
        yield "".join(traceback.format_exception(exc))
        exc = exc.__cause__ or exc.__context__


def test_config_invalid_and_its_chain_never_hold_the_canary(invalid):
    with pytest.raises(ConfigInvalid) as info:
        host_validation.raise_for_errors({"h1": invalid})
    for text in exception_texts(info.value):
        assert_no_canary(text, "ConfigInvalid")


def test_repr_of_the_resolution_never_holds_the_canary(valid, invalid):
    """A repr reaches logs, pytest reports and debuggers: it must not show secret values."""
    for result in (valid, invalid):
        assert_no_canary(repr(result.resolution), "repr(Resolution)")
        assert_no_canary(repr(result.resolution.provenance), "repr(provenance)")
        assert_no_canary(repr(result), "repr(Validated)")


def test_validated_config_never_shows_the_canary(valid):
    assert_no_canary(repr(valid.config), "repr(FlashMMConfig)")
    assert_no_canary(str(valid.config), "str(FlashMMConfig)")
    assert_no_canary(valid.config.model_dump_json(), "model_dump_json()")


def test_effective_and_explain_never_show_the_canary(valid, invalid):
    shown = effective.effective(valid.config)
    assert_no_canary(json.dumps(shown), "effective.effective()")
    assert shown["secrets"]["secret_key"] == "<redacted>"
    assert_no_canary(json.dumps(effective.environment_file_layer(valid.config)),
                     "effective.environment_file_layer()")
    assert_no_canary(json.dumps(effective.runtime_keys(effective.effective(valid.config))),
                     "effective.runtime_keys()")
    for result in (valid, invalid):
        for path in FIELDS:
            assert_no_canary(json.dumps(effective.explain(result.resolution, path)),
                             f"effective.explain({path})")


def test_env_vars_carry_the_secrets(valid):
    """The one documented secret-bearing output: if this fails, .env lost its secrets."""
    env = effective.secret_env(valid.config)
    assert env["SECRET_KEY"] == VALID_VAULT["secret_key"]
    assert env["CAMBRIAN_SECRET_KEY"] == VALID_ENV["CAMBRIAN_SECRET_KEY"]
    assert env["ALERT_WEBHOOK_URL"] == VALID_VAULT["alert_webhook_url"]
    assert CORE in json.dumps(env)


def hostvars(variant: str) -> dict:
    if variant == "valid":
        return {"h1": {"flashmm_config": ENV_CONFIG, "flashmm_secrets": VALID_VAULT,
                       "flashmm_env_overrides": VALID_ENV}}
    return {"h1": {"flashmm_config": dict(ENV_CONFIG, **INVALID_PLAIN),
                   "flashmm_secrets": INVALID_VAULT, "flashmm_host_config": INVALID_HOST,
                   "flashmm_env_overrides": INVALID_ENV}}


@pytest.mark.parametrize("variant", ["valid", "invalid"])
def test_filters_and_the_plan_never_show_the_canary(variant):
    """The explain filter, and the controller pass whose result every host can read (it is
    registered for the whole play): the canary may be in neither."""
    hv = hostvars(variant)
    texts = []
    for call in [lambda p=p: filters.flashmm_explain(hv, "h1", p) for p in FIELDS] + [
            lambda: build_plan(hv, require_secrets=False).fact()]:
        try:
            texts.append(json.dumps(call(), default=repr))
        except FlashmmError as exc:
            texts.extend(exception_texts(exc))
    for text in texts:
        assert_no_canary(text, f"filters/plan ({variant})")
    if variant == "valid":
        assert '"hosts"' in texts[-1], "the plan was not built: the check is empty"


# ---- an inventory holding the canary: CLI and ansible-playbook -----------------------------------

def dump(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def canary_inventory(tmp_path: Path, variant: str) -> Path:
    inv = copy_inventory("sandbox", tmp_path / variant)
    env_file = inv / "group_vars" / "all" / "flashmm.yml"
    host_file = inv / "host_vars" / "local-1.yml"
    host = yaml.safe_load(host_file.read_text(encoding="utf-8"))
    if variant == "valid":
        dump(inv / "group_vars" / "all" / "vault.yml", {"flashmm_secrets": VALID_VAULT})
        host["flashmm_env_overrides"] = VALID_ENV
    else:
        dump(inv / "group_vars" / "all" / "vault.yml", {"flashmm_secrets": INVALID_VAULT})
        config = yaml.safe_load(env_file.read_text(encoding="utf-8"))
        config["flashmm_config"].update(INVALID_PLAIN)
        dump(env_file, config)
        host["flashmm_host_config"].update(INVALID_HOST)
        host["flashmm_env_overrides"] = INVALID_ENV
    dump(host_file, host)
    return inv


@pytest.fixture(scope="module")
def canary_inventories(tmp_path_factory):
    base = tmp_path_factory.mktemp("canary")
    return {v: canary_inventory(base, v) for v in ("valid", "invalid")}


def test_inventory_copies_behave_as_planted(canary_inventories):
    ok = host_validation.validate_inventory(Inventory(canary_inventories["valid"]), require_secrets=True)
    assert all(r.ok for r in ok.values()), {h: [i.render() for i in r.errors] for h, r in ok.items()}
    bad = host_validation.validate_inventory(Inventory(canary_inventories["invalid"]))
    assert all(not r.ok for r in bad.values())


@pytest.mark.parametrize("variant", ["valid", "invalid"])
def test_cli_explain_of_every_key_never_shows_the_canary(canary_inventories, variant):
    inv = str(canary_inventories[variant])
    for path in FIELDS:
        for extra in ([], ["--json"]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["explain", inv, path, "--host", "local-1", *extra])
            assert code == (0 if variant == "valid" else 1)
            assert_no_canary(out.getvalue() + err.getvalue(), f"explain {path} ({variant})")
