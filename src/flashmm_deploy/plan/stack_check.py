"""The stack step's controller side: what the host-side check (``compose_state.preview``, the
``flashmm_stack`` module) compares the running containers with, and when the escape hatch
needs its module call.

In check mode the files on the host are the old ones; the files the run would write are
known here: deploy's from the plan plus the host's secret files (assembled as the write task
assembles them), restore's from the backup (``backup_tasks.restore_args``, as its write task
gets them).  The module receives the new compose file (public) and the sha256 of every planned
file (the secret files' contents never leave the controller here), plus, per service, the env
files it reads: compose resolves env files into the config hash, and their new content is not
on the host, so the check decides "its env file changes" from the sha256 and reads the rest
of the compose file with every env_file optional (a first deploy has none yet).

Light: imported by an action plugin in every forked worker (no pydantic).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from typing import Any

import yaml

from flashmm_deploy.secrets import secret_files
from flashmm_deploy.hostside.redis_acl import ACL_PATH

COMPOSE_FILE = "docker-compose.yml"
REDIS_SERVICE = "redis"
APP_SERVICE = "flashmm"


class StackCheckError(ValueError):
    """The planned compose file cannot be read (names the file and what is wrong)."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def deploy_files(plan: Mapping[str, Any], host: Mapping[str, Any], vault: Any,
                 overrides: Any) -> dict[str, str]:
    """path -> content of every file deploy's write task would write for ``host`` (the
    flashmm_files action plugin's assembly of the secret files)."""
    out = {f["path"]: f["content"] for f in host["files"]}
    secret_env = plan["secret_env"]
    secrets = secret_files.pick_secrets(secret_env, vault, overrides)
    out.update((f["path"], f["content"])
               for f in secret_files.host_secret_files(host, secret_env, secrets))
    return out


def restore_files(module_args: Mapping[str, Any]) -> dict[str, str]:
    """path -> content of every file the restore's write task would write (its module
    arguments, ``backup_tasks.restore_args(..., part="files")``)."""
    return {f["path"]: f["content"]
            for f in list(module_args.get("files") or []) + list(module_args.get("secret_files")
                                                                  or [])}


def _env_paths(service: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, (str, dict)) else list(value or [])
    out = []
    for item in items:
        path = item.get("path") if isinstance(item, dict) else item
        if not isinstance(path, str) or not path:
            raise StackCheckError(f"{COMPOSE_FILE}: services.{service}.env_file: expected a "
                                  "path or a list of paths")
        out.append(posixpath.normpath(path))
    return out


def preview_args(host: Mapping[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
    """The flashmm_stack module's arguments (task preview) for ``host``, whose run would write
    ``files`` (path -> content)."""
    if COMPOSE_FILE not in files:
        raise StackCheckError(f"the run writes no {COMPOSE_FILE} for this host")
    try:
        doc = yaml.safe_load(files[COMPOSE_FILE])
    except yaml.YAMLError as exc:
        raise StackCheckError(f"{COMPOSE_FILE} (planned) is not YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise StackCheckError(f"{COMPOSE_FILE} (planned): expected a mapping with services")
    env_files: dict[str, list[str]] = {}
    for name, service in doc["services"].items():
        if not isinstance(service, dict):
            raise StackCheckError(f"{COMPOSE_FILE}: services.{name}: expected a mapping")
        paths = _env_paths(name, service.get("env_file"))
        env_files[name] = paths
        if paths:       # optional: a file the run has not written yet does not stop the check
            service["env_file"] = [{"path": p, "required": False} for p in paths]
    stack = host["stack"]
    return {
        "task": "preview", "root": host["root"], "project_name": stack["project_name"],
        "compose": json.dumps(doc), "env_files": env_files,
        "planned_sha256": {path: _sha256(text) for path, text in files.items()},
        "acl_path": ACL_PATH, "redis_service": REDIS_SERVICE,
        "restart_redis_on_acl_change": bool(stack.get("redis_restart_on_acl_change")),
        "app_service": APP_SERVICE, "app_secret_files": list(stack.get("app_secret_files") or []),
        "timeout": int(stack.get("wait_timeout") or 180),
    }


def stale_app_args(host: Mapping[str, Any]) -> dict[str, Any] | None:
    """The flashmm_stack module's arguments (task restart_stale_app) in a real run with
    compose secrets on: the app is recreated if it started before one of its secret files was
    written (a bind-mounted file replaced by rename stays the old one in a running
    container); None with compose secrets off."""
    stack = host["stack"]
    if not stack.get("app_secret_files"):
        return None
    return {"task": "restart_stale_app", "root": host["root"],
            "project_name": stack["project_name"], "app_service": APP_SERVICE,
            "app_secret_files": list(stack["app_secret_files"]),
            "timeout": int(stack.get("wait_timeout") or 180)}


def hatch_args(host: Mapping[str, Any]) -> dict[str, Any] | None:
    """The flashmm_stack module's arguments (task restart_stale_redis) in a real run with the
    escape hatch on; None without it (then the stack step is one compose call)."""
    stack = host["stack"]
    if not stack.get("redis_restart_on_acl_change"):
        return None
    return {"task": "restart_stale_redis", "root": host["root"],
            "project_name": stack["project_name"], "acl_path": ACL_PATH,
            "redis_service": REDIS_SERVICE, "restart_redis_on_acl_change": True,
            "timeout": int(stack.get("wait_timeout") or 180)}


def up_args(host: Mapping[str, Any]) -> dict[str, Any]:
    """The flashmm_stack module's arguments in a real run (task up): the escape hatch's and
    compose secrets' one-off recreations when they are on (``hatch_args``,
    ``stale_app_args``), then ``docker compose up --wait`` with orphans removed, in one call."""
    stack = host["stack"]
    args: dict[str, Any] = {"task": "up", "root": host["root"],
                            "project_name": stack["project_name"],
                            "timeout": int(stack.get("wait_timeout") or 180)}
    for extra in (hatch_args(host), stale_app_args(host)):
        if extra:
            args.update({k: v for k, v in extra.items() if k not in ("task", "timeout")})
    return args
