"""What a validated configuration turns into: the effective config (secrets redacted), the
``.env`` variables (secrets in clear, for no_log tasks only), the Redis runtime keys, and the
``explain`` view with provenance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import env_strings
from .layers import REDACTED, Resolution, plain, shown
from .schema import FIELDS, RUNTIME_FIELDS, FlashMMConfig


def _leaf(config: FlashMMConfig, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def derived_urls(config: FlashMMConfig) -> dict[str, str]:
    """REDIS_URL / INFLUXDB_URL: the explicit value, else built from host, port (and db)."""
    r, i = config.storage.redis, config.storage.influxdb
    return {
        "storage.redis.url": r.url or f"redis://{r.host}:{r.port}/{r.db}",
        "storage.influxdb.url": i.url or f"http://{i.host}:{i.port}",
    }


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


def env_vars(config: FlashMMConfig) -> dict[str, str]:
    """Every env var of the schema -> its string value; unset optional values are omitted.
    Holds secrets in clear: callers must be no_log."""
    urls = derived_urls(config)
    out = {}
    for path, spec in FIELDS.items():
        value = urls.get(path, _leaf(config, path))
        if value is not None:
            out[spec.env] = env_strings.render(spec, value)
    return dict(sorted(out.items()))


def runtime_keys(effective_config: Mapping[str, Any]) -> dict[str, str]:
    """``flashmm:config:<section>:<key>`` -> JSON value, for the runtime-overridable keys, from
    an ``effective()`` config (as in the playbook's ``flashmm_validated`` fact: runtime keys are
    never secrets, so the redacted form holds them all)."""
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
