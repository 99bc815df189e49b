"""Backups on the controller: ``<backups>/<env>/<backup_id>/``, one directory per host.

Layout of a backup (directories 0700, files 0600)::

    backup.json                     id, environment, time, toolkit version and commit, and each
                                    host's manifest sha256 (written last: a backup without it
                                    is incomplete and never listed or restored)
    <host>/manifest.json            id, environment, host, time, toolkit, config version, and
                                    per file and per Redis part: mode, size, sha256, where stored
    <host>/files/<path>             each deployed file that holds no secret, byte for byte
    <host>/redis.json               flashmm:config:* and flashmm:meta:* keys: type, TTL, values
    <host>/secrets.vault            ansible-vault (vault id = the environment): the files that
                                    hold secrets (.env, influxdb/influxdb.env, redis/users.acl)
                                    and the flashmm:secure:* records, one JSON document

Nothing that holds a secret is written in clear; the manifests hold sizes and sha256 sums only.
A backup is written into ``.partial-<id>/`` and renamed into place when every host's part is
there, so a failed run never leaves something that looks like a backup.  ``verify`` checks
everything (sums, sizes, decryption, environment, hosts) and names every file that differs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import FlashmmError
from .filesync import write_atomic
from .vault import VaultError, VaultKeys, header_vault_id, is_encrypted

FORMAT = 1
INDEX = "backup.json"
MANIFEST = "manifest.json"
REDIS_FILE = "redis.json"
SECRETS_FILE = "secrets.vault"
FILES_DIR = "files"
PARTIAL = ".partial-"
DIR_MODE, FILE_MODE = 0o700, 0o600
DEFAULT_DIR = "backups"
DEFAULT_KEEP = 7
STALE_PARTIAL_S = 24 * 3600
SECURE_PREFIX = "flashmm:secure:"
_ID = re.compile(r"\d{8}T\d{6}Z(?:-\d+)?")


class BackupError(FlashmmError):
    pass


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def backups_dir(setting: str | None, base: Path | None = None) -> Path:
    """``flashmm_backup_dir``: absolute, or relative to the project root (``base``)."""
    path = Path(setting or DEFAULT_DIR).expanduser()
    return path if path.is_absolute() else (base or project_root()) / path


def shown(path: Path) -> str:
    """A path for messages: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _mkdir(path: Path) -> None:
    """``path`` and any missing parent, each 0700 (mkdir's parents get the umask's mode)."""
    if path.is_dir():
        return
    _mkdir(path.parent)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
    os.chmod(path, DIR_MODE)


