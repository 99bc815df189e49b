"""The files of a host that hold secrets (``.env``, ``influxdb/influxdb.env``), assembled per
host inside the write task, and the secret values that task and the seed need.

The controller pass (``plan.py``) validates every host and renders every public file once; it
never puts a secret into a fact.  It leaves for here the public env vars, which secret env vars
exist and which vault key each comes from, and whether REDIS_URL must carry the Redis password.
The per-host action plugins pick the secret values from the host's own variables (the vault
layer ``flashmm_secrets`` and the env layer ``flashmm_env_overrides``, which the controller pass
validated a moment earlier) and render here.

Light on purpose: this runs in a forked Ansible worker per host, so it must not import the
schema (pydantic); the picking rule is tested against ``layers.resolve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from flashmm_deploy.secrets import compose_secrets
from flashmm_deploy.config import dotenv_file


class SecretFileError(ValueError):
    """A secret layer variable has the wrong shape (message never holds a value)."""


def host_part(plan: Any, plan_var: str, host: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(the controller pass's whole result, ``host``'s part of it), as the per-host tasks read
    them from the variable ``plan_var`` the plan task registered; a clear error otherwise."""
    if not isinstance(plan, Mapping) or not isinstance(plan.get("hosts"), Mapping):
        raise SecretFileError(f"{plan_var!r} is not the result of the flashmm role's plan task "
                              "(run the flashmm role's tasks_from: plan first)")
    if host not in plan["hosts"]:
        raise SecretFileError(f"{plan_var!r} holds no plan for host {host!r}: the plan task "
                              "ran for other hosts")
    return plan, plan["hosts"][host]


def pick_secrets(secret_env: Mapping[str, str], vault: Any, overrides: Any) -> dict[str, str]:
    """env var -> value of each secret that is set.  ``secret_env`` maps env var -> vault key.
    The env layer (``flashmm_env_overrides``) wins over the vault (``flashmm_secrets``), as in
    ``layers.LAYER_ORDER``; an empty override unsets the secret, as ``env_strings.parse`` does
    for every optional key."""
    for name, value in (("flashmm_secrets", vault), ("flashmm_env_overrides", overrides)):
        if value is not None and not isinstance(value, Mapping):
            raise SecretFileError(f"{name} must be a mapping")
    out: dict[str, str] = {}
    for env, key in secret_env.items():
        value = (vault or {}).get(key)
        if env in (overrides or {}):
            value = overrides[env]
            value = None if value == "" else value
        if value is not None:
            if not isinstance(value, str):
                raise SecretFileError(f"the value of {env} must be a string (value hidden)")
            out[env] = str.__str__(value)        # plain str, not Ansible's tagged subclass
    return out


def redis_url_with_password(url: str, password: str, username: str | None = None) -> str:
    """``url`` (``redis://host:port/db``, validated to carry no credentials) with the password,
    percent-encoded, in its userinfo: the seed's app reads only REDIS_URL."""
    scheme, rest = url.split("://", 1)
    user = quote(username, safe="") if username else ""
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


# Secrets deploy needs but the app does not: the previous Redis password of a rotation only
# authenticates deploy's own ACL reload (the app connects with the new one, which the ACL
# accepts from the first roll on).  Kept out of .env, so dropping it at the end of a rotation
# leaves .env unchanged and the app is not restarted a second time.
# Deploy's own Redis user's passwords (the app's user may not do what deploy does) never reach
# the app at all.
NOT_FOR_THE_APP = frozenset({"REDIS_PASSWORD_PREVIOUS", "REDIS_DEPLOY_PASSWORD",
                             "REDIS_DEPLOY_PASSWORD_PREVIOUS"})


def _app_env(plan_env: Mapping[str, Any], secret_env: Mapping[str, str],
             secrets: Mapping[str, str]) -> tuple[dict[str, str], set[str]]:
    """Every variable the app gets (``""`` where unset) and the names whose values are
    secret."""
    env = dict(plan_env["public"])
    for name in secret_env:
        env[name] = "" if name in NOT_FOR_THE_APP else secrets.get(name, "")
    masked = set(secret_env)
    password = secrets.get("REDIS_PASSWORD")
    if plan_env.get("redis_password_in_url") and password:
        env["REDIS_URL"] = redis_url_with_password(env["REDIS_URL"], password,
                                                   plan_env.get("redis_user"))
        masked.add("REDIS_URL")
    return env, masked


def env_file(plan_env: Mapping[str, Any], secret_env: Mapping[str, str],
             secrets: Mapping[str, str]) -> tuple[str, list[str]]:
    """The ``.env`` text of a host and the names whose values a diff must mask.  Every variable
    of the schema is present, ``""`` where unset; with compose secrets on (the plan's
    ``as_files``), each of those as ``<VAR>_FILE`` instead (``compose_secrets``)."""
    env, masked = _app_env(plan_env, secret_env, secrets)
    env = compose_secrets.split(env, plan_env.get("as_files") or ())[0]
    return dotenv_file.render(env, masked), sorted(masked & set(env))


def app_secret_files(plan_env: Mapping[str, Any], secret_env: Mapping[str, str],
                     secrets: Mapping[str, str]) -> dict[str, str]:
    """path -> content of each secret file the app's container mounts (compose secrets on:
    the plan's ``as_files``); empty when off."""
    env, _ = _app_env(plan_env, secret_env, secrets)
    return compose_secrets.split(env, plan_env.get("as_files") or ())[1]


def influxdb_env_file(plan_influx: Mapping[str, Any],
                      secrets: Mapping[str, str]) -> tuple[str, list[str]]:
    """``influxdb/influxdb.env``: InfluxDB 2's first-start setup, read by the influxdb service
    only (so a change of an app secret never recreates it)."""
    env = dict(plan_influx["public"])
    env["DOCKER_INFLUXDB_INIT_PASSWORD"] = secrets.get("INFLUXDB_ADMIN_PASSWORD", "")
    env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] = secrets.get("INFLUXDB_TOKEN", "")
    masked = ["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", "DOCKER_INFLUXDB_INIT_PASSWORD"]
    return dotenv_file.render(env, masked), masked


def host_secret_files(host_plan: Mapping[str, Any], secret_env: Mapping[str, str],
                      secrets: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every file of a host that holds secrets, as the write task writes it (the flashmm_files
    module's ``secret_files``): ``.env``, the app's secret files (compose secrets on) and
    ``influxdb/influxdb.env``.  A diff shows a KEY=value file with its secrets masked and
    nothing of a one-secret file."""
    plan_env = host_plan["env"]
    text, masked = env_file(plan_env, secret_env, secrets)
    out = [{"path": plan_env["path"], "mode": plan_env["mode"], "content": text,
            "mask_keys": masked}]
    out += [{"path": path, "mode": plan_env["mode"], "content": content, "mask": "all"}
            for path, content in sorted(app_secret_files(plan_env, secret_env, secrets).items())]
    if host_plan.get("influxdb_env"):
        text, masked = influxdb_env_file(host_plan["influxdb_env"], secrets)
        out.append({"path": host_plan["influxdb_env"]["path"], "content": text,
                    "mode": host_plan["influxdb_env"]["mode"], "mask_keys": masked})
    return out


def runtime_module_args(runtime: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, Any]:
    """The seed's module arguments: the plan's, plus the Redis password when Redis needs one."""
    args = {k: v for k, v in runtime.items() if k != "password_env"}
    if runtime.get("password_env"):
        args["password"] = secrets.get(runtime["password_env"])
    return args
