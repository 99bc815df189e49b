"""What the backup and restore action plugins do on the controller, over the controller pass's
registered plan (``flashmm_plan``): start and seal a backup, build each host's module
arguments, store what a host returned, verify a backup before a restore.

Light on purpose (no schema import): the per-host parts run in forked Ansible workers.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import backup_store, dotenv_file
from .backup_store import BackupError
from .errors import FlashmmError
from .secret_files import pick_secrets
from .vault import VaultKeys

# Beyond the schema's secret env vars (plan["secret_env"]): what else a secret file holds.
EXTRA_SECRET_NAMES = ("REDIS_URL", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN",
                      "DOCKER_INFLUXDB_INIT_PASSWORD")
_ENDPOINT_KEYS = ("host", "port", "db", "username", "tls", "ca_file", "cert_file", "key_file",
                  "tls_verify", "timeout")


def environment(plan: Mapping[str, Any], hosts) -> str:
    envs = sorted({plan["hosts"][h]["environment"] for h in hosts})
    if len(envs) != 1:
        raise BackupError(f"the play's hosts belong to {len(envs)} environments "
                          f"({', '.join(envs)}): a backup holds one environment")
    return envs[0]


def keep_setting(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():     # -e flashmm_backup_keep=3
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackupError(f"flashmm_backup_keep must be a whole number of at least 1 "
                          f"(got {value!r})")
    return value


def redis_args(host_plan: Mapping[str, Any], password: str | None) -> dict[str, Any] | None:
    runtime = host_plan.get("runtime")
    if not runtime:
        return None
    args = {k: runtime[k] for k in _ENDPOINT_KEYS if k in runtime}
    if password:
        args["password"] = password
    return args


def inventory_password(plan: Mapping[str, Any], host_plan: Mapping[str, Any],
                       vault: Any, overrides: Any) -> str | None:
    runtime = host_plan.get("runtime") or {}
    if not runtime.get("password_env"):
        return None
    return pick_secrets(plan["secret_env"], vault, overrides).get(runtime["password_env"])


def public_paths(host_plan: Mapping[str, Any]) -> set[str]:
    """The files the plan renders without a secret; anything else a host holds is treated as
    secret (encrypted in the backup)."""
    return {f["path"] for f in host_plan["files"] if not f.get("mask")}


def backups_dir(action: Any, task_vars: Mapping[str, Any]) -> Path:
    """``flashmm_backup_dir`` of an action plugin's task: relative to the project root (the
    directory holding the task's role's roles/ directory) unless absolute."""
    from .values import plain

    setting = action._templar.template(task_vars.get("flashmm_backup_dir",
                                                     backup_store.DEFAULT_DIR))
    role = action._task._role
    base = (Path(role._role_path).resolve().parent.parent if role is not None
            else backup_store.project_root())
    return backup_store.backups_dir(plain(setting), base)


# ---- backup ---------------------------------------------------------------------------------

def begin(plan: Mapping[str, Any], hosts, directory: Path, keep: Any, *, check: bool
          ) -> dict[str, Any]:
    env = environment(plan, hosts)
    keep_setting(keep)
    if check:
        return {"id": "(check mode)", "environment": env, "dir": str(directory / env),
                "staging": None, "check": True}
    run = backup_store.begin(directory, env)
    run["check"] = False
    return run


def store(run: Mapping[str, Any], host: str, host_plan: Mapping[str, Any],
          taken: Mapping[str, Any], keys: VaultKeys) -> dict[str, Any]:
    if run.get("check"):
        return {"files": len(taken["files"]), "redis_keys": len(taken.get("redis") or [])}
    return backup_store.write_host(dict(run), host, dict(taken), public_paths(host_plan), keys)


def commit(run: Mapping[str, Any], hosts, keep: Any) -> dict[str, Any]:
    if run.get("check"):
        return {"path": None, "pruned": []}
    return backup_store.commit(dict(run), list(hosts), keep_setting(keep))


# ---- restore --------------------------------------------------------------------------------

def restore_hosts(value: Any) -> list[str] | None:
    """``flashmm_restore_hosts``: a list, or a comma-separated string from -e; None for all."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(h, str) for h in value):
        raise BackupError("flashmm_restore_hosts must be a list of host names")
    return sorted({h.strip() for h in value if h.strip()})


