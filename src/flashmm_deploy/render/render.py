"""Render a host's public files on the controller: the environment config file, the compose
file (both Jinja2 templates of their roles, rendered with StrictUndefined), the Redis ACL file
and the Redis seed script.

Public means "may sit in a fact for the length of a run": no file here holds a secret value.
The ACL file holds the Redis password only as a SHA-256 digest (what Redis itself shows in
``ACL LIST``); it is still written 0600 and never shown in a diff.  ``.env`` is assembled per
host by ``secret_files``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import yaml

from flashmm_deploy.hostside import seed_script
from flashmm_deploy.config.effective import runtime_keys
from flashmm_deploy.hostside import redis_acl
from flashmm_deploy.hostside.redis_acl import ACL_PATH  # noqa: F401 - where the ACL file goes, for the plan
from flashmm_deploy.config.schema import RUNTIME_FIELDS

if TYPE_CHECKING:
    import jinja2

MANAGED = "Managed by flashmm-deploy: changes here are overwritten on the next deploy."
# The Redis users of a password-protected stack (``acl_file``; why each may do what it may: the
# README, "Redis users").
HEALTH_USER = redis_acl.HEALTH_USER
APP_USER = redis_acl.APP_USER
DEPLOY_USER = redis_acl.DEPLOY_USER

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)   # libyaml when present: 10x faster


def _to_yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, indent=2, width=100)


def _compose_str(value: Any) -> str:
    """A JSON (so YAML) string literal in which compose interpolates nothing: ``$`` -> ``$$``."""
    return json.dumps(str(value), ensure_ascii=False).replace("$", "$$")


def jinja_env() -> jinja2.Environment:
    # imported here: `flashmm-config validate` reaches this module (the plan's settings checks)
    # but renders nothing, and jinja2 was a fifth of its start-up
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    env.filters.update(to_yaml=_to_yaml, to_json=lambda v: json.dumps(v, sort_keys=True),
                       compose_str=_compose_str)
    env.globals["managed"] = MANAGED
    return env


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def acl_file(passwords: Iterable[str], deploy_passwords: Iterable[str] = ()) -> str:
    """The Redis ACL file.  Protected (``passwords`` given): ``default`` off (no AUTH as it);
    the app's user (the one REDIS_URL names) with ``passwords``, deploy's user with
    ``deploy_passwords`` (each several only while a rotation switches clients over), as
    SHA-256 digests; each limited to
    ``flashmm:*`` keys and channels and to the commands it uses (``redis_acl.APP_COMMANDS``,
    ``DEPLOY_COMMANDS``).  Unprotected: a ``nopass`` ``default`` user that may do anything.
    Both: a health-check user limited to PING.  (Redis accepts no comment in an ACL file: what
    it is says the compose file that mounts it.)"""
    digests = sorted({"#" + sha256(p) for p in passwords})
    health = f"user {HEALTH_USER} on nopass -@all +ping\n"
    if not digests:
        return "user default on nopass ~* &* +@all\n" + health
    deploy = sorted({"#" + sha256(p) for p in deploy_passwords})
    if not deploy:          # validation requires it wherever Redis needs a password
        raise ValueError("a protected Redis needs a deploy password too")

    def user(name: str, auth: list[str], commands: Iterable[str]) -> str:
        return (f"user {name} on {' '.join(auth)} resetchannels ~flashmm:* &flashmm:* -@all "
                + " ".join("+" + c for c in commands) + "\n")

    # default: off (nobody can authenticate as it), yet with every right: Redis 7.0 replays a
    # script's writes from the append-only file as a MULTI/EXEC checked against default's
    # rules, so a default with fewer rights loses them at every restart (measured)
    return ("user default off ~* &* +@all\n"
            + user(APP_USER, digests, redis_acl.APP_COMMANDS)
            + user(DEPLOY_USER, deploy, redis_acl.DEPLOY_COMMANDS) + health)


def seed_lua(public_config: Mapping[str, Any]) -> str:
    """The seed script, with the schema's rule for each runtime key (an operator's override
    that breaks it fails the seed instead of being kept)."""
    rules = {spec.redis_key: {"kind": "boolean" if spec.kind == "bool" else "number",
                              **dict(spec.bounds)} for spec in RUNTIME_FIELDS}
    return seed_script.render_script(runtime_keys(public_config), rules)


class Templates:
    """The role templates, compiled once per run and rendered per host."""

    def __init__(self, sources: Mapping[str, str]):
        env = jinja_env()
        self._compiled = {name: env.from_string(text) for name, text in sources.items()}

    def render(self, name: str, **context: Any) -> str:
        return self._compiled[name].render(**context)
