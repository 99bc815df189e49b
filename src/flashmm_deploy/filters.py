"""The functions behind ``filter_plugins/flashmm.py``.  Most take Ansible's ``hostvars`` (so
vaulted and ``-e`` values arrive as Ansible resolved them); each returns ``(result, warnings)``;
errors are ``FlashmmError``.  Kept free of Ansible imports so they unit-test without it."""

from __future__ import annotations

from typing import Any

from . import host_validation, effective
from .errors import FlashmmError
from .layers import plain
from .schema import FIELDS, SECRET_FIELDS


def _warnings(results) -> list[str]:
    return [f"host {h}: {w.render()}" for h, r in sorted(results.items()) for w in r.warnings]


def flashmm_validate(hostvars, hosts, require_secrets: bool = False):
    """host -> validated effective config (secrets ``<redacted>``); all hosts' errors at once."""
    hosts = [plain(h) for h in ([hosts] if isinstance(hosts, str) else hosts)]
    results = host_validation.validate_hostvars(hostvars, hosts, require_secrets=bool(require_secrets))
    host_validation.raise_for_errors(results)
    return {h: effective.effective(r.config) for h, r in results.items()}, _warnings(results)


def flashmm_explain(hostvars, host, key):
    key = plain(key)
    if key not in FIELDS:
        from .layers import did_you_mean
        raise FlashmmError(f"{key}: unknown key{did_you_mean(key)}")
    results = host_validation.validate_hostvars(hostvars, [plain(host)])
    return effective.explain(results[plain(host)].resolution, key), []


def flashmm_env(hostvars, host):
    """ENV_VAR -> string for the .env file, secrets in clear: use only in no_log tasks."""
    config = host_validation.valid_config(hostvars, plain(host), require_secrets=True)
    return effective.env_vars(config), []


def flashmm_runtime_keys(hostvars, host):
    """``flashmm:config:<section>:<key>`` -> JSON value (runtime-overridable keys only)."""
    config = host_validation.valid_config(hostvars, plain(host), require_secrets=False)
    return effective.runtime_keys(effective.effective(config)), []


def flashmm_env_file(hostvars, host):
    """``{"content": <.env text>, "secret_names": [...]}`` of one host: secrets in clear, use
    only in no_log tasks."""
    from . import dotenv_file
    env, _ = flashmm_env(hostvars, host)
    secret_names = sorted(f.env for f in SECRET_FIELDS)
    return {"content": dotenv_file.render(env, secret_names), "secret_names": secret_names}, []


def flashmm_seed_script(validated):
    """The rendered Redis seed script (Lua) of one host, from its already validated effective
    config (``flashmm_validated[inventory_hostname]``): no second validation per host."""
    from . import redis_seed
    return redis_seed.render_script(effective.runtime_keys(validated)), []


FILTERS: dict[str, Any] = {
    "flashmm_env_file": flashmm_env_file,
    "flashmm_seed_script": flashmm_seed_script,
    "flashmm_validate": flashmm_validate,
    "flashmm_explain": flashmm_explain,
    "flashmm_env": flashmm_env,
    "flashmm_runtime_keys": flashmm_runtime_keys,
}
