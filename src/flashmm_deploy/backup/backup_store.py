"""Backups on the controller: ``<backups>/<env>/<backup_id>/``, one directory per host.

Layout of a backup (directories 0700, files 0600)::

    backup.json                     id, sequence, environment, time, toolkit version and commit,
                                    and each host's manifest sha256, signed (written last: a
                                    backup without it is incomplete and never listed or restored)
    <host>/manifest.json            id, environment, host, time, toolkit, config version, and
                                    per file and per Redis part: mode, size, sha256, where
                                    stored; signed
    <host>/files/<path>             each deployed file that holds no secret, byte for byte
    <host>/redis.json               flashmm:config:* and flashmm:meta:* keys: type, TTL, values
    <host>/secrets.vault            ansible-vault (vault id = the environment): the files that
                                    hold secrets (.env, influxdb/influxdb.env, redis/users.acl)
                                    and the flashmm:secure:* records, one JSON document

Nothing that holds a secret is written in clear; the manifests hold sizes and sha256 sums only.
A backup is written into ``.partial-<id>/`` and renamed into place when every host's part is
there, so a failed run never leaves something that looks like a backup.  ``verify`` checks
everything (signatures, sums, sizes, decryption, environment, hosts, paths, modes, the shape of
the Redis data) and names every file that differs.

**Signatures.**  ``backup.json`` and every ``manifest.json`` carry an HMAC-SHA256 over their
content (canonical JSON without the signature), keyed with ``PBKDF2-SHA256(vault password of
the environment's vault id, "flashmm-deploy backup signing key" + environment, 10000
iterations)``.  The index holds each manifest's sha256 and each manifest every stored file's,
so no byte of a backup can change without the vault password.  Why the vault password and not
a ``backup_signing_key`` secret inside the vault: a backup already needs exactly that password
(its ``secrets.vault`` is encrypted with it), so the signature adds no secret to generate,
rotate or lose, works for every environment and every backup from the first one, and stays
valid exactly as long as the backup can be decrypted at all (``ansible-vault rekey`` makes old
backups unreadable either way); a secret inside the vault would be readable by anyone holding
that same password, so it would not be any stronger.  PBKDF2 with ansible-vault's own
iteration count keeps a guess of the password no cheaper to test against a signature than
against ``secrets.vault`` beside it.  Backups of format 1 (before signatures) are refused
unless the operator accepts them explicitly (``accept_unsigned``: ``--accept-unsigned``,
``-e flashmm_restore_accept_unsigned=true``); every other check still applies to them.

**Ids, order and retention.**  Ids stay readable timestamps (``20261126T173012Z``, ``-2`` for
a second one in the same second), but no order comes from a clock: ``commit`` gives each backup
a ``sequence`` (one more than the highest the environment has seen, kept in ``.sequence`` and
in the signed index) under an ``flock`` on ``<env>/.lock``, and ``latest`` and retention go by
it.  Backups of format 1 have no sequence: they sort before every newer one, by time then id.
Id allocation, sealing and pruning all hold that lock, so two backups at once never prune
under each other, and a prune never removes the backup its own run just took.  Readers take no
lock: a backup that vanishes or is half-written under a listing or a verify is skipped and
named.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from flashmm_deploy.core import file_lock
from flashmm_deploy.hostside.backup_host import SECURE_PREFIX as _SECURE, entry_problem
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.paths import project_root
from flashmm_deploy.redis.keys import PUBLIC_PREFIXES, VERSION_KEY
from flashmm_deploy.hostside.atomic_write import write_atomic
from flashmm_deploy.secrets.compose_secrets import is_secret_path
from flashmm_deploy.inventory.vault import VaultError, VaultKeys, header_vault_id, is_encrypted

FORMAT = 2                  # 2: signed, with a sequence; 1: before (refused unless accepted)
LEGACY_FORMAT = 1
INDEX = "backup.json"
MANIFEST = "manifest.json"
REDIS_FILE = "redis.json"
SECRETS_FILE = "secrets.vault"
FILES_DIR = "files"
PARTIAL = ".partial-"
PRUNED = ".pruned-"             # a pruned backup, renamed out of every listing, being removed
DIR_MODE, FILE_MODE = 0o700, 0o600
DEFAULT_DIR = "backups"
DEFAULT_KEEP = 7
STALE_PARTIAL_S = 24 * 3600
SECURE_PREFIX = _SECURE
_ID = re.compile(r"\d{8}T\d{6}Z(?:-\d+)?")
LOCK_FILE = ".lock"                 # flock: id allocation, sealing, pruning
SEQUENCE_FILE = ".sequence"         # the highest sequence handed out
LOCK_TIMEOUT_S = 300.0
SIGNATURE = "signature"
KDF_ITERATIONS = 10000              # ansible-vault's own PBKDF2 count (see the docstring)
_KDF_SALT = b"flashmm-deploy backup signing key\x00"
_SIGNED_AS = {INDEX: b"flashmm-deploy backup index\n", MANIFEST: b"flashmm-deploy backup manifest\n"}
# A host's directory: one plain path component (an inventory host name), never . or ..
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")
# Files that hold secrets wherever deploy writes them: stored encrypted, restored 0600; and
# every file under secrets/ (the app's secret files of compose secrets: is_secret_path).
SECRET_PATHS = (".env", "redis/users.acl", "influxdb/influxdb.env")
# The modes deploy itself accepts (role_settings.RULES: flashmm_files_config_mode and
# flashmm_files_secret_mode; a unit test keeps the two in step): (bits forbidden, bits required)
PUBLIC_MODE_RULE = (0o133, 0o600)
SECRET_MODE_RULE = (0o177, 0o600)


class BackupError(FlashmmError):
    pass


class BackupGone(BackupError):
    """The backup's directory is not there (pruned by another run while being read)."""


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
    from flashmm_deploy.plan.runs import toolkit_commit

    return {"version": ver, "commit": toolkit_commit(project_root())}


