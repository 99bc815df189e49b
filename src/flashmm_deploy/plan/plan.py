"""The controller pass: validate every host of a play once, check every role's variables, and
render each host's public files, before any host is touched.

Input per host: its FlashMM layer variables (raw, never templated: a layer holds literal
values) and a view of its other variables (templated, for role variables such as
``flashmm_root``).  Output: ``flashmm_plan``, a fact holding per host what to write, start and
seed.  It holds no secret value: ``.env`` and ``influxdb/influxdb.env`` are assembled per host
by the write task (``secret_files``), from the same layer variables validated here.

Every problem of every host is collected and raised together (``ConfigInvalid``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flashmm_deploy.secrets import compose_secrets, secret_files
from flashmm_deploy.config import effective
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.plan import preflight
from flashmm_deploy.render import render
from flashmm_deploy.core.errors import ConfigInvalid, Issue
from flashmm_deploy.config.role_settings import ROLES  # noqa: F401 (ROLES: plan.ROLES for plugins)
from flashmm_deploy.config.schema import FlashMMConfig
# the checks beyond each host's configuration (HostInput: plan.HostInput for the plan action)
from flashmm_deploy.plan.host_checks import HostInput, check_settings  # noqa: F401

# What a run may do to a host, each the work of one role (and a tag of the same name).
STEPS = ("files", "stack", "runtime")
ENV_FILE = ".env"
INFLUXDB_ENV_FILE = "influxdb/influxdb.env"
TEMPLATES = {
    "environment.yml": ("flashmm_files", "environment.yml.j2"),
    "docker-compose.yml": ("flashmm_stack", "docker-compose.yml.j2"),
}


@dataclass
class Plan:
    hosts: dict[str, dict[str, Any]]
    warnings: list[str]
    # what the preflight checks of each host that has them need (holds secrets: never a fact)
    preflight: dict[str, preflight.Target] = field(default_factory=dict, repr=False)
    # names this run on the hosts (their lock and their last writer)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def fact(self) -> dict[str, Any]:
        """The ``flashmm_plan`` result the plan task registers."""
        stack = sorted(h for h, p in self.hosts.items() if p["stack"])
        runtime = sorted(h for h, p in self.hosts.items()
                         if p["runtime"] and not p["runtime_with_files"])
        return {
            "run_id": self.run_id,
            "hosts": self.hosts,
            "secret_env": dict(effective.SECRET_ENV),
            "stack_hosts": stack,
            "runtime_hosts": runtime,
            # the add_host entries of the groups deploy.yml's later plays target
            "groups": [{"name": h, "groups": [g for g, members in (
                           ("flashmm_stack_hosts", stack), ("flashmm_runtime_hosts", runtime))
                           if h in members]}
                       for h in sorted(set(stack) | set(runtime))],
        }


def build(inputs: Mapping[str, HostInput], *, role_specs: Mapping[str, Mapping[str, Any]],
          templates: render.Templates | None, require_secrets: bool,
          steps: frozenset[str] = frozenset(STEPS), preflight_hosts: str = "auto") -> Plan:
    """Validate every host (configuration, role variables, hosts against each other) and,
    when ``templates`` is given, render each host's plan.  Raises ConfigInvalid with every
    problem of every host.  ``preflight_hosts``: whose preflight inputs the plan carries:
    ``auto`` the hosts with ``flashmm_preflight`` on, ``all``, or ``none``."""
    results = host_validation.validate_host_layers(
        {h: i.layer_vars for h, i in inputs.items()}, require_secrets=require_secrets)
    issues: dict[str, list[Issue]] = {h: list(r.errors) for h, r in results.items()}
    settings = check_settings(inputs, results, role_specs, issues)
    if any(issues.values()):
        raise ConfigInvalid({h: i for h, i in issues.items() if i})
    warnings = [f"host {h}: {w.render()}" for h, r in sorted(results.items()) for w in r.warnings]
    checks = {h: preflight.target(results[h].config, settings[h]) for h in inputs
              if preflight_hosts == "all"
              or (preflight_hosts == "auto" and settings[h]["flashmm_preflight"])}
    if templates is None:
        return Plan({}, warnings, preflight=checks)
    return Plan({h: _host_plan(h, results[h].config, settings[h], templates,
                               steps=steps, layer_vars=inputs[h].layer_vars)
                 for h in inputs}, warnings, preflight=checks)


def _strip(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def _host_plan(host: str, config: FlashMMConfig, values: Mapping[str, Any],
               templates: render.Templates, *, steps: frozenset[str],
               layer_vars: Mapping[str, Any] | None = None) -> dict:
    public = effective.environment_file_layer(config)
    env_name = config.app.environment
    redis = config.storage.redis
    protected = redis.password_required
    password = redis_password(config)
    stack = _strip(values, "flashmm_stack_")
    if stack["api_port"] is None:
        stack["api_port"] = config.api.port
    config_mode, secret_mode = values["flashmm_files_config_mode"], values["flashmm_files_secret_mode"]

    env_file = templates.render("environment.yml", host=host, config=public)
    previous = redis_password(config, previous=True)
    acl = render.acl_file([p for p in (password, previous) if p] if protected else [],
                          [p for p in (redis_password(config, deploy=True),
                                       redis_password(config, previous=True, deploy=True)) if p])
    env_plan = {"path": ENV_FILE, "mode": secret_mode, "public": effective.app_env(config),
                "redis_password_in_url": protected,
                # the user REDIS_URL names (the app's; none where Redis has no password)
                "redis_user": render.APP_USER if protected else None}
    env_plan["as_files"], app_secrets = _app_secrets(host, stack, env_plan,
                                                     layer_vars or {})
    compose = templates.render("docker-compose.yml", host=host, config=public, stack=stack,
                               app_secrets=app_secrets,
                               databases=values["flashmm_redis_databases"],
                               health_user=render.HEALTH_USER,
                               fingerprints={"config": _restart_fingerprint(templates, host,
                                                                            public),
                                             "acl": render.sha256(acl)})
    seed_lua = render.seed_lua(public)
    files = [
        {"path": f"config/environments/{env_name}.yml", "content": env_file, "mode": config_mode},
        {"path": "docker-compose.yml", "content": compose, "mode": config_mode},
        {"path": "redis/seed.lua", "content": seed_lua, "mode": config_mode},
        {"path": render.ACL_PATH, "content": acl, "mode": secret_mode, "mask": "all"},
    ]
    influx = None
    if stack["influxdb_enabled"] and config.storage.influxdb.auth_required:
        i = config.storage.influxdb
        influx = {"path": INFLUXDB_ENV_FILE, "mode": secret_mode, "public": {
            "DOCKER_INFLUXDB_INIT_MODE": "setup",
            "DOCKER_INFLUXDB_INIT_USERNAME": stack["influxdb_admin_user"],
            "DOCKER_INFLUXDB_INIT_ORG": i.org, "DOCKER_INFLUXDB_INIT_BUCKET": i.bucket}}
    compose_up = values["flashmm_compose_up"]
    runtime = _strip(values, "flashmm_runtime_")
    if runtime["redis_port"] is None:       # where the host's stack publishes Redis
        runtime["redis_port"] = stack["redis_port"]
    if runtime["redis_db"] is None:
        runtime["redis_db"] = redis.db
    return {
        "environment": env_name,
        "root": values["flashmm_root"],
        "owner": values["flashmm_files_owner"] or None,
        "group": values["flashmm_files_group"] or None,
        "directory_mode": values["flashmm_files_directory_mode"],
        "lock_timeout": values["flashmm_lock_timeout"],
        "lease_ttl": values["flashmm_lock_lease"],
        # security.audit_logging: where and how the host modules log each change
        "audit": {"root": values["flashmm_root"], "host": host,
                  "max_bytes": values["flashmm_audit_max_bytes"],
                  "keep": values["flashmm_audit_keep"]} if config.security.audit_logging else None,
        "lock_break": values["flashmm_lock_break"],
        "files": files,
        "env": env_plan,
        "influxdb_env": influx,
        "stack": {"project_name": stack["project_name"],
                  "wait_timeout": stack["wait_timeout"],
                  "images": _images(stack, config),
                  # where the host itself reaches the app's /health (None: not published)
                  "health_url": _health_url(stack),
                  # the escape hatch: the stack step recreates Redis once to read its ACL file
                  "redis_restart_on_acl_change": stack["redis_restart_on_acl_change"],
                  # compose secrets: the app is recreated when one was written after it started
                  "app_secret_files": [compose_secrets.host_path(v) for v in env_plan["as_files"]],
                  } if compose_up else None,
        "runtime": {
            "script": seed_lua, **_connection(runtime, protected), "db": runtime["redis_db"],
            "mode": runtime["mode"],
            # the write/seed task picks this secret from the host's own variables: deploy's
            # user's password (the app's never authenticates a deploy step)
            "password_env": DEPLOY_PASSWORD_ENV if protected else None,
        } if "runtime" in steps else None,
        # A running stack's Redis takes a changed ACL file live (ACL SETUSER) in the write
        # call, before the app restarts with a new password, and again in the seed call
        # (an upgrade's old default user, kept until the app restarted): no Redis restart, no
        # dropped client.
        "acl_reload": (_connection(runtime, protected) if compose_up and "files" in steps
                       and not stack["redis_restart_on_acl_change"] else None),
        # Where nothing must start first, the write call seeds too (one module call per host)
        "runtime_with_files": {"files", "runtime"} <= steps and not compose_up,
        # this run writes the host's files, so its seed checks no other run wrote since
        "files_this_run": "files" in steps,
    }


def _restart_fingerprint(templates: render.Templates, host: str,
                         public: Mapping[str, Any]) -> str:
    """The app container's ``io.flashmm.config-sha256`` label: the config file as it would
    read with no runtime key set.  A change to any other key (or to the template) changes it
    and compose recreates the app; a runtime key reaches the running app through the seed's
    publish instead, without a restart (the file still holds its new value, for the next
    start)."""
    neutral = effective.without_runtime_values(public)
    return render.sha256(templates.render("environment.yml", host=host, config=neutral))


def _app_secrets(host: str, stack: Mapping[str, Any], env: Mapping[str, Any],
                 layer_vars: Mapping[str, Any]) -> tuple[list[str], dict | None]:
    """With ``flashmm_stack_compose_secrets``: the variables the app gets as files, and what
    the compose file says of them (``compose_secrets``), its label a digest over the files the
    write task will write for ``env`` (the plan's ``.env`` part; the secrets picked here from
    the same layer variables, by the same rule)."""
    if not stack["compose_secrets"]:
        return [], None
    as_files = compose_secrets.app_vars(effective.SECRET_ENV, secret_files.NOT_FOR_THE_APP,
                                        bool(env.get("redis_password_in_url")))
    secrets = secret_files.pick_secrets(effective.SECRET_ENV, layer_vars.get("flashmm_secrets"),
                                        layer_vars.get("flashmm_env_overrides"))
    files = secret_files.app_secret_files(dict(env, as_files=as_files), effective.SECRET_ENV,
                                          secrets)
    return as_files, compose_secrets.compose_context(host, as_files, files)


def _health_url(stack: Mapping[str, Any]) -> str | None:
    bind = stack["api_bind"]
    if not bind:
        return None
    host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    return f"http://{'[' + host + ']' if ':' in host else host}:{stack['api_port']}/health"


def _connection(runtime: Mapping[str, Any], protected: bool) -> dict:
    """How deploy's steps on the host reach its Redis (the flashmm_runtime module's connection
    options): as deploy's user where Redis needs a password."""
    return {"host": runtime["redis_host"], "port": runtime["redis_port"],
            "username": runtime["redis_username"] or (render.DEPLOY_USER if protected else None),
            "tls": runtime["redis_tls"], "ca_file": runtime["redis_ca_file"] or None,
            "cert_file": runtime["redis_cert_file"] or None,
            "key_file": runtime["redis_key_file"] or None,
            "tls_verify": runtime["redis_tls_verify"], "timeout": runtime["timeout"]}


def _images(stack: Mapping[str, Any], config: FlashMMConfig) -> dict[str, str]:
    """service -> image, as the compose file runs them (named when `up` fails)."""
    images = {"flashmm": stack["app_image"], "redis": stack["redis_image"]}
    if stack["influxdb_enabled"]:
        images["influxdb"] = stack["influxdb_image"]
    if config.monitoring.grafana_enabled:
        images["grafana"] = stack["grafana_image"]
    return images


# The env var (secret_files.NOT_FOR_THE_APP) whose value deploy's steps authenticate with
DEPLOY_PASSWORD_ENV = "REDIS_DEPLOY_PASSWORD"


def redis_password(config: FlashMMConfig, previous: bool = False,
                   deploy: bool = False) -> str | None:
    """The app's Redis password (``deploy``: deploy's user's), or its previous one."""
    name = ("redis_deploy_password" if deploy else "redis_password") + \
        ("_previous" if previous else "")
    secret = getattr(config.secrets, name)
    return secret.get_secret_value() if secret is not None else None