def _write(path: Path, data: bytes) -> None:
    _mkdir(path.parent)
    write_atomic(path, data, FILE_MODE)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def toolkit() -> dict[str, str | None]:
    """The toolkit's version and the git commit of the checkout it runs from (None outside
    a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("flashmm-deploy")
    except PackageNotFoundError:
        ver = None
    try:
        commit = subprocess.run(["git", "-C", str(project_root()), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": ver, "commit": commit}


# ---- taking a backup ------------------------------------------------------------------------

def begin(root: Path, environment: str, *, now: float | None = None) -> dict[str, Any]:
    """A new backup id and its staging directory ``<root>/<env>/.partial-<id>``; stale staging
    directories of failed runs (older than a day) are removed."""
    env_dir = root / environment
    _mkdir(env_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    backup_id, n = stamp, 1
    while True:                 # mkdir is the claim: two runs in the same second get two ids
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
        if old != staging and time.time() - old.stat().st_mtime > STALE_PARTIAL_S:
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
        if e["key"] == "flashmm:meta:version" and e["type"] == "string":
            try:
                return int(e["values"][0])
            except (ValueError, IndexError):
                return None
    return None


def write_host(run: dict[str, Any], host: str, taken: dict[str, Any], public_paths,
               keys: VaultKeys) -> dict[str, Any]:
    """Store one host's part (what the backup module returned) under the staging directory:
    public files as they are, the rest and the secure records encrypted in one vault file,
    then the manifest.  Every file's sha256 is checked against what the host computed.
    Returns a summary (counts and sizes, no content)."""
    env, backup_id = run["environment"], run["id"]
    host_dir = Path(run["staging"]) / host
    _mkdir(host_dir)
    files: dict[str, Any] = {}
    secret_files: dict[str, str] = {}
    for path, info in sorted(taken["files"].items()):
        data = base64.b64decode(info["content"])
        if _sha(data) != info["sha256"] or len(data) != info["size"]:
            raise BackupError(f"{host}: {path}: the content received differs from the sum the "
                              "host computed; nothing stored for this backup")
        record = {"mode": info["mode"], "size": len(data), "sha256": info["sha256"]}
        if path in public_paths:
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
    _write(host_dir / MANIFEST, _json(manifest))
    return {"files": len(files), "secret_files": len(secret_files), "redis_keys": len(public),
            "secure_keys": len(secure), "config_version": manifest["config_version"],
            "bytes": sum(f["size"] for f in files.values())}


def commit(run: dict[str, Any], hosts: list[str], keep: int) -> dict[str, Any]:
    """Seal a backup whose every host's part is staged: write ``backup.json`` and move it into
    place; then keep the newest ``keep`` backups of the environment.  Returns the backup's
    path and the ids pruned."""
    staging, env_dir = Path(run["staging"]), Path(run["dir"])
    index_hosts = {}
    for host in sorted(hosts):
        manifest = staging / host / MANIFEST
        if not manifest.is_file():
            raise BackupError(f"{shown(manifest)}: missing; the backup is incomplete and was "
                              "not kept")
        data = manifest.read_bytes()
        index_hosts[host] = {"manifest_sha256": _sha(data),
                             "config_version": json.loads(data).get("config_version")}
    index = {"format": FORMAT, "backup_id": run["id"], "environment": run["environment"],
             "created": run["created"], "toolkit": run["toolkit"], "hosts": index_hosts}
    _write(staging / INDEX, _json(index))
    final = env_dir / run["id"]
    os.rename(staging, final)
    return {"path": str(final), "pruned": prune(env_dir, keep)}


def prune(env_dir: Path, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` complete backups; returns the ids removed, oldest
    first."""
    if keep < 1:
        raise BackupError(f"flashmm_backup_keep must be at least 1 (got {keep})")
    backups = list_backups(env_dir)
    old = backups[:-keep] if len(backups) > keep else []
    for info in old:
        shutil.rmtree(env_dir / info.backup_id)
    return [info.backup_id for info in old]


# ---- reading backups ------------------------------------------------------------------------

@dataclass
class BackupInfo:
    backup_id: str
    environment: str
    created: str
    hosts: dict[str, dict[str, Any]]
    toolkit: dict[str, Any]
    size: int


