"""A backup environment's layout on the controller: names, modes, the backup errors, small file
helpers, the toolkit stamp, and the environment's lock and sequence (``backup_store`` describes
the whole)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flashmm_deploy.core import file_lock
from flashmm_deploy.hostside.backup_host import SECURE_PREFIX as _SECURE
from flashmm_deploy.core.errors import FlashmmError
from flashmm_deploy.core.paths import project_root
from flashmm_deploy.hostside.atomic_write import write_atomic


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

def host_name_problem(host: Any) -> str | None:
    if isinstance(host, str) and _HOST.fullmatch(host):
        return None
    return (f"host name {host!r} is not a plain host name (letters, digits, '_', '.', ':', "
            "'@', '-'; not starting with '.'): it could name a directory outside the backup")
