"""Validate a resolved configuration: schema (types, ranges, formats), cross-field rules and
secret rules, all errors in one pass, each naming the dotted path, layer and file.

Secret values never enter a message: pydantic's own error strings (which embed ``input_value``)
are never used; messages are built from ``msg`` and, for non-secret keys only, the value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import ValidationError

from flashmm_deploy.config import dotenv_file, env_strings
from flashmm_deploy.core.errors import Issue, Origin
from flashmm_deploy.config.layers import LayerInput, Resolution, resolve
from flashmm_deploy.config.secret_generators import GENERATORS
from flashmm_deploy.config.schema import (FIELDS, LOG_LEVEL_ORDER, SEI_CHAIN_IDS, URL_CREDENTIALS,
                                          FlashMMConfig)

PLACEHOLDER_PREFIX = "__PLACEHOLDER__"
# When each secret is needed: path -> (reason shown to the operator, predicate over values).
_PROD_LIKE = ("testnet", "production")
SECRET_REQUIRED_WHEN: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "secrets.cambrian_api_key": ("app.environment is testnet or production",
                                 lambda v: v["app.environment"] in _PROD_LIKE),
    "secrets.cambrian_secret_key": ("app.environment is testnet or production",
                                    lambda v: v["app.environment"] in _PROD_LIKE),
    "secrets.redis_password": ("storage.redis.password_required is true",
                               lambda v: v["storage.redis.password_required"]),
    "secrets.redis_deploy_password": ("storage.redis.password_required is true",
                                      lambda v: v["storage.redis.password_required"]),
    "secrets.influxdb_token": ("storage.influxdb.auth_required is true",
                               lambda v: v["storage.influxdb.auth_required"]),
    "secrets.influxdb_admin_password": ("storage.influxdb.auth_required is true",
                                        lambda v: v["storage.influxdb.auth_required"]),
    "secrets.grafana_api_key": ("monitoring.grafana_enabled is true",
                                lambda v: v["monitoring.grafana_enabled"]),
    "secrets.twitter_bearer_token": ("monitoring.twitter_enabled is true",
                                     lambda v: v["monitoring.twitter_enabled"]),
    "secrets.twitter_api_key": ("monitoring.twitter_enabled is true",
                                lambda v: v["monitoring.twitter_enabled"]),
    "secrets.twitter_api_secret": ("monitoring.twitter_enabled is true",
                                   lambda v: v["monitoring.twitter_enabled"]),
    "secrets.secret_key": ("every environment needs it", lambda v: True),
    "secrets.encryption_key": ("every environment needs it", lambda v: True),
    "secrets.api_auth_token": ("every environment needs it", lambda v: True),
    "secrets.alert_webhook_url": ("monitoring.alert_enabled is true in testnet or production",
                                  lambda v: v["monitoring.alert_enabled"]
                                  and v["app.environment"] in _PROD_LIKE),
}
MIN_SECRET_LENGTH = {"secrets.secret_key": 32, "secrets.api_auth_token": 32,
                     "secrets.redis_password": 16, "secrets.redis_deploy_password": 16,
                     "secrets.influxdb_admin_password": 16}
FERNET_KEYS = ("secrets.encryption_key", "secrets.old_encryption_key")


@dataclass
class Validated:
    config: FlashMMConfig | None      # None when there are errors
    resolution: Resolution
    errors: list[Issue]
    warnings: list[Issue]

    @property
    def ok(self) -> bool:
        return not self.errors


def _is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode("ascii"))) == 32 and len(value) == 44
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False


def _https_with_host(value: str) -> bool:
    rest = value[len("https://"):] if value.startswith("https://") else ""
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    return bool(host.split(":", 1)[0].strip())


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX)


def _got(value: Any, limit: int = 80) -> str:
    """A non-secret value for a message: its repr, cut short (a value may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _schema_issues(res: Resolution) -> tuple[FlashMMConfig | None, list[Issue], set[str]]:
    try:
        return FlashMMConfig.model_validate(res.nested()), [], set()
    except ValidationError as exc:
        issues, bad = [], set()
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            path = ".".join(str(p) for p in err["loc"])
            leaf = path if path in FIELDS else next(
                (p for p in FIELDS if path.startswith(p + ".")), path)  # list items -> the list
            bad.add(leaf)
            spec = FIELDS.get(leaf)
            if err["type"] == "missing" and leaf in res.refused:
                continue                # its value was refused, and said so, by its layer
            if err["type"] == "missing":
                # named against the environment layer: that is where the key belongs
                where = Origin("environment", res.sources.get(
                    "environment", "group_vars/all/flashmm.yml (no flashmm_config found)"))
                issues.append(Issue(leaf, "required but not set in any layer; set it under "
                                    "flashmm_config" + (f" or as {spec.env}" if spec else ""),
                                    where))
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == URL_CREDENTIALS:        # the value holds a password
                msg += " (value hidden)"
            elif spec is not None and not spec.secret:
                msg += f" (got {_got(res.values.get(leaf))})"
            elif spec is not None:
                msg += " (value hidden)"
            if spec is not None:
                msg += f"; expected: {spec.doc}"
            issues.append(Issue(leaf, msg, res.origin(leaf)))
        return None, issues, bad


def _rule(res: Resolution, path: str, message: str, *related: str) -> Issue:
    return Issue(path, message, res.origin(path), related=tuple((r, res.origin(r)) for r in related))


def _cross_field_issues(res: Resolution, bad: set[str]) -> list[Issue]:
    v, out = res.values, []

    def usable(*paths: str) -> bool:
        return all(p in v and p not in bad for p in paths)

    if usable("sei.network", "sei.chain_id"):
        want = SEI_CHAIN_IDS.get(v["sei.network"])
        if want and v["sei.chain_id"] != want:
            out.append(_rule(res, "sei.chain_id",
                             f"chain_id {v['sei.chain_id']!r} does not belong to network "
                             f"{v['sei.network']!r}; expected {want!r}", "sei.network"))
    if usable("app.environment") and v["app.environment"] == "production":
        must_be = [("app.debug", False), ("security.encryption_required", True),
                   ("security.audit_logging", True), ("security.ip_whitelist_enabled", True),
                   ("storage.redis.password_required", True),
                   ("storage.influxdb.auth_required", True)]
        for path, want in must_be:
            if usable(path) and v[path] is not want:
                out.append(_rule(res, path, f"must be {str(want).lower()} in production",
                                 "app.environment"))
        if usable("app.log_level") and (
                LOG_LEVEL_ORDER.index(v["app.log_level"]) < LOG_LEVEL_ORDER.index("WARNING")):
            out.append(_rule(res, "app.log_level",
                             f"must be WARNING or higher in production (got {v['app.log_level']!r})",
                             "app.environment"))
    return out


def needed_secrets(values: dict[str, Any]) -> dict[str, str]:
    """Secret path -> why this configuration needs it.  A rule whose inputs are themselves
    invalid is skipped (those inputs are reported where they are)."""
    out = {}
    for path, (reason, needed) in SECRET_REQUIRED_WHEN.items():
        try:
            if needed(values):
                out[path] = reason
        except (KeyError, TypeError):
            continue
    return out


def _secret_issues(res: Resolution, bad: set[str], *, require_secrets: bool,
                   vault_available: bool) -> tuple[list[Issue], list[Issue]]:
    """Errors and warnings about secrets.  Never includes a secret's value."""
    errors, warnings = [], []
    v = res.values
    for path, reason in needed_secrets(v).items():
        value = v.get(path)
        if path in bad or (value is not None and not is_placeholder(value)):
            continue
        spec = FIELDS[path]
        if value is None and not vault_available:
            what = "is not available (its vault cannot be opened here or has not been generated)"
        elif value is None:
            what = "is required but not set"
        else:
            what = "is still a placeholder"
        how = f"set flashmm_secrets.{spec.key} in group_vars/all/vault.yml or {spec.env}"
        if value is None and vault_available and spec.key in GENERATORS:
            how = ("`flashmm-config secrets generate <inventory>` adds it (keeping every other "
                   "value), or " + how)
        issue = Issue(path, f"{what}; needed because {reason}; {how}",
                      res.origin(path) if value is not None else None)
        soft = not require_secrets and (is_placeholder(value) or not vault_available)
        (warnings if soft else errors).append(issue)

    for path, spec in FIELDS.items():
        value = v.get(path)
        if isinstance(value, list) and path not in bad:     # lists go to .env as JSON
            value = env_strings.render(spec, value)
        if not isinstance(value, str) or is_placeholder(value):
            continue
        why = dotenv_file.refusal(value)   # the .env renderer's own rule, checked before any host
        if why:
            errors.append(Issue(path, f"{spec.env} contains {why}, which python-dotenv and "
                                "docker compose would not both read back unchanged; "
                                + ("value hidden. Regenerate it from a URL-safe alphabet"
                                   if spec.secret else f"got {value!r}"), res.origin(path)))
        if not spec.secret:
            continue
        if value == "":
            errors.append(Issue(path, f"{spec.env} is empty; unset it instead", res.origin(path)))
        if len(value) < MIN_SECRET_LENGTH.get(path, 0):
            errors.append(Issue(path, f"{spec.env} is too short: at least "
                                f"{MIN_SECRET_LENGTH[path]} characters (value hidden)",
                                res.origin(path)))
        if path in FERNET_KEYS and not _is_fernet_key(value):
            errors.append(Issue(path, f"{spec.env} must be a Fernet key (44 characters of url-safe "
                                "base64 for 32 bytes), value hidden", res.origin(path)))
        if path == "secrets.alert_webhook_url" and not _https_with_host(value):
            errors.append(Issue(path, "ALERT_WEBHOOK_URL must be an https:// URL with a host "
                                "(value hidden)", res.origin(path)))
    return errors, warnings


def validate_layers(layers: list[LayerInput], *, require_secrets: bool = False,
                    vault_available: bool = True) -> Validated:
    """Resolve and validate.  ``require_secrets`` (deploy) makes every missing or placeholder
    secret an error; otherwise (validate) those are warnings when the vault is unavailable."""
    res = resolve(layers)
    # placeholder secrets are not values: validate the rest of the config without them
    candidate = Resolution({p: (None if FIELDS[p].secret and is_placeholder(val) else val)
                            for p, val in res.values.items()}, res.provenance, res.issues,
                           res.sources, res.refused)
    config, schema_issues, bad = _schema_issues(candidate)
    errors = list(res.issues) + schema_issues + _cross_field_issues(res, bad)
    # a secret whose value a layer refused is reported there, not as "required but not set"
    secret_errors, warnings = _secret_issues(res, bad | res.refused,
                                             require_secrets=require_secrets,
                                             vault_available=vault_available)
    errors += secret_errors
    return Validated(None if errors else config, res, errors, warnings)