def _index(path: Path) -> dict[str, Any]:
    where = shown(path / INDEX)
    try:
        data = json.loads((path / INDEX).read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{where}: missing (not a complete backup)") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{where}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), dict):
        raise BackupError(f"{where}: not a backup index (no hosts)")
    return data


def list_backups(env_dir: Path) -> list[BackupInfo]:
    """The complete backups of one environment, oldest first (by time taken, then id);
    directories without a readable ``backup.json`` are left out."""
    out = []
    if not env_dir.is_dir():
        return out
    for path in env_dir.iterdir():
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            data = _index(path)
        except BackupError:
            continue
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        out.append(BackupInfo(path.name, str(data.get("environment")), str(data.get("created")),
                              data["hosts"], data.get("toolkit") or {}, size))
    return sorted(out, key=lambda b: (b.created, b.backup_id))


def resolve_id(env_dir: Path, wanted: str) -> str:
    """``latest`` (the newest complete backup) or an id that names a directory here."""
    if wanted == "latest":
        backups = list_backups(env_dir)
        if not backups:
            raise BackupError(f"{shown(env_dir)}: no complete backup to restore")
        return backups[-1].backup_id
    if not _ID.fullmatch(wanted or ""):
        raise BackupError(f"backup id {wanted!r}: expected 'latest' or an id such as "
                          "20261126T173012Z")
    if not (env_dir / wanted).is_dir():
        known = ", ".join(b.backup_id for b in list_backups(env_dir)[-5:]) or "none"
        raise BackupError(f"{shown(env_dir / wanted)}: no such backup (newest: {known})")
    return wanted


@dataclass
class HostBackup:
    """One host's part, verified and decrypted (holds secrets: never log it)."""

    host: str
    manifest: dict[str, Any]
    files: dict[str, tuple[bytes, str, bool]]        # path -> (content, mode, secret)
    redis: list[dict[str, Any]]                      # stored entries, secure ones included


@dataclass
class Verified:
    backup_id: str
    environment: str
    path: Path
    index: dict[str, Any]
    hosts: dict[str, HostBackup] = field(default_factory=dict)


def _safe_rel(rel: Any) -> bool:
    return (isinstance(rel, str) and rel != "" and not os.path.isabs(rel)
            and os.path.normpath(rel) == rel and not rel.startswith(".."))


def _check_stored(host_dir: Path, rel: Any, size: Any, digest: Any,
                  problems: list[str]) -> bytes | None:
    if not _safe_rel(rel):
        problems.append(f"{shown(host_dir / MANIFEST)}: names a stored file outside the "
                        f"backup ({rel!r})")
        return None
    path = host_dir / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{shown(path)}: missing (the manifest lists it)")
        return None
    except OSError as exc:
        problems.append(f"{shown(path)}: not readable ({exc.strerror})")
        return None
    if len(data) != size:
        problems.append(f"{shown(path)}: {len(data)} bytes, the manifest says {size}")
    elif _sha(data) != digest:
        problems.append(f"{shown(path)}: sha256 differs from the manifest (corrupted or "
                        "changed since the backup)")
    else:
        return data
    return None


def _load_host(path: Path, backup_id: str, environment: str, host: str, expect_sha: str,
               keys: VaultKeys, problems: list[str]) -> HostBackup | None:
    host_dir = path / host
    mpath = host_dir / MANIFEST
    start = len(problems)
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        problems.append(f"{shown(mpath)}: missing")
        return None
    if _sha(raw) != expect_sha:
        problems.append(f"{shown(mpath)}: sha256 differs from {INDEX} (corrupted or changed "
                        "since the backup)")
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict):
            raise ValueError
    except ValueError:
        problems.append(f"{shown(mpath)}: not a readable JSON manifest")
        return None
    for name, want in (("environment", environment), ("host", host), ("backup_id", backup_id)):
        if manifest.get(name) != want:
            problems.append(f"{shown(mpath)}: {name} is {manifest.get(name)!r}, expected "
                            f"{want!r}")
    files = manifest.get("files")
    redis_info, secrets_info = manifest.get("redis"), manifest.get("secrets")
    if not isinstance(files, dict) or not isinstance(redis_info, dict) \
            or not isinstance(secrets_info, dict):
        problems.append(f"{shown(mpath)}: lacks files, redis or secrets")
        return None
    out_files: dict[str, tuple[bytes, str, bool]] = {}
    redis: list[dict[str, Any]] = []
    data = _check_stored(host_dir, redis_info.get("stored"), redis_info.get("size"),
                         redis_info.get("sha256"), problems)
    if data is not None:
        try:
            redis = list(json.loads(data)["keys"])
        except (ValueError, KeyError, TypeError):
            problems.append(f"{shown(host_dir / REDIS_FILE)}: not a readable Redis dump")
    sealed = _check_stored(host_dir, secrets_info.get("stored"), secrets_info.get("size"),
                           secrets_info.get("sha256"), problems)
    bundle = None
    if sealed is not None:
        where = shown(host_dir / SECRETS_FILE)
        vault_id = header_vault_id(sealed) if is_encrypted(sealed) else None
        if vault_id != environment:
            problems.append(f"{where}: encrypted for vault id {vault_id!r}, not the "
                            f"environment's ({environment!r})")
        else:
            try:
                plain = keys.decrypt(sealed, where)
                if _sha(plain) != secrets_info.get("plaintext_sha256"):
                    problems.append(f"{where}: decrypts to content whose sha256 differs from "
                                    "the manifest")
                else:
                    bundle = json.loads(plain)
                    redis += list(bundle["redis"])
            except VaultError as exc:
                problems.append(str(exc))
            except (ValueError, KeyError, TypeError):
                problems.append(f"{where}: decrypts to something that is not a secrets bundle")
    for rel, info in sorted(files.items()):
        if not _safe_rel(rel) or not isinstance(info, dict):
            problems.append(f"{shown(mpath)}: lists an unsafe file path {rel!r}")
            continue
        mode = info.get("mode")
        if not isinstance(mode, str) or not re.fullmatch(r"0[0-7]{3}", mode):
            problems.append(f"{shown(mpath)}: {rel}: mode {mode!r} is not an octal mode")
            continue
        if info.get("secret"):
            if bundle is None:
                continue                    # reported above
            try:
                content = base64.b64decode(bundle["files"][rel], validate=True)
            except (KeyError, ValueError, TypeError):
                problems.append(f"{shown(host_dir / SECRETS_FILE)}: holds no {rel}")
                continue
        else:
            content = _check_stored(host_dir, info.get("stored"), info.get("size"),
                                    info.get("sha256"), problems)
            if content is None:
                continue
        if len(content) != info.get("size") or _sha(content) != info.get("sha256"):
            problems.append(f"{shown(host_dir / SECRETS_FILE)}: {rel} differs from the "
                            "manifest's size or sha256")
            continue
        out_files[rel] = (content, mode, bool(info.get("secret")))
    if len(problems) > start:
        return None
    return HostBackup(host, manifest, out_files, redis)


