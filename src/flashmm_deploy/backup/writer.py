"""Taking a backup: a new id and its staging directory, each host's part, the signed index that
seals it, and retention (``backup_store`` describes the layout)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from flashmm_deploy.redis.keys import VERSION_KEY
from flashmm_deploy.hostside.atomic_write import write_atomic
from flashmm_deploy.secrets.compose_secrets import is_secret_path
from flashmm_deploy.inventory.vault import VaultKeys
from flashmm_deploy.backup.layout import (DIR_MODE, FILE_MODE, FILES_DIR, FORMAT, INDEX, MANIFEST,
                                          PARTIAL, PRUNED, REDIS_FILE, SECRET_PATHS, SECRETS_FILE,
                                          SECURE_PREFIX, SEQUENCE_FILE, STALE_PARTIAL_S, _json, _mkdir, _now,
                                          _read_sequence, _sha, _write, BackupError, env_lock,
                                          host_name_problem, shown, toolkit)
from flashmm_deploy.backup.signing import sign, signing_key
from flashmm_deploy.backup.index import list_backups


# ---- taking a backup ------------------------------------------------------------------------

def begin(root: Path, environment: str, *, now: float | None = None) -> dict[str, Any]:
    """A new backup id and its staging directory ``<root>/<env>/.partial-<id>``; stale staging
    directories of failed runs (older than a day) are removed.  Under the environment's lock."""
    env_dir = root / environment
    _mkdir(env_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    backup_id, n = stamp, 1
    with env_lock(env_dir):
        while True:             # mkdir is the claim: two runs in the same second get two ids
            staging = env_dir / (PARTIAL + backup_id)
            if not (env_dir / backup_id).exists():
                try:
                    staging.mkdir(mode=DIR_MODE)
                    os.chmod(staging, DIR_MODE)
                    break
                except FileExistsError:
                    pass
            n += 1
            backup_id = f"{stamp}-{n}"
        for old in env_dir.glob(PARTIAL + "*"):
            try:
                if old != staging and time.time() - old.stat().st_mtime > STALE_PARTIAL_S:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                pass
        for old in env_dir.glob(PRUNED + "*"):      # a prune interrupted half-way
            shutil.rmtree(old, ignore_errors=True)
    return {"id": backup_id, "environment": environment, "dir": str(env_dir),
            "staging": str(staging), "created": _now(), "toolkit": toolkit()}


def _redis_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A dump entry (values base64) as stored: UTF-8 text when every value is, else base64."""
    raw = [base64.b64decode(v) for v in entry["values"]]
    try:
        values, encoding = [v.decode("utf-8") for v in raw], "utf-8"
    except UnicodeDecodeError:
        values, encoding = list(entry["values"]), "base64"
    return {"key": entry["key"], "type": entry["type"], "ttl_ms": int(entry["ttl_ms"]),
            "encoding": encoding, "values": values}


def module_entry(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored entry as the restore module takes it (values base64)."""
    if stored.get("encoding") == "base64":
        values = list(stored["values"])
    else:
        values = [base64.b64encode(v.encode("utf-8")).decode("ascii") for v in stored["values"]]
    return {"key": stored["key"], "type": stored["type"], "ttl_ms": int(stored["ttl_ms"]),
            "values": values}


def config_version(entries: list[dict[str, Any]]) -> int | None:
    for e in entries:
        if e["key"] == VERSION_KEY and e["type"] == "string":
            try:
                return int(e["values"][0])
            except (ValueError, IndexError):
                return None
    return None



def write_host(run: dict[str, Any], host: str, taken: dict[str, Any], public_paths,
               keys: VaultKeys) -> dict[str, Any]:
    """Store one host's part (what the backup module returned) under the staging directory:
    public files as they are, the rest and the secure records encrypted in one vault file,
    then the signed manifest.  Every file's sha256 is checked against what the host computed.
    Returns a summary (counts and sizes, no content)."""
    env, backup_id = run["environment"], run["id"]
    bad_name = host_name_problem(host)
    if bad_name:
        raise BackupError(f"{host!r}: {bad_name}; nothing stored for this backup")
    host_dir = Path(run["staging"]) / host
    key = signing_key(keys, env, shown(host_dir / MANIFEST))
    _mkdir(host_dir)
    files: dict[str, Any] = {}
    secret_files: dict[str, str] = {}
    for path, info in sorted(taken["files"].items()):
        data = base64.b64decode(info["content"])
        if _sha(data) != info["sha256"] or len(data) != info["size"]:
            raise BackupError(f"{host}: {path}: the content received differs from the sum the "
                              "host computed; nothing stored for this backup")
        record = {"mode": info["mode"], "size": len(data), "sha256": info["sha256"]}
        if path in public_paths and path not in SECRET_PATHS and not is_secret_path(path):
            record.update(secret=False, stored=f"{FILES_DIR}/{path}")
            _write(host_dir / FILES_DIR / path, data)
        else:
            record.update(secret=True, stored=SECRETS_FILE)
            secret_files[path] = info["content"]
        files[path] = record
    entries = [_redis_entry(e) for e in (taken.get("redis") or [])]
    public = [e for e in entries if not e["key"].startswith(SECURE_PREFIX)]
    secure = [e for e in entries if e["key"].startswith(SECURE_PREFIX)]
    redis_bytes = _json({"format": FORMAT, "keys": public})
    _write(host_dir / REDIS_FILE, redis_bytes)
    bundle = _json({"format": FORMAT, "files": secret_files, "redis": secure})
    where = shown(host_dir / SECRETS_FILE)
    sealed = keys.encrypt(bundle, env, where)
    _write(host_dir / SECRETS_FILE, sealed)
    manifest = {
        "format": FORMAT, "backup_id": backup_id, "environment": env, "host": host,
        "created": run["created"], "toolkit": run["toolkit"],
        "deployed_by_run": taken.get("deployed_by"), "deployed_at": taken.get("deployed_at"),
        "config_version": config_version(public),
        "files": files,
        "redis": {"keys": len(public), "secure_keys": len(secure),
                  "stored": REDIS_FILE, "size": len(redis_bytes), "sha256": _sha(redis_bytes)},
        "secrets": {"stored": SECRETS_FILE, "size": len(sealed), "sha256": _sha(sealed),
                    "plaintext_sha256": _sha(bundle), "vault_id": env},
    }
    _write(host_dir / MANIFEST, _json(sign(MANIFEST, manifest, key)))
    return {"files": len(files), "secret_files": len(secret_files), "redis_keys": len(public),
            "secure_keys": len(secure), "config_version": manifest["config_version"],
            "bytes": sum(f["size"] for f in files.values())}


def commit(run: dict[str, Any], hosts: list[str], keep: int, keys: VaultKeys) -> dict[str, Any]:
    """Seal a backup whose every host's part is staged, under the environment's lock: give it
    the next sequence, write the signed ``backup.json``, move it into place, then keep the
    newest ``keep`` backups of the environment (never this one).  Returns the backup's path,
    its sequence and the ids pruned."""
    if keep < 1:
        raise BackupError(f"flashmm_backup_keep must be at least 1 (got {keep})")
    staging, env_dir = Path(run["staging"]), Path(run["dir"])
    key = signing_key(keys, run["environment"], shown(staging / INDEX))
    index_hosts = {}
    for host in sorted(hosts):
        manifest = staging / host / MANIFEST
        if not manifest.is_file():
            raise BackupError(f"{shown(manifest)}: missing; the backup is incomplete and was "
                              "not kept")
        data = manifest.read_bytes()
        index_hosts[host] = {"manifest_sha256": _sha(data),
                             "config_version": json.loads(data).get("config_version")}
    with env_lock(env_dir):
        sequence = 1 + max([_read_sequence(env_dir)]
                           + [b.sequence or 0 for b in list_backups(env_dir)])
        index = {"format": FORMAT, "backup_id": run["id"], "sequence": sequence,
                 "environment": run["environment"], "created": run["created"],
                 "toolkit": run["toolkit"], "hosts": index_hosts}
        _write(staging / INDEX, _json(sign(INDEX, index, key)))
        final = env_dir / run["id"]
        os.rename(staging, final)
        write_atomic(env_dir / SEQUENCE_FILE, f"{sequence}\n".encode("ascii"), FILE_MODE)
        pruned = _prune(env_dir, keep, protect={run["id"]})
    return {"path": str(final), "sequence": sequence, "pruned": pruned}


def prune(env_dir: Path, keep: int, *, protect=()) -> list[str]:
    """Remove all but the newest ``keep`` complete backups (never one of ``protect``), under
    the environment's lock; returns the ids removed, oldest first."""
    if keep < 1:
        raise BackupError(f"flashmm_backup_keep must be at least 1 (got {keep})")
    with env_lock(env_dir):
        return _prune(env_dir, keep, protect=set(protect))


def _prune(env_dir: Path, keep: int, *, protect: set[str]) -> list[str]:
    backups = list_backups(env_dir)
    kept = [b for b in backups if b.backup_id in protect]
    others = [b for b in backups if b.backup_id not in protect]
    room = max(keep - len(kept), 0)
    old = others[:len(others) - room] if room else others
    for info in old:        # gone from every listing at once, then removed
        doomed = env_dir / (PRUNED + info.backup_id)
        try:
            os.rename(env_dir / info.backup_id, doomed)
        except FileNotFoundError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
    return [info.backup_id for info in old]