def verify(plan: Mapping[str, Any], play_hosts, backup_id: Any, subset: Any,
           directory: Path, keys: VaultKeys) -> dict[str, Any]:
    """Verify the backup for a restore of ``subset`` (or every host); returns what the later
    plays need, no secret."""
    if not backup_id:
        raise BackupError("which backup? give -e backup_id=<id> or -e backup_id=latest "
                          "(flashmm-config backup list shows them)")
    play_hosts = sorted(play_hosts)
    env = environment(plan, play_hosts)
    env_dir = directory / env
    resolved = backup_store.resolve_id(env_dir, str(backup_id))
    wanted = restore_hosts(subset)
    if wanted is not None:
        unknown = [h for h in wanted if h not in play_hosts]
        if unknown:
            raise BackupError(f"flashmm_restore_hosts: {', '.join(unknown)} not in the "
                              "inventory (or outside --limit)")
    checked = backup_store.verify(env_dir, resolved, keys, environment=env,
                                  hosts=wanted if wanted is not None else play_hosts,
                                  inventory_hosts=play_hosts)
    if wanted is None:
        extra = sorted(set(checked.index["hosts"]) - set(play_hosts))
        if extra:
            raise BackupError(f"backup {resolved} holds host(s) {', '.join(extra)} that the "
                              "inventory does not (or --limit leaves out): name the hosts to "
                              "restore with -e flashmm_restore_hosts=...")
    targets = sorted(checked.hosts)
    stack = sorted(h for h in targets if plan["hosts"][h].get("stack"))
    return {
        "backup_id": resolved, "environment": env, "dir": str(env_dir),
        "run_id": uuid.uuid4().hex[:12], "hosts": targets, "stack_hosts": stack,
        "config_versions": {h: checked.hosts[h].manifest.get("config_version") for h in targets},
        "groups": [{"name": h, "groups": ["flashmm_restore_targets"]
                    + (["flashmm_restore_stack_targets"] if h in stack else [])}
                   for h in targets],
    }


def _secret_file(path: str, content: str, mode: str, names) -> dict[str, Any]:
    if path.endswith(".env"):
        return {"path": path, "content": content, "mode": mode, "mask": "env",
                "mask_keys": sorted(names)}
    return {"path": path, "content": content, "mode": mode, "mask": "all"}


def restore_args(plan: Mapping[str, Any], verified: Mapping[str, Any], host: str,
                 part: str, keys: VaultKeys, vault: Any, overrides: Any) -> dict[str, Any]:
    """The restore module's arguments for ``host``: its part of the backup, verified again
    and decrypted here (secrets reach only no_log options).  ``part``: files (and Redis too
    where no stack starts first) or redis."""
    if host not in verified["hosts"]:
        raise BackupError(f"{host}: not among the hosts the verify step approved")
    host_plan = plan["hosts"][host]
    env_dir = Path(verified["dir"])
    checked = backup_store.verify(env_dir, verified["backup_id"], keys,
                                  environment=verified["environment"], hosts=[host])
    hb = checked.hosts[host]
    stack = bool(host_plan.get("stack"))
    args: dict[str, Any] = {"root": host_plan["root"], "run_id": verified["run_id"],
                            "lock_timeout": host_plan["lock_timeout"]}
    if part == "files":
        names = set(plan["secret_env"]) | set(EXTRA_SECRET_NAMES)
        files, secret_files = [], []
        for path, (content, mode, secret) in sorted(hb.files.items()):
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                raise BackupError(f"{host}: {path} in the backup is not UTF-8 text") from None
            if secret:
                secret_files.append(_secret_file(path, text, mode, names))
            else:
                files.append({"path": path, "content": text, "mode": mode})
        args.update(files=files, secret_files=secret_files, owner=host_plan["owner"],
                    group=host_plan["group"], directory_mode=host_plan["directory_mode"],
                    record_run=stack)
        if host_plan.get("acl_reload"):     # a running Redis loads the restored ACL file live
            current = inventory_password(plan, host_plan, vault, overrides)
            args["acl_reload"] = dict(host_plan["acl_reload"],
                                      password=_backup_password(hb) or current,
                                      previous_password=current)
    with_redis = part == "redis" or (part == "files" and not stack)
    if with_redis:
        password = None
        if stack:       # the stack's Redis runs with the restored ACL: the backup's password
            password = _backup_password(hb)
        if password is None:
            password = inventory_password(plan, host_plan, vault, overrides)
        endpoint = redis_args(host_plan, password)
        if endpoint is None:
            raise BackupError(f"{host}: the plan has no Redis endpoint for this host")
        entries = [backup_store.module_entry(e) for e in hb.redis]
        endpoint.update(
            backup_id=verified["backup_id"],
            entries=[e for e in entries if not e["key"].startswith(backup_store.SECURE_PREFIX)],
            # one opaque string: see the module's documentation of this option
            secure_entries=base64.b64encode(json.dumps(
                [e for e in entries if e["key"].startswith(backup_store.SECURE_PREFIX)]
            ).encode("utf-8")).decode("ascii"))
        args["redis"] = endpoint
    return args


def _backup_password(hb: backup_store.HostBackup) -> str | None:
    env = hb.files.get(".env")
    if env is None:
        return None
    try:
        return dotenv_file.parse(env[0].decode("utf-8")).get("REDIS_PASSWORD") or None
    except (UnicodeDecodeError, FlashmmError):
        return None
