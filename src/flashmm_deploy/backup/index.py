"""Reading backups without verifying them: the listing, what is incomplete, and ids."""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from flashmm_deploy.backup.layout import (_ID, INDEX, LOCK_FILE, PARTIAL, SEQUENCE_FILE, SIGNATURE,
                                          BackupError, BackupGone, shown)


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
