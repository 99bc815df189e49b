"""The roles' variables of every host, checked once on the controller.

Each role declares its variables in ``roles/<role>/meta/argument_specs.yml`` (entry point
``main``), with their defaults.  The controller pass resolves, for every host of the play, each
variable from the host's variables (inventory, ``-e``) or the spec's default, checks it with
Ansible's own ``ArgumentSpecValidator`` (types, choices) and with the rules below (what a type
cannot say: modes, paths, names), and reports every problem of every host in one pass, before
any host is touched.  Play ``vars:`` and role parameters are not seen here: FlashMM's
variables belong in the inventory or on the command line.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from flashmm_deploy.core.errors import Issue, Origin
from flashmm_deploy.config.layers import plain
from flashmm_deploy.core.paths import project_root
from flashmm_deploy.core.values import TEMPLATE_DELIMITERS

# The roles whose variables the controller pass checks (their meta/argument_specs.yml).
ROLES = ("flashmm", "flashmm_files", "flashmm_stack", "flashmm_runtime", "flashmm_backup",
         "flashmm_restore")
# Facts the roles set and switches of the playbooks (not typos of a FlashMM variable).
INTERNAL_VARS = frozenset({"flashmm_plan", "flashmm_plan_require_secrets",
                           "flashmm_plan_steps", "flashmm_plan_preflight", "flashmm_explain",
                           "flashmm_drift_json",     # where playbooks/drift.yml writes its report
                           "flashmm_audit_json",     # ... and playbooks/audit.yml
                           "flashmm_audit_since",    # audit.yml: only lines from then on
                           "flashmm_rotations",     # the vault's rotation bookkeeping
                           "flashmm_secrets_generation",    # ... and its secrets generation
                           "flashmm_run_action",    # what a playbook's run is (host leases)
                           "flashmm_stack_up"})     # registered by flashmm_stack (a rotation
                                                    # plans again after it, batch by batch)

ROLE_VARS_LAYER = "role variables"

_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*|[0-9]+")


def load_specs(role_dirs: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """role -> the options of its ``main`` entry point."""
    out = {}
    for role, path in role_dirs.items():
        data = yaml.load((Path(path) / "meta" / "argument_specs.yml").read_text("utf-8"),
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        out[role] = data["argument_specs"]["main"].get("options") or {}
    return out


def _mode(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    return None


def _check_mode(forbidden: int, required: int, what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        mode = _mode(value)
        if mode is None:
            return f"must be an octal mode string such as \"0644\" (got {value!r})"
        if mode & forbidden or mode & required != required:
            return f"{what} (got {value!r})"
        return None
    return check


def _root(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        return f"must be an absolute path (got {value!r})"
    if ".." in value.split("/") or os.path.normpath(value) != value.rstrip("/") or value == "/":
        return f"must be a normalised absolute path without '..', not / (got {value!r})"
    return None


# A Jinja2 expression ({{ x }}, {{- x -}}) or comment; a statement ({% ... %}) is not judged.
_EXPRESSION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}|\{#(-?).*?(-?)#\}", re.S)
_BARE_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")
_UNKNOWN = "\x00"          # stands for an expression's unknown value in a skeleton


def _skeleton(template: str, known: Mapping[str, str]) -> str | None:
    """What every rendering of ``template`` shares: its literal text, the values of the
    expressions that are a bare name in ``known`` (``{{ inventory_hostname }}``), and
    ``_UNKNOWN`` for every other expression.  None when that cannot be told: a statement, an
    unclosed delimiter, a brace inside an expression."""
    out: list[str] = []
    pos, strip_next = 0, False
    for match in _EXPRESSION.finditer(template):
        literal = template[pos:match.start()]
        if strip_next:                              # -}} / -#} of the previous one
            literal = literal.lstrip()
        if match.group(1) or match.group(4):        # {{- / {#- strip the whitespace before
            literal = literal.rstrip()
        out.append(literal)
        body = match.group(2)
        if body is not None:
            if "{" in body or "}" in body:
                return None
            name = _BARE_NAME.fullmatch(body)
            out.append(known[name.group(1)] if name and name.group(1) in known else _UNKNOWN)
        strip_next = bool(match.group(3) or match.group(5))
        pos = match.end()
    tail = template[pos:]
    text = "".join(out) + (tail.lstrip() if strip_next else tail)
    return None if any(m in text for m in TEMPLATE_DELIMITERS) else text


def template_problem(name: str, template: str, known: Mapping[str, str]) -> str | None:
    """The rule's message for a role variable whose value is a template, when every rendering
    of it breaks the rule (``relsandbox/{{ inventory_hostname }}`` is relative whatever it
    renders to); None when only its rendering can tell.  With ``known`` (the magic variables
    of the host) the message is the one a deploy gives, as soon as the template holds no other
    expression.  Only ``flashmm_root`` (a path: its shape survives any expression) is
    judged."""
    if name != "flashmm_root" or not isinstance(template, str):
        return None
    skeleton = _skeleton(template, known)
    if skeleton is None:
        return None
    if _UNKNOWN not in skeleton:
        return _root(skeleton)
    # an unknown expression at the start may render to an absolute path; elsewhere it is one
    # path component, and neither makes a relative path absolute nor removes a '..'
    probe = ("/x" + skeleton[1:] if skeleton.startswith(_UNKNOWN) else skeleton).replace(
        _UNKNOWN, "x")
    problem = _root(probe)
    if problem is None:
        return None
    return (problem.replace(f"(got {probe!r})", f"(got {template!r})")
            + ": every value this template renders to breaks that rule")


def _pattern(regex: re.Pattern[str], what: str, *, empty_ok: bool = False):
    def check(value: Any) -> str | None:
        if value in (None, "") and empty_ok:
            return None
        if not isinstance(value, str) or not regex.fullmatch(value):
            return f"must be {what} (got {value!r})"
        return None
    return check


def _port(value: Any) -> str | None:
    if value is None:
        return None
    return None if 1 <= value <= 65535 else f"must be a port, 1-65535 (got {value!r})"


def _positive(value: Any) -> str | None:
    return None if value is None or value > 0 else f"must be positive (got {value!r})"


# What a type cannot say.  Each rule returns a message (what is expected) or None.
RULES: dict[str, Callable[[Any], str | None]] = {
    "flashmm_root": _root,
    "flashmm_redis_databases": lambda v: None if 1 <= v <= 100000 else
    f"must be 1-100000 (got {v!r})",
    "flashmm_lock_timeout": lambda v: None if 0 <= v <= 3600 else f"must be 0-3600 s (got {v!r})",
    "flashmm_audit_max_bytes": lambda v: None if 4096 <= v <= 2 ** 40 else
    f"must be 4096 bytes to 1 TiB (got {v!r})",
    "flashmm_audit_keep": lambda v: None if 0 <= v <= 1000 else f"must be 0-1000 (got {v!r})",
    "flashmm_lock_lease": lambda v: None if 60 <= v <= 86400 else f"must be 60-86400 s (got {v!r})",
    "flashmm_lock_break": _pattern(re.compile(r"[0-9a-f]{1,32}"), "a run id (hex), as a lock "
                                   "message names it", empty_ok=True),
    "flashmm_files_owner": _pattern(_ACCOUNT, "a user name or uid", empty_ok=True),
    "flashmm_files_group": _pattern(_ACCOUNT, "a group name or gid", empty_ok=True),
    "flashmm_files_directory_mode": _check_mode(
        0o022, 0o700, "must give the owner rwx and nobody else write access, e.g. \"0755\""),
    "flashmm_files_config_mode": _check_mode(
        0o133, 0o600, "must let the owner read and write, nobody else write, and nobody "
                      "execute, e.g. \"0644\""),
    "flashmm_files_secret_mode": _check_mode(
        0o177, 0o600, "holds secrets: must be \"0600\" (owner read and write, no group or "
                      "other bits)"),
    "flashmm_stack_project_name": _pattern(
        _PROJECT, "a compose project name: lowercase letters, digits, '-' and '_', starting "
                  "with a letter or digit"),
    "flashmm_stack_app_image": _pattern(_IMAGE, "an image reference"),
    "flashmm_stack_redis_image": _pattern(_IMAGE, "an image reference"),
    "flashmm_stack_influxdb_image": _pattern(_IMAGE, "an image reference"),
    "flashmm_stack_grafana_image": _pattern(_IMAGE, "an image reference"),
    "flashmm_stack_api_bind": _pattern(re.compile(r"[0-9.]+|\[[0-9a-fA-F:]+\]"),
                                       "an IP address, or empty to not publish the API",
                                       empty_ok=True),
    "flashmm_stack_api_port": _port,
    "flashmm_stack_redis_port": _port,
    "flashmm_stack_grafana_port": _port,
    "flashmm_stack_wait_timeout": _positive,
    "flashmm_runtime_redis_port": _port,
    "flashmm_runtime_redis_db": lambda v: None if v is None or v >= 0 else
    f"must be a database number, 0 or more (got {v!r})",
    "flashmm_runtime_timeout": _positive,
}


_NAMED = re.compile(r"argument '(\w+)'|value of (\w+)")


def resolve(specs: Mapping[str, Mapping[str, Any]], host_vars: Mapping[str, Any],
            source_of: Callable[[str], str], other_known: frozenset[str] = frozenset(),
            skip: frozenset[str] = frozenset()) -> tuple[dict[str, Any], list[Issue]]:
    """Every role variable of one host -> its checked value; problems as issues naming the
    variable, where it was set (``source_of(var)``) and what is expected.  A ``flashmm_*``
    variable nobody declares (a typo such as ``flashmm_host_confg``) is an error too: left
    alone it would silently leave a layer or a setting at its default.  Variables in ``skip``
    (templates only Ansible can evaluate) are left unchecked, with the value None."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    values: dict[str, Any] = {}
    issues: list[Issue] = []
    bad: set[str] = set()
    for options in specs.values():
        given = {name: plain(host_vars[name]) for name in options
                 if name in host_vars and name not in skip}
        result = ArgumentSpecValidator({k: v for k, v in options.items() if k not in skip}
                                       ).validate(given)
        for error in result.error_messages:
            match = _NAMED.search(error)
            name = next((g for g in match.groups() if g), "") if match else ""
            bad.add(name)
            issues.append(Issue(name or "(role variables)", error,
                                Origin(ROLE_VARS_LAYER, source_of(name) if name else "")))
        for name in options:
            values[name] = None if name in skip else result.validated_parameters.get(name)
            if name.endswith("_mode") and name in given and not isinstance(given[name], str):
                bad.add(name)       # YAML reads 0600 unquoted as 384: a mode is a quoted string
                issues.append(Issue(name, "must be a quoted octal string such as \"0600\" (got "
                                    f"the number {given[name]!r}: YAML reads an unquoted 0600 "
                                    "as 384)", Origin(ROLE_VARS_LAYER, source_of(name))))
        bad |= set(skip) & set(options)
    for name, rule in RULES.items():
        if name in values and name not in bad:
            problem = rule(values[name])
            if problem:
                issues.append(Issue(name, problem, Origin(ROLE_VARS_LAYER, source_of(name))))
    issues += unknown_variables(set(host_vars) | set(skip), set(values) | other_known, source_of)
    return values, issues


def unknown_variables(names, known, source_of: Callable[[str], str]) -> list[Issue]:
    """A ``flashmm_*`` variable nobody declares: a typo that would leave a layer or a setting
    at its default without a word.  Each one an issue with a did-you-mean."""
    out = []
    for name in sorted(n for n in names if isinstance(n, str)):
        if name.startswith("flashmm_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]}?" if close else ""
            out.append(Issue(name, "unknown FlashMM variable: no role or layer uses it" + hint,
                             Origin(ROLE_VARS_LAYER, source_of(name))))
    return out


@lru_cache(maxsize=1)
def project_specs() -> dict[str, dict[str, Any]] | None:
    """The project's roles' argument specs when the roles are where a checkout keeps them (the
    CLI then checks role variables too); None elsewhere."""
    roles = project_root() / "roles"
    if not all((roles / r / "meta" / "argument_specs.yml").is_file() for r in ROLES):
        return None
    return load_specs({r: roles / r for r in ROLES})


def project_role_variables() -> frozenset[str] | None:
    """Every variable the project's roles declare (None outside a checkout)."""
    specs = project_specs()
    return None if specs is None else frozenset(n for o in specs.values() for n in o)