# ---- signatures -----------------------------------------------------------------------------

def _secret_bytes(secret: Any) -> bytes:
    raw = secret.bytes
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


@lru_cache(maxsize=16)           # a restore verifies once, then once per host
def _derive(password: bytes, environment: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, _KDF_SALT + environment.encode("utf-8"),
                               KDF_ITERATIONS, dklen=32)


def signing_key(keys: VaultKeys, environment: str, where: str) -> bytes:
    """The key that signs the backups of ``environment``: derived from the password of the
    environment's vault id (the one its ``secrets.vault`` files are encrypted with)."""
    secret = keys.secret_for(environment)
    if secret is None:
        raise VaultError(f"{where}: no vault password for vault id {environment!r} to sign the "
                         f"backup with ({keys.describe()}); give --vault-id "
                         f"{environment}@FILE or {environment}@prompt")
    return _derive(_secret_bytes(secret), environment)


def _checking_keys(keys: VaultKeys, environment: str) -> list[bytes]:
    """Every key a signature may have been made with: the environment's vault id first, then
    the other passwords given (as ansible-vault tries every password to decrypt)."""
    try:
        given = keys.secrets()
    except VaultError:
        return []
    ordered = sorted(given, key=lambda item: item[0] != environment)
    return [_derive(_secret_bytes(secret), environment) for _, secret in ordered]


def _message(kind: str, doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != SIGNATURE}
    return _SIGNED_AS[kind] + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=True).encode("ascii")


