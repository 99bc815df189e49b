"""Verifying a backup: signatures, sums, sizes, decryption, environment, hosts, paths, modes
and the shape of the Redis data, every difference named (``backup_store`` describes the
layout)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashmm_deploy.hostside.backup_host import entry_problem
from flashmm_deploy.redis.keys import PUBLIC_PREFIXES
from flashmm_deploy.secrets.compose_secrets import is_secret_path
from flashmm_deploy.inventory.vault import VaultError, VaultKeys, header_vault_id, is_encrypted
from flashmm_deploy.backup.layout import (_ID, FILES_DIR, INDEX, MANIFEST, PUBLIC_MODE_RULE,
                                          REDIS_FILE, SECRET_MODE_RULE, SECRET_PATHS, SECRETS_FILE,
                                          SECURE_PREFIX, SIGNATURE, _sha, BackupError, BackupGone,
                                          host_name_problem, shown)
from flashmm_deploy.backup.signing import _checking_keys, _signature_problem
from flashmm_deploy.backup.index import _index, _read_inside


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
    signed: bool = True


def _safe_rel(rel: Any) -> bool:
    return (isinstance(rel, str) and rel != "" and not os.path.isabs(rel)
            and os.path.normpath(rel) == rel and not rel.startswith("..")
            and "\x00" not in rel)


def mode_problem(mode: Any, secret: bool) -> str | None:
    """Whether deploy itself could write a file with ``mode`` (its own rules for
    flashmm_files_config_mode / flashmm_files_secret_mode)."""
    if not isinstance(mode, str) or not re.fullmatch(r"0[0-7]{3}", mode):
        return f"mode {mode!r} is not an octal mode such as \"0644\""
    forbidden, required = SECRET_MODE_RULE if secret else PUBLIC_MODE_RULE
    bits = int(mode, 8)
    if bits & forbidden or bits & required != required:
        return (f"mode {mode} is not one deploy writes (a file holding secrets: \"0600\"; "
                "others: owner read and write, nobody else write, nobody execute)"
                if secret else
                f"mode {mode} is not one deploy writes (owner read and write, nobody else "
                "write, nobody execute, e.g. \"0644\")")
    return None


def _check_stored(base: Path, parts: list[str], size: Any, digest: Any,
                  problems: list[str]) -> bytes | None:
    path = base.joinpath(*parts)
    try:
        data = _read_inside(base, parts)
    except FileNotFoundError:
        problems.append(f"{shown(path)}: missing (the manifest lists it)")
        return None
    except BackupError as exc:
        problems.append(str(exc))
        return None
    if len(data) != size:
        problems.append(f"{shown(path)}: {len(data)} bytes, the manifest says {size}")
    elif _sha(data) != digest:
        problems.append(f"{shown(path)}: sha256 differs from the manifest (corrupted or "
                        "changed since the backup)")
    else:
        return data
    return None


def _stored_entries(raw: Any, where: str, prefixes: tuple[str, ...],
                    problems: list[str]) -> list[dict[str, Any]]:
    """Stored Redis entries checked for shape (``backup_host.entry_problem``), each problem
    named with its file; the entries as stored."""
    if not isinstance(raw, list):
        problems.append(f"{where}: no list of Redis keys")
        return []
    out, seen = [], set()
    for e in raw:
        if not isinstance(e, dict):
            problems.append(f"{where}: an entry that is not a mapping")
            continue
        values = e.get("values")
        decoded = None
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            try:
                if e.get("encoding") == "base64":
                    decoded = [base64.b64decode(v, validate=True) for v in values]
                elif e.get("encoding") == "utf-8":
                    decoded = [v.encode("utf-8") for v in values]
            except (binascii.Error, ValueError, UnicodeEncodeError):
                decoded = None
        if decoded is None:
            problems.append(f"{where}: {e.get('key')!r}: values are not a list of "
                            f"{e.get('encoding') or 'encoded'} strings")
            continue
        problem = entry_problem(e.get("key"), e.get("type"), e.get("ttl_ms"), decoded,
                                prefixes)
        if problem is None and e.get("key") in seen:
            problem = f"{e.get('key')}: in the backup twice"
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        seen.add(e["key"])
        out.append(e)
    return out


def _load_host(path: Path, backup_id: str, environment: str, host: str, expect_sha: Any,
               keys: list[bytes], vault: VaultKeys, accept_unsigned: bool,
               problems: list[str]) -> HostBackup | None:
    host_dir = path / host
    mpath = host_dir / MANIFEST
    start = len(problems)
    try:
        raw = _read_inside(path, [host, MANIFEST])
    except FileNotFoundError:
        problems.append(f"{shown(mpath)}: missing")
        return None
    except BackupError as exc:
        problems.append(str(exc))
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
    sig = _signature_problem(MANIFEST, manifest, shown(mpath), keys, environment,
                             accept_unsigned)
    if sig:
        problems.append(sig)
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
    for part, info, fixed in (("redis", redis_info, REDIS_FILE),
                              ("secrets", secrets_info, SECRETS_FILE)):
        if info.get("stored") != fixed:
            problems.append(f"{shown(mpath)}: {part} stored as {info.get('stored')!r}, not "
                            f"{fixed!r}: names a stored file outside the backup's layout")
    out_files: dict[str, tuple[bytes, str, bool]] = {}
    redis: list[dict[str, Any]] = []
    data = None
    if redis_info.get("stored") == REDIS_FILE:
        data = _check_stored(path, [host, REDIS_FILE], redis_info.get("size"),
                             redis_info.get("sha256"), problems)
    if data is not None:
        try:
            keys_raw = json.loads(data)["keys"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"{shown(host_dir / REDIS_FILE)}: not a readable Redis dump")
        else:
            redis = _stored_entries(keys_raw, shown(host_dir / REDIS_FILE), PUBLIC_PREFIXES,
                                    problems)
    sealed = None
    if secrets_info.get("stored") == SECRETS_FILE:
        sealed = _check_stored(path, [host, SECRETS_FILE], secrets_info.get("size"),
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
                plain = vault.decrypt(sealed, where)
                if _sha(plain) != secrets_info.get("plaintext_sha256"):
                    problems.append(f"{where}: decrypts to content whose sha256 differs from "
                                    "the manifest")
                else:
                    bundle = json.loads(plain)
                    if not isinstance(bundle, dict) or not isinstance(bundle.get("files"), dict):
                        raise TypeError
                    secure = _stored_entries(bundle.get("redis"), where, (SECURE_PREFIX,),
                                             problems)
                    twice = {e["key"] for e in secure} & {e["key"] for e in redis}
                    problems.extend(f"{where}: {k}: also in {REDIS_FILE}" for k in sorted(twice))
                    redis += secure
            except VaultError as exc:
                problems.append(str(exc))
                bundle = None
            except (ValueError, KeyError, TypeError):
                problems.append(f"{where}: decrypts to something that is not a secrets bundle")
                bundle = None
    for rel, info in sorted(files.items()):
        if not _safe_rel(rel) or not isinstance(info, dict) or rel.split("/")[0] == ".flashmm":
            problems.append(f"{shown(mpath)}: lists an unsafe file path {rel!r} (outside the "
                            "host's directory, or the toolkit's own .flashmm/)")
            continue
        secret = info.get("secret")
        if (rel in SECRET_PATHS or is_secret_path(rel)) and secret is not True:
            problems.append(f"{shown(mpath)}: {rel} holds secrets, but is listed as stored in "
                            "clear")
            continue
        mode = info.get("mode")
        bad_mode = mode_problem(mode, bool(secret))
        if bad_mode:
            problems.append(f"{shown(mpath)}: {rel}: {bad_mode}")
            continue
        if secret:
            if info.get("stored") != SECRETS_FILE:
                problems.append(f"{shown(mpath)}: {rel}: stored as {info.get('stored')!r}, "
                                f"not in {SECRETS_FILE}")
                continue
            if bundle is None:
                continue                    # reported above
            try:
                content = base64.b64decode(bundle["files"][rel], validate=True)
            except (KeyError, ValueError, TypeError):
                problems.append(f"{shown(host_dir / SECRETS_FILE)}: holds no {rel}")
                continue
        else:
            if info.get("stored") != f"{FILES_DIR}/{rel}":
                problems.append(f"{shown(mpath)}: names a stored file outside the backup "
                                f"({info.get('stored')!r} for {rel})")
                continue
            content = _check_stored(path, [host, FILES_DIR, *rel.split("/")], info.get("size"),
                                    info.get("sha256"), problems)
            if content is None:
                continue
        if len(content) != info.get("size") or _sha(content) != info.get("sha256"):
            problems.append(f"{shown(host_dir / SECRETS_FILE)}: {rel} differs from the "
                            "manifest's size or sha256")
            continue
        out_files[rel] = (content, mode, bool(secret))
    if len(problems) > start:
        return None
    return HostBackup(host, manifest, out_files, redis)


def _odd_entries(path: Path) -> list[str]:
    """Symlinks and special files anywhere in a backup (a backup holds only directories and
    regular files: a symlink could make a restore read outside it)."""
    out = []
    for top, dirs, names in os.walk(path):
        for name in dirs + names:
            full = os.path.join(top, name)
            try:
                mode = os.lstat(full).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                out.append(f"{shown(Path(full))}: a symlink (a backup holds only directories "
                           "and regular files)")
            elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                out.append(f"{shown(Path(full))}: not a regular file")
    return out


def verify(env_dir: Path, backup_id: str, keys: VaultKeys, *, environment: str | None = None,
           hosts: list[str] | None = None, inventory_hosts: list[str] | None = None,
           accept_unsigned: bool = False) -> Verified:
    """Check a whole backup (or the part of ``hosts``): the signatures of the index and the
    manifests, every stored file's size and sha256, decryption of each host's secrets, each
    decrypted file's sum; the host names, paths, modes and Redis data's shape; and, given the
    inventory's view, that environment and hosts match.  Raises BackupError listing every
    problem, one line each, naming the file (BackupGone when the backup is not there)."""
    path = env_dir / backup_id
    if not _ID.fullmatch(backup_id or ""):
        raise BackupError(f"backup id {backup_id!r}: expected an id such as 20261126T173012Z")
    problems: list[str] = []
    index = _index(path)
    env = index.get("environment")
    check_env = environment if environment is not None else str(env)
    signing = _checking_keys(keys, check_env)
    sig = _signature_problem(INDEX, index, shown(path / INDEX), signing, check_env,
                             accept_unsigned)
    if sig:
        problems.append(sig)
    if index.get("backup_id") != backup_id:
        problems.append(f"{shown(path / INDEX)}: backup_id is {index.get('backup_id')!r}, "
                        f"not {backup_id!r} (moved or copied from another backup?)")
    if environment is not None and env != environment:
        problems.append(f"{shown(path / INDEX)}: a backup of environment {env!r}; the "
                        f"inventory's hosts are {environment!r}")
    bad_names = [h for h in index["hosts"] if host_name_problem(h)]
    problems.extend(f"{shown(path / INDEX)}: {host_name_problem(h)}" for h in bad_names)
    in_backup = sorted(h for h in index["hosts"] if h not in bad_names)
    wanted = sorted(hosts) if hosts is not None else in_backup
    for host in wanted:
        if host not in in_backup:
            problems.append(f"{shown(path / INDEX)}: host {host!r} is not in this backup "
                            f"(it has {', '.join(in_backup) or 'no host'})")
    if inventory_hosts is not None:
        missing = [h for h in wanted if h not in inventory_hosts]
        if missing:
            problems.append(f"{shown(path / INDEX)}: host(s) {', '.join(missing)} of the backup "
                            "are not in the inventory")
    problems.extend(_odd_entries(path))
    result = Verified(backup_id, str(env), path, index, signed=SIGNATURE in index)
    for host in wanted:
        if host in in_backup:
            entry = index["hosts"][host]
            got = _load_host(path, backup_id, str(env), host,
                             entry.get("manifest_sha256") if isinstance(entry, dict) else None,
                             signing, keys, accept_unsigned, problems)
            if got is not None:
                result.hosts[host] = got
    if problems and not path.is_dir():
        raise BackupGone(f"{shown(path)}: removed while it was verified (pruned by another "
                         "run?)")
    if problems:
        raise BackupError(f"backup {backup_id} refused: {len(problems)} problem(s), nothing "
                          "restored:\n  - " + "\n  - ".join(problems))
    return result
