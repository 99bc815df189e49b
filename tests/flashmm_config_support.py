"""A host as deploy leaves it, for the client library's tests: the environment file deploy
writes (``config/environments/<env>.yml``), the process environment compose gives the app
(every variable of ``.env``) and, with a Redis database, the runtime layer seeded by deploy's
own seed script (``seed_script.render_script`` + ``seed_apply.apply``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flashmm_deploy.config import effective
from flashmm_deploy.hostside import seed_apply, seed_script
from flashmm_deploy.config.layers import LayerInput
from flashmm_deploy.redis_ext.url import endpoint_from_url
from flashmm_deploy.config.validate import validate_layers

SEI = {"network": "testnet", "rpc_url": "https://rpc.example", "ws_url": "wss://ws.example",
       "chain_id": "atlantic-2"}


def nested(tree: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def deployed_host(tmp: Path, config: dict, secrets: dict[str, str], *,
                  redis_url: str | None = None) -> tuple[dict[str, str], Path, Any]:
    """(environ, config dir, validated FlashMMConfig) of a host deploy wrote; with
    ``redis_url``, its runtime layer seeded there.  ``config``: the nested inventory layer."""
    result = validate_layers([LayerInput("environment", "test inventory", {"sei": SEI, **config}),
                              LayerInput("vault", "test vault", {"secrets": secrets})])
    assert result.ok, [i.render() for i in result.errors]
    cfg = result.config
    env_name = cfg.app.environment
    config_dir = tmp / "config"
    (config_dir / "environments").mkdir(parents=True, exist_ok=True)
    (config_dir / "environments" / f"{env_name}.yml").write_text(
        yaml.safe_dump(effective.environment_file_layer(cfg), sort_keys=True))
    environ = {**effective.app_env(cfg), **effective.secret_env(cfg)}     # what .env holds
    if redis_url is not None:
        environ["REDIS_URL"] = redis_url
        script = seed_script.render_script(effective.runtime_keys(effective.effective(cfg)))
        seed_apply.apply(endpoint_from_url(redis_url), script)
    return environ, config_dir, cfg