def sign(kind: str, doc: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``doc`` (an index or a manifest) with its signature."""
    mac = hmac.new(key, _message(kind, doc), hashlib.sha256).hexdigest()
    return dict(doc, **{SIGNATURE: {"alg": "hmac-sha256", "kdf": "pbkdf2-sha256",
                                    "iterations": KDF_ITERATIONS, "value": mac}})


def _signature_problem(kind: str, doc: dict[str, Any], where: str, keys: list[bytes],
                       environment: str, accept_unsigned: bool) -> str | None:
    sig = doc.get(SIGNATURE)
    if sig is None and doc.get("format") == LEGACY_FORMAT:
        if accept_unsigned:
            return None
        return (f"{where}: not signed (a backup taken before backups were signed): nothing "
                "tells it from a forgery.  Take a new backup; to use this one anyway, after "
                "checking where it came from, give --accept-unsigned (flashmm-config) or "
                "-e flashmm_restore_accept_unsigned=true (playbooks/restore.yml)")
    if doc.get("format") != FORMAT:
        return f"{where}: format {doc.get('format')!r}, expected {FORMAT} (or {LEGACY_FORMAT})"
    value = sig.get("value") if isinstance(sig, dict) else None
    if not isinstance(value, str):
        return f"{where}: no signature (expected one: changed without the vault password?)"
    if not keys:
        return (f"{where}: signed, and no vault password is given to check it with (give "
                f"--vault-id {environment}@FILE or {environment}@prompt)")
    message = _message(kind, doc)
    if any(hmac.compare_digest(hmac.new(k, message, hashlib.sha256).hexdigest(), value)
           for k in keys):
        return None
    return (f"{where}: signature does not match: changed since the backup was taken (an edit "
            f"without the vault password), or signed with another password for vault id "
            f"{environment!r}")


# ---- the environment's lock --------------------------------------------------------------------

@contextmanager
def env_lock(env_dir: Path, timeout: float = LOCK_TIMEOUT_S):
    """An exclusive ``flock`` on ``<env_dir>/.lock`` (hidden: never listed as a backup), held
    while ids are allocated, a backup is sealed and old ones are pruned; released when the
    holder ends, however it ends."""
    _mkdir(env_dir)
    lock = env_dir / LOCK_FILE
    with file_lock.exclusive(
            lock, timeout,
            on_open_error=lambda exc: BackupError(
                f"{shown(lock)}: cannot open the backups' lock ({exc.strerror})"),
            on_busy=lambda: BackupError(f"{shown(lock)}: another backup run of this environment "
                                        f"holds it (waited {timeout:g}s)")):
        yield


def _read_sequence(env_dir: Path) -> int:
    try:
        text = (env_dir / SEQUENCE_FILE).read_text("ascii").strip()
        return int(text) if text.isdigit() else 0
    except (OSError, ValueError):
        return 0


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


def host_name_problem(host: Any) -> str | None:
    if isinstance(host, str) and _HOST.fullmatch(host):
        return None
    return (f"host name {host!r} is not a plain host name (letters, digits, '_', '.', ':', "
            "'@', '-'; not starting with '.'): it could name a directory outside the backup")


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


# ---- reading backups ------------------------------------------------------------------------

@dataclass
class BackupInfo:
    backup_id: str
    environment: str
    created: str
    hosts: dict[str, dict[str, Any]]
    toolkit: dict[str, Any]
    size: int
    sequence: int | None = None         # None: a backup of format 1 (before sequences)
    signed: bool = True

    def order(self) -> tuple:
        """Oldest first: backups of format 1 (by time, then id), then by sequence."""
        if self.sequence is None:
            return (0, 0, self.created, self.backup_id)
        return (1, self.sequence, "", self.backup_id)


def _open_dir(parent_fd: int | None, name: str, where) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BackupError(f"{where()}: {name} is not a directory (a symlink? a backup "
                              "holds only directories and regular files)") from None
        raise BackupError(f"{where()}: not readable ({exc.strerror})") from None


def _read_inside(base: Path, parts: list[str], limit: int = 64 << 20) -> bytes:
    """The regular file ``base/parts...``, read without following any symlink on the way
    (a symlink anywhere below ``base`` is refused, named).  FileNotFoundError if absent."""
    def where() -> str:                 # only when there is something to say
        return shown(base.joinpath(*parts))

    fds = []
    try:
        fds.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY))
        for name in parts[:-1]:
            fds.append(_open_dir(fds[-1], name, where))
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BackupError(f"{where()}: a symlink (a backup holds only regular "
                                  "files)") from None
            raise BackupError(f"{where()}: not readable ({exc.strerror})") from None
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BackupError(f"{where()}: not a regular file")
        if st.st_size > limit:
            raise BackupError(f"{where()}: {st.st_size} bytes, more than a backup holds")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit + 1)
    finally:
        for fd in fds:
            os.close(fd)


def _index(path: Path) -> dict[str, Any]:
    where = shown(path / INDEX)
    try:
        raw = _read_inside(path.parent, [path.name, INDEX])
    except FileNotFoundError:
        if not path.parent.joinpath(path.name).exists():
            raise BackupGone(f"{shown(path)}: no such backup (pruned meanwhile?)") from None
        raise BackupError(f"{where}: missing (not a complete backup)") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BackupError(f"{where}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), dict):
        raise BackupError(f"{where}: not a backup index (no hosts)")
    return data


def _size(path: Path) -> int:
    total = 0
    for top, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:         # removed under us: a prune of another run
                pass
    return total


def _info(path: Path) -> BackupInfo:
    data = _index(path)
    seq = data.get("sequence")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None
    return BackupInfo(path.name, str(data.get("environment")), str(data.get("created")),
                      data["hosts"], data.get("toolkit") or {}, _size(path), seq,
                      SIGNATURE in data)


def list_backups(env_dir: Path) -> list[BackupInfo]:
    """The complete backups of one environment, oldest first (``BackupInfo.order``);
    directories without a readable ``backup.json`` (being written, failed, or removed while
    listed) are left out: ``incomplete`` names them."""
    out = []
    if not env_dir.is_dir():
        return out
    for path in env_dir.iterdir():
        if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
            continue
        try:
            out.append(_info(path))
        except BackupError:
            continue
    return sorted(out, key=BackupInfo.order)


def incomplete(env_dir: Path) -> list[tuple[str, str]]:
    """(directory name, why) of what is in the environment's directory and is not a complete
    backup: staging directories of runs in progress or failed, directories without a
    readable index, anything else."""
    out = []
    if not env_dir.is_dir():
        return out
    for path in sorted(env_dir.iterdir()):
        name = path.name
        if name in (LOCK_FILE, SEQUENCE_FILE):
            continue
        if name.startswith(PARTIAL):
            out.append((name, "being written, or left by a failed run (removed after a day)"))
        elif name.startswith("."):
            continue
        elif path.is_symlink() or not path.is_dir():
            out.append((name, "not a backup directory (a symlink or a file)"))
        else:
            try:
                _index(path)
            except BackupGone:
                continue
            except BackupError as exc:
                out.append((name, str(exc).split(": ", 1)[-1]))
    return out


def resolve_id(env_dir: Path, wanted: str) -> str:
    """``latest`` (the newest complete backup, by sequence) or an id that names a directory
    here."""
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
