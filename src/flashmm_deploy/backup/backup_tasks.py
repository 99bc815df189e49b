# Over 350 lines: backup's and restore's controller steps side by side, kept symmetric.
"""What the backup and restore action plugins do on the controller, over the controller pass's
registered plan (``flashmm_plan``): start and seal a backup, build each host's module
arguments, store what a host returned, verify a backup before a restore.

Light on purpose (no schema import): the per-host parts run in forked Ansible workers.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flashmm_deploy.backup import backup_store, restore_secrets
from flashmm_deploy.secrets import compose_secrets, secret_files
from flashmm_deploy.hostside import redis_acl
from flashmm_deploy.plan import runs
from flashmm_deploy.backup.backup_store import BackupError
from flashmm_deploy.core.paths import project_root
from flashmm_deploy.secrets.secret_files import pick_secrets
from flashmm_deploy.inventory.vault import VaultKeys

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
    from flashmm_deploy.core.values import plain

    setting = action._templar.template(task_vars.get("flashmm_backup_dir",
                                                     backup_store.DEFAULT_DIR))
    role = action._task._role
    base = (Path(role._role_path).resolve().parent.parent if role is not None
            else project_root())
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


def commit(run: Mapping[str, Any], hosts, keep: Any, keys: VaultKeys) -> dict[str, Any]:
    if run.get("check"):
        return {"path": None, "pruned": []}
    return backup_store.commit(dict(run), list(hosts), keep_setting(keep), keys)


# ---- restore --------------------------------------------------------------------------------

def accept_unsigned_setting(value: Any) -> bool:
    """``flashmm_restore_accept_unsigned``: true or false (a string from -e too)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no",
                                                            "0", ""):
        return value.strip().lower() in ("true", "yes", "1")
    if value is None or isinstance(value, bool):
        return bool(value)
    raise BackupError(f"flashmm_restore_accept_unsigned must be true or false (got {value!r})")


