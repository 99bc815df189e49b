"""What a deploy checks of its hosts beyond each host's own configuration: the roles'
variables, their rules against the configuration, two hosts sharing a root, host names.  The
controller pass (``plan.build``) runs it before rendering; ``flashmm-config validate`` runs it
alone, so it imports neither the renderer nor the preflight checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flashmm_deploy.config import role_settings
from flashmm_deploy.config.role_settings import INTERNAL_VARS
from flashmm_deploy.core.errors import Issue, Origin
from flashmm_deploy.core.values import is_template
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.inventory.inventory import LAYER_VARS, Inventory

_SAFE_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


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
