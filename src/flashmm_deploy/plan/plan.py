# Over 350 lines: one host plan built from many inputs; the helpers belong beside it.
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

from collections.abc import Callable, Mapping
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from flashmm_deploy.secrets import compose_secrets, secret_files
from flashmm_deploy.config import effective, role_settings
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.plan import preflight
from flashmm_deploy.render import render
from flashmm_deploy.core.errors import ConfigInvalid, Issue, Origin
from flashmm_deploy.inventory.inventory import LAYER_VARS, Inventory
from flashmm_deploy.config.role_settings import INTERNAL_VARS, ROLES  # noqa: F401 (ROLES: plan.ROLES for plugins)
from flashmm_deploy.config.schema import FlashMMConfig
from flashmm_deploy.core.values import is_template

_SAFE_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
# What a run may do to a host, each the work of one role (and a tag of the same name).
STEPS = ("files", "stack", "runtime")
ENV_FILE = ".env"
INFLUXDB_ENV_FILE = "influxdb/influxdb.env"
TEMPLATES = {
    "environment.yml": ("flashmm_files", "environment.yml.j2"),
    "docker-compose.yml": ("flashmm_stack", "docker-compose.yml.j2"),
}


@dataclass
class HostInput:
    """What the controller pass reads of one host."""

    layer_vars: Mapping[str, Any]      # LAYER_VARS present for the host, raw, plus inventory_dir
    variables: Mapping[str, Any]       # every variable of the host, templated on access
    source_of: Callable[[str], str]    # where a variable is set (file, or extra vars)
    machine: str                       # the machine it deploys to (two hosts may share one)
    # variables whose value is a template only Ansible can evaluate (the CLI skips them)
    unevaluated: frozenset[str] = frozenset()


def inputs_from_inventory(inv: Inventory) -> dict[str, HostInput]:
    """The controller pass's input from our own inventory reader, for ``flashmm-config
    validate``: the same checks as a deploy, but for values that are Jinja2 templates."""
    out = {}
    for host in inv.hosts:
        variables = inv.host_variables(host)
        templated = frozenset(k for k, v in variables.items() if is_template(v))
        local = variables.get("ansible_connection") == "local"
        out[host] = HostInput(
            layer_vars={}, variables={k: v for k, v in variables.items() if k not in templated},
            source_of=lambda var, host=host: inv.var_source(host, var) or "inventory",
            machine="the controller (local connection)" if local else
            f"{variables.get('ansible_host', host)}:{variables.get('ansible_port', 22)}",
            unevaluated=templated)
    return out


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


def check_settings(inputs: Mapping[str, HostInput],
                   results: Mapping[str, host_validation.Validated],
                   role_specs: Mapping[str, Mapping[str, Any]],
                   issues: dict[str, list[Issue]]) -> dict[str, dict[str, Any]]:
    """What a deploy checks beyond each host's configuration: the roles' variables, their
    rules against the configuration, hosts sharing a root, host names.  Appends to ``issues``
    and returns each host's role variables.  (``flashmm-config validate`` runs it too.)"""
    settings: dict[str, dict[str, Any]] = {}
    for host, given in inputs.items():
        values, problems = role_settings.resolve(role_specs, given.variables, given.source_of,
                                                 frozenset(LAYER_VARS) | INTERNAL_VARS,
                                                 skip=given.unevaluated)
        settings[host] = values
        issues.setdefault(host, []).extend(problems)
        if results[host].config is not None and not problems:
            issues[host] += _cross_checks(results[host], values, given.source_of)
    _shared_roots(inputs, settings, issues)
    for host in inputs:
        if not _SAFE_HOST.fullmatch(host) or host in (".", ".."):
            issues[host].append(Issue("inventory_hostname", f"{host!r} is not a host name that "
                                      "is safe in paths and project names (letters, digits, "
                                      "'.', '-', '_', ':')", Origin("inventory", "hosts.yml")))
    return settings


def _cross_checks(result: host_validation.Validated, values: Mapping[str, Any],
                  source_of: Callable[[str], str]) -> list[Issue]:
    """Rules between the configuration and the role variables."""
    out = []
    databases = values["flashmm_redis_databases"]
    if databases is None:               # a template the CLI cannot evaluate
        return out

    def role_var(name: str) -> Origin:
        return Origin(role_settings.ROLE_VARS_LAYER, source_of(name))

    for name, db in (("storage.redis.db", result.config.storage.redis.db),
                     ("flashmm_runtime_redis_db", values["flashmm_runtime_redis_db"])):
        if db is not None and db >= databases:
            origin = (result.resolution.origin(name) if name.startswith("storage.")
                      else role_var(name))
            out.append(Issue(name, f"database {db} does not exist: Redis has "
                             f"flashmm_redis_databases={databases} (0 to {databases - 1})",
                             origin, related=(("flashmm_redis_databases",
                                               role_var("flashmm_redis_databases")),)))
    return out


def _shared_roots(inputs: Mapping[str, HostInput], settings: Mapping[str, Mapping[str, Any]],
                  issues: dict[str, list[Issue]]) -> None:
    """Two inventory hosts deploying to the same directory of the same machine would overwrite
    each other's files: an error naming both."""
    seen: dict[tuple[str, str], str] = {}
    for host in sorted(inputs):
        root = settings[host].get("flashmm_root")
        if not isinstance(root, str) or role_settings.RULES["flashmm_root"](root):
            continue                    # unknown, or reported as invalid already
        key = (inputs[host].machine, root.rstrip("/"))
        if key in seen:
            issues[host].append(Issue("flashmm_root", f"{root} on {key[0]} is also the root of "
                                      f"host {seen[key]}: two hosts may not share a root",
                                      Origin(role_settings.ROLE_VARS_LAYER,
                                             inputs[host].source_of("flashmm_root"))))
        else:
            seen[key] = host


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