def planned_paths(host_plan: Mapping[str, Any], secret_env=()) -> set[str]:
    """The files deploy writes on a host (its plan's), and those holding secrets wherever
    deploy writes them (a backup from before InfluxDB was turned off still restores; the
    app's secret files of compose secrets, on or off now, for each of ``secret_env``)."""
    paths = {f["path"] for f in host_plan["files"]} | set(backup_store.SECRET_PATHS)
    paths |= {compose_secrets.host_path(v) for v in compose_secrets.app_vars(
        secret_env, secret_files.NOT_FOR_THE_APP, True)}
    for part in ("env", "influxdb_env"):
        if host_plan.get(part):
            paths.add(host_plan[part]["path"])
    return paths


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
           directory: Path, keys: VaultKeys, *, with_secrets: Any = False,
           inventory_hosts=None, vault_path: Path | None = None,
           accept_unsigned: Any = False) -> dict[str, Any]:
    """Verify the backup for a restore of ``subset`` (or every host); returns what the later
    plays need, no secret.  ``with_secrets`` (``-e restore_secrets=true``): the backup's
    secrets are restored and written into the vault at ``vault_path``, so every host of the
    inventory (``inventory_hosts``) must be restored, the hosts' backups must agree on each
    secret, and no rotation may be rolling; all checked here, before any host is touched.
    Without it, each host's backup ``.env`` must be one whose secrets can be replaced."""
    with_secrets = restore_secrets.flag(with_secrets)
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
    unsigned = accept_unsigned_setting(accept_unsigned)
    checked = backup_store.verify(env_dir, resolved, keys, environment=env,
                                  hosts=wanted if wanted is not None else play_hosts,
                                  inventory_hosts=play_hosts, accept_unsigned=unsigned)
    if wanted is None:
        extra = sorted(set(checked.index["hosts"]) - set(play_hosts))
        if extra:
            raise BackupError(f"backup {resolved} holds host(s) {', '.join(extra)} that the "
                              "inventory does not (or --limit leaves out): name the hosts to "
                              "restore with -e flashmm_restore_hosts=...")
    targets = sorted(checked.hosts)
    unplanned = [f"{backup_store.shown(env_dir / resolved / h / backup_store.MANIFEST)}: {p}: "
                 f"not a file deploy writes on {h} (it writes "
                 f"{', '.join(sorted(planned_paths(plan['hosts'][h])))})"
                 for h in targets for p in sorted(checked.hosts[h].files)
                 if p not in planned_paths(plan["hosts"][h], plan["secret_env"])]
    if unplanned:
        raise BackupError(f"backup {resolved} refused: {len(unplanned)} problem(s), nothing "
                          "restored:\n  - " + "\n  - ".join(unplanned))
    envs = {h: restore_secrets.backup_env(checked.hosts[h].files, h, resolved) for h in targets}
    if with_secrets:
        left_out = sorted(set(inventory_hosts if inventory_hosts is not None else play_hosts)
                          - set(targets))
        if left_out:
            raise BackupError(f"restore_secrets: the vault's secrets are shared by every host, "
                              f"but {', '.join(left_out)} would keep today's: restore every "
                              "host of the inventory (no --limit or flashmm_restore_hosts), or "
                              "leave out -e restore_secrets")
        values = restore_secrets.vault_values(envs, plan["secret_env"], resolved)
        if vault_path is None:
            raise BackupError("restore_secrets: the environment's vault file is not known")
        at = int(time.time())
        generation = restore_secrets.planned_generation(Path(vault_path), keys, values,
                                                        resolved, at)
    stack = sorted(h for h in targets if plan["hosts"][h].get("stack"))
    return {
        "backup_id": resolved, "environment": env, "dir": str(env_dir),
        "accept_unsigned": unsigned, "signed": checked.signed,
        "restore_secrets": with_secrets,
        "vault": str(vault_path) if with_secrets else None,
        # restore_secrets: the secrets generation the vault gets at the end (bumped at "at"),
        # recorded by the hosts
        "generation": generation if with_secrets else None,
        "generation_at": at if with_secrets else None,
        # the controller pass's run id: the run registered under it (runs.py) holds the leases
        "run_id": plan.get("run_id") or uuid.uuid4().hex[:12], "hosts": targets,
        "stack_hosts": stack,
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
    where no stack starts first) or redis.

    By default the host keeps the secrets the vault holds now (``restore_secrets``: its
    secret files rendered from the backup's with the vault's values, the records re-encrypted
    under the vault's key); with ``verified["restore_secrets"]`` it gets the backup's.  The
    Redis passwords: the one the restored ACL file serves first, then the other (a check run
    finds the running Redis before any reload; a rerun after a failure, either).  The key
    ``_records`` holds counts for the action plugin's result (no secret), not a module option."""
    if host not in verified["hosts"]:
        raise BackupError(f"{host}: not among the hosts the verify step approved")
    host_plan = plan["hosts"][host]
    env_dir = Path(verified["dir"])
    backup_id = verified["backup_id"]
    checked = backup_store.verify(env_dir, backup_id, keys,
                                  environment=verified["environment"], hosts=[host],
                                  accept_unsigned=bool(verified.get("accept_unsigned")))
    hb = checked.hosts[host]
    stack = bool(host_plan.get("stack"))
    theirs = bool(verified.get("restore_secrets"))
    current = pick_secrets(plan["secret_env"], vault, overrides)
    backup_vars = restore_secrets.backup_env(hb.files, host, backup_id) or {}
    backup_password = backup_vars.get("REDIS_PASSWORD") or None
    now_password = current.get("REDIS_PASSWORD")
    # the app's passwords to try (as default, on a stack deployed before deploy's own user),
    # the one the host is meant to end with first
    passwords = ([backup_password, now_password, current.get("REDIS_PASSWORD_PREVIOUS")]
                 if theirs else
                 [now_password, current.get("REDIS_PASSWORD_PREVIOUS"), backup_password])
    passwords = [p for i, p in enumerate(passwords) if p and p not in passwords[:i]]
    # deploy's user's: the vault's (a backup never holds them; its ACL file gets them)
    deploy = [p for p in (current.get(name) for name in redis_acl.DEPLOY_PASSWORD_ENVS) if p]
    # The restore holds each host from its files call to its Redis call (compose up between)
    redis_follows = part == "files" and stack
    args: dict[str, Any] = {"root": host_plan["root"], "run_id": verified["run_id"],
                            "lock_timeout": host_plan["lock_timeout"],
                            "lease": runs.lease_args(plan, host_plan, hold=redis_follows,
                                                     release=not redis_follows)}
    if part == "files":
        names = set(plan["secret_env"]) | set(EXTRA_SECRET_NAMES)
        files, secret_files = [], []
        fresh = (_their_acl(host_plan, hb) if theirs else
                 _fresh_secret_files(plan, host_plan, hb, host, backup_id, current))
        for path, (content, mode, secret) in sorted(hb.files.items()):
            if path in fresh:
                text = fresh[path]
            else:
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
        if host_plan.get("acl_reload") and passwords:   # a running Redis loads the ACL live
            args["acl_reload"] = dict(host_plan["acl_reload"],
                                      password=deploy[0] if deploy else None,
                                      previous_password=deploy[1] if len(deploy) > 1 else None,
                                      legacy_passwords=passwords)
    with_redis = part == "redis" or (part == "files" and not stack)
    if with_redis:
        # Without a stack nothing here manages the Redis's password: the vault's works there.
        tries = deploy if (host_plan.get("runtime") or {}).get("password_env") else []
        endpoint = redis_args(host_plan, tries[0] if tries else None)
        if endpoint is None:
            raise BackupError(f"{host}: the plan has no Redis endpoint for this host")
        if len(tries) > 1:
            endpoint["fallback_passwords"] = tries[1:]
        entries = [backup_store.module_entry(e) for e in hb.redis]
        counts = None
        if not theirs:
            entries, counts = restore_secrets.reencrypt(
                entries, current.get("ENCRYPTION_KEY"),
                [backup_vars.get("ENCRYPTION_KEY"), backup_vars.get("OLD_ENCRYPTION_KEY"),
                 current.get("OLD_ENCRYPTION_KEY")])
        endpoint.update(
            backup_id=backup_id,
            entries=[e for e in entries if not e["key"].startswith(backup_store.SECURE_PREFIX)],
            # one opaque string: see the module's documentation of this option
            secure_entries=base64.b64encode(json.dumps(
                [e for e in entries if e["key"].startswith(backup_store.SECURE_PREFIX)]
            ).encode("utf-8")).decode("ascii"))
        args["redis"] = endpoint
        if counts is not None:
            args["_records"] = counts
    return args


def _their_acl(host_plan: Mapping[str, Any], hb: backup_store.HostBackup) -> dict[str, str]:
    """``restore_secrets``: the ACL file deploy renders now with the backup's app passwords
    (deploy's user keeps the vault's: a backup never holds its password), and the compose file
    fingerprinting it."""
    acl = next((f["content"] for f in host_plan["files"]
                if f["path"] == restore_secrets.ACL_PATH), None)
    theirs = hb.files.get(restore_secrets.ACL_PATH)
    if acl is None or theirs is None:
        return {}
    try:
        digests = redis_acl.app_digests(theirs[0].decode("utf-8"))
        out = {restore_secrets.ACL_PATH: redis_acl.with_app_digests(acl, digests)}
        compose = hb.files.get(restore_secrets.COMPOSE_PATH)
        if compose is not None:
            out[restore_secrets.COMPOSE_PATH] = restore_secrets.fresh_compose(
                compose[0].decode("utf-8"), out[restore_secrets.ACL_PATH])
    except UnicodeDecodeError:
        return {}                       # refused below as not UTF-8 text
    return out


def _fresh_secret_files(plan: Mapping[str, Any], host_plan: Mapping[str, Any],
                        hb: backup_store.HostBackup, host: str, backup_id: str,
                        current: Mapping[str, str]) -> dict[str, str]:
    """path -> content of the backup's files that hold secrets, with the vault's secrets
    instead of the backup's; and a compose file that fingerprints the ACL file, matching it."""
    # .env and (compose secrets on when the backup was taken) the app's secret files
    out: dict[str, str] = restore_secrets.fresh_app_files(
        hb.files, host, backup_id, plan["secret_env"], current,
        bool((host_plan.get("env") or {}).get("redis_password_in_url")),
        (host_plan.get("env") or {}).get("redis_user"))
    influx = restore_secrets.backup_env(hb.files, host, backup_id,
                                        restore_secrets.INFLUXDB_ENV_PATH)
    if influx is not None:
        out[restore_secrets.INFLUXDB_ENV_PATH] = restore_secrets.fresh_influxdb_env(
            influx, current)
    acl = next((f["content"] for f in host_plan["files"]
                if f["path"] == restore_secrets.ACL_PATH), None)
    if acl is not None and restore_secrets.ACL_PATH in hb.files:
        out[restore_secrets.ACL_PATH] = acl
        compose = hb.files.get(restore_secrets.COMPOSE_PATH)
        if compose is not None:
            try:
                out[restore_secrets.COMPOSE_PATH] = restore_secrets.fresh_compose(
                    compose[0].decode("utf-8"), acl)
            except UnicodeDecodeError:
                pass                    # refused below as not UTF-8 text
    compose = out.get(restore_secrets.COMPOSE_PATH) or hb.files.get(
        restore_secrets.COMPOSE_PATH, (b"",))[0].decode("utf-8", "replace")
    if any(compose_secrets.is_secret_path(p) for p in out):   # its label digests them
        out[restore_secrets.COMPOSE_PATH] = restore_secrets.fresh_secrets_label(compose, host, out)
    return out


def write_vault(plan: Mapping[str, Any], verified: Mapping[str, Any], keys: VaultKeys, *,
                check: bool) -> dict[str, Any]:
    """``restore_secrets``: after every host is restored, the backup's secrets into the
    vault (``restore_secrets.write_vault``); the backup verified and decrypted again here."""
    checked = backup_store.verify(Path(verified["dir"]), verified["backup_id"], keys,
                                  environment=verified["environment"], hosts=verified["hosts"],
                                  accept_unsigned=bool(verified.get("accept_unsigned")))
    envs = {h: restore_secrets.backup_env(hb.files, h, verified["backup_id"])
            for h, hb in checked.hosts.items()}
    values = restore_secrets.vault_values(envs, plan["secret_env"], verified["backup_id"])
    return restore_secrets.write_vault(Path(verified["vault"]), keys, values,
                                       verified["backup_id"], check=check,
                                       now=verified.get("generation_at"))
