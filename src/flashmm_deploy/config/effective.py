"""What a validated configuration turns into: the effective config (secrets redacted), the
``.env`` variables, the Redis runtime keys, and the ``explain`` view with provenance."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from flashmm_deploy.config import env_strings
from flashmm_deploy.config.layers import REDACTED, Resolution, plain, shown
from flashmm_deploy.config.schema import FIELDS, RUNTIME_FIELDS, SECRET_FIELDS, FlashMMConfig

# .env variable -> the vault key (flashmm_secrets.<key>) of every secret of the schema.
SECRET_ENV: dict[str, str] = {spec.env: spec.key for spec in SECRET_FIELDS}


def _leaf(config: FlashMMConfig, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


# The URL keys built from their section's other keys when unset.
DERIVED_URLS = {
    "storage.redis.url": "redis://{storage.redis.host}:{storage.redis.port}/{storage.redis.db}",
    "storage.influxdb.url": "http://{storage.influxdb.host}:{storage.influxdb.port}",
}


def _derive(path: str, values: Mapping[str, Any]) -> str:
    return DERIVED_URLS[path].replace("{", "{0[").replace("}", "]}").format(values)


def derived_urls(config: FlashMMConfig) -> dict[str, str]:
    """REDIS_URL / INFLUXDB_URL: the explicit value, else built from host, port (and db).
    Never with a password: validation refuses credentials in URL fields, and the Redis password
    is added to REDIS_URL only in ``.env`` (``secret_files.redis_url_with_password``)."""
    r, i = config.storage.redis, config.storage.influxdb
    values = {"storage.redis.host": r.host, "storage.redis.port": r.port,
              "storage.redis.db": r.db, "storage.influxdb.host": i.host,
              "storage.influxdb.port": i.port}
    return {"storage.redis.url": r.url or _derive("storage.redis.url", values),
            "storage.influxdb.url": i.url or _derive("storage.influxdb.url", values)}


def effective(config: FlashMMConfig, *, redact: bool = True) -> dict[str, Any]:
    """The nested effective configuration, JSON-safe, sorted.  Secrets are ``<redacted>`` (or
    None when unset) unless ``redact`` is false."""
    out: dict[str, Any] = {}
    urls = derived_urls(config)
    for path in sorted(FIELDS):
        value = urls.get(path, _leaf(config, path))
        if hasattr(value, "get_secret_value"):
            value = REDACTED if redact else value.get_secret_value()
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def environment_file_layer(config: FlashMMConfig) -> dict[str, Any]:
    """What deploy writes as ``config/environments/<env>.yml``: the effective configuration
    without secrets (those reach hosts only through ``.env``)."""
    data = effective(config)
    data.pop("secrets")
    return data


def public_env(config: FlashMMConfig) -> dict[str, str]:
    """Every non-secret env var of the schema -> its string, ``""`` where unset (the seed's
    app expects every variable to be present).  Holds no secret."""
    urls = derived_urls(config)
    return {spec.env: env_strings.render(spec, urls.get(path, _leaf(config, path)))
            for path, spec in sorted(FIELDS.items(), key=lambda kv: kv[1].env)
            if not spec.secret}


def app_env(config: FlashMMConfig) -> dict[str, str]:
    """The public part of deploy's ``.env``: ``public_env`` without the runtime-overridable
    keys.  The app gets those from the config file and Redis (which wins over both), so a
    deploy that changes only runtime keys leaves ``.env``, and with it the container, alone."""
    runtime = {spec.env for spec in RUNTIME_FIELDS}
    return {name: value for name, value in public_env(config).items() if name not in runtime}


def without_runtime_values(effective_config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an ``effective()`` config with every runtime key's value replaced by None:
    what the app's restart fingerprint is taken over (a runtime key reaches the running app
    through Redis, never by a restart)."""
    out = json.loads(json.dumps(plain(effective_config)))
    for spec in RUNTIME_FIELDS:
        *sections, leaf = spec.path.split(".")
        node = out
        for part in sections:
            node = node[part]
        node[leaf] = None
    return out


def secret_env(config: FlashMMConfig) -> dict[str, str]:
    """Every secret env var -> its value, ``""`` where unset.  Secrets in clear: for the CLI's
    own checks and tests; deploy assembles ``.env`` per host instead (``secret_files``)."""
    return {spec.env: env_strings.render(spec, _leaf(config, spec.path))
            for spec in sorted(SECRET_FIELDS, key=lambda s: s.env)}


def runtime_keys(effective_config: Mapping[str, Any]) -> dict[str, str]:
    """``flashmm:config:<section>:<key>`` -> JSON value, for the runtime-overridable keys, from
    an ``effective()`` config (runtime keys are never secrets, so the redacted form holds
    them all)."""
    out = {}
    for spec in RUNTIME_FIELDS:
        node: Any = effective_config
        for part in spec.path.split("."):
            node = node[part]
        out[spec.redis_key] = json.dumps(plain(node))
    return out


def explain(res: Resolution, path: str) -> dict[str, Any]:
    """Winning value, layer, file and shadowed values of one key; secrets redacted."""
    spec = FIELDS[path]
    prov = res.provenance.get(path)
    if path in DERIVED_URLS and res.values.get(path) is None:
        try:                            # what deploy writes when the key is unset
            value = _derive(path, res.values)
        except KeyError:
            value = None
        parts = ", ".join(re.findall(r"\{([^}]+)\}", DERIVED_URLS[path]))
        note = " (the Redis password is added to it in .env only)" if "redis" in path else ""
        return {"key": path, "env": spec.env, "secret": False, "runtime_overridable": False,
                "value": value, "layer": "derived",
                "source": f"built from {parts}{note}",
                "shadowed": [{"layer": "defaults", "source": "schema default", "value": None}]}
    return {
        "key": path,
        "env": spec.env,
        "secret": spec.secret,
        "runtime_overridable": spec.runtime,
        "value": shown(path, res.values.get(path)),
        "layer": prov.origin.layer if prov else None,
        "source": prov.origin.source if prov else None,
        "shadowed": [{"layer": o.layer, "source": o.source, "value": shown(path, val)}
                     for o, val in (prov.shadowed if prov else [])],
    }