def verify(env_dir: Path, backup_id: str, keys: VaultKeys, *, environment: str | None = None,
           hosts: list[str] | None = None, inventory_hosts: list[str] | None = None,
           ) -> Verified:
    """Check a whole backup (or the part of ``hosts``): index, manifests, every stored file's
    size and sha256, decryption of each host's secrets, each decrypted file's sum; and, given
    the inventory's view, that environment and hosts match.  Raises BackupError listing every
    problem, one line each, naming the file."""
    path = env_dir / backup_id
    problems: list[str] = []
    index = _index(path)
    env = index.get("environment")
    if index.get("backup_id") != backup_id:
        problems.append(f"{shown(path / INDEX)}: backup_id is {index.get('backup_id')!r}, "
                        f"not {backup_id!r} (moved or copied from another backup?)")
    if environment is not None and env != environment:
        problems.append(f"{shown(path / INDEX)}: a backup of environment {env!r}; the "
                        f"inventory's hosts are {environment!r}")
    in_backup = sorted(index["hosts"])
    wanted = sorted(hosts) if hosts is not None else in_backup
    for host in wanted:
        if host not in index["hosts"]:
            problems.append(f"{shown(path / INDEX)}: host {host!r} is not in this backup "
                            f"(it has {', '.join(in_backup) or 'no host'})")
    if inventory_hosts is not None:
        missing = [h for h in wanted if h not in inventory_hosts]
        if missing:
            problems.append(f"{shown(path / INDEX)}: host(s) {', '.join(missing)} of the backup "
                            "are not in the inventory")
    result = Verified(backup_id, str(env), path, index)
    for host in wanted:
        if host in index["hosts"]:
            entry = index["hosts"][host]
            got = _load_host(path, backup_id, str(env), host,
                             entry.get("manifest_sha256") if isinstance(entry, dict) else None,
                             keys, problems)
            if got is not None:
                result.hosts[host] = got
    if problems:
        raise BackupError(f"backup {backup_id} refused: {len(problems)} problem(s), nothing "
                          "restored:\n  - " + "\n  - ".join(problems))
    return result
