"""Ansible's module payloads kept between runs of one checkout.

Every module a run calls is first built on the controller into an AnsiballZ payload: Ansible
reads the module and every ``module_utils`` file it imports, parses each one to find the next,
and zips them (~0.1 s of CPU per module, on every run, before a host is contacted).  Ansible
caches the payload only for the rest of the run, in ``ansiballz_cache`` under its per-run
temporary directory.  ``attach`` points that directory at a store that outlives the run,
``.state/ansiballz/<fingerprint>``: a later run loads the payload instead of building it.

The fingerprint covers everything a payload is built from: the Ansible and Python versions,
the content of every Python file in the module and module_utils paths, and each collection
(its manifest, or its Python files when it has none: an edit inside an installed collection
is not seen; remove ``.state/ansiballz`` after one).  An edit of any of them (a pull,
another branch) gives another directory, so a payload is never reused for changed code;
Ansible's own lock and rename keep concurrent runs apart inside one.  Directories not used
for a day are removed, beyond the newest few.  Any failure leaves the run as Ansible makes
it: payloads built per run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

CACHE_NAME = "ansiballz_cache"      # Ansible's per-run cache directory (module_common)
KEEP = 4                            # fingerprints kept however old
MAX_IDLE_SECONDS = 86400            # older unused ones are removed beyond KEEP
# Below this much free space the store is not used: a payload that cannot be written fails
# the task that needs it, where Ansible's own temporary directory may be elsewhere.
MIN_FREE_BYTES = 64 * 1024 * 1024
FINGERPRINT = re.compile(r"[0-9a-f]{32}")    # the only names prune() removes


def fingerprint(code_roots: Iterable[str | os.PathLike],
                collection_roots: Iterable[str | os.PathLike] = (),
                extra: Iterable[str] = ()) -> str:
    """A hex digest of ``extra``, of every ``*.py`` file under ``code_roots`` (module and
    module_utils paths: its path relative to its root and its bytes, symlinks followed) and of
    every collection under ``<root>/ansible_collections`` of ``collection_roots``: its
    MANIFEST.json when installed (it holds the digest of the collection's file list, which
    holds each file's), else its Python files.  Independent of listing order."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(f"extra\0{item}\0".encode())
    for root in sorted({str(Path(r)) for r in code_roots}):
        _add_tree(digest, Path(root))
    for root in sorted({str(Path(r)) for r in collection_roots}):
        for collection in sorted(Path(root).glob("ansible_collections/*/*/")):
            manifest = collection / "MANIFEST.json"
            if manifest.is_file():
                digest.update(f"manifest\0{manifest}\0".encode())
                digest.update(hashlib.sha256(manifest.read_bytes()).digest())
            else:
                _add_tree(digest, collection)
    return digest.hexdigest()[:32]


def _add_tree(digest, root: Path) -> None:
    digest.update(f"root\0{root}\0".encode())
    for path in sorted(_python_files(root)):
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def _python_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found, seen = [], set()
    for here, dirs, files in os.walk(root, followlinks=True):
        where = os.stat(here)
        if (where.st_dev, where.st_ino) in seen:   # a link back up: walked already
            dirs[:] = []
            continue
        seen.add((where.st_dev, where.st_ino))
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        found += [Path(here, f) for f in files if f.endswith(".py")]
    return found


def attach(run_tmp: str | os.PathLike, store: str | os.PathLike, key: str,
           check: Callable[[Path], object] | None = None, now: float | None = None) -> Path:
    """Make ``<run_tmp>/ansiballz_cache`` a link to ``<store>/<key>`` (directories 0700, like
    Ansible's own temporary ones) and prune the store.  ``check(path)`` loads an entry and
    raises when it cannot: such an entry (a damaged file) is removed, and built again, rather
    than failing every later run.  Returns the directory linked to; raises OSError when it
    cannot (the caller then leaves the run alone)."""
    store, now = Path(store), time.time() if now is None else now
    target = store / key
    # 0700 for what this makes; a store directory that exists (FLASHMM_MODULE_CACHE may name
    # any directory) keeps its mode
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.mkdir(mode=0o700, exist_ok=True)
    # Ansible unpickles what is in there: only from a directory of this user's that nobody
    # else can write to (a shared store, /tmp say, could hold one made by someone else)
    mine = target.lstat()
    if not stat.S_ISDIR(mine.st_mode) or mine.st_uid != os.getuid() or mine.st_mode & 0o022:
        raise PermissionError(f"{target}: not a directory of this user's that only it can write")
    fs = os.statvfs(target)
    if fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
        raise OSError(f"{store}: less than {MIN_FREE_BYTES // 2**20} MiB free")
    os.utime(target, (now, now))            # in use: not pruned
    if check is not None:
        for entry in entries(target):
            try:
                check(entry)
            except Exception:  # noqa: BLE001  (whatever a damaged file raises)
                entry.unlink(missing_ok=True)
    link = Path(run_tmp) / CACHE_NAME
    if not link.is_symlink():
        if link.exists():                   # a module was built already: leave this run alone
            raise FileExistsError(f"{link} exists")
        link.symlink_to(target, target_is_directory=True)
    prune(store, keep=key, now=now)
    return target


def entries(directory: Path) -> list[Path]:
    """The payloads in one fingerprint directory (not Ansible's lock files, nor a ``-part``
    file a killed run left)."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.endswith((".lock", "-part")))


def prune(store: Path, keep: str, now: float) -> list[Path]:
    """Removes fingerprint directories unused for MAX_IDLE_SECONDS, except ``keep`` and the
    KEEP most recently used; nothing else in ``store`` (a directory named by
    FLASHMM_MODULE_CACHE may hold other things).  Returns what it removed."""
    try:
        fingerprints = sorted((p for p in store.iterdir() if FINGERPRINT.fullmatch(p.name)
                               and p.is_dir() and not p.is_symlink()),
                              key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []
    removed = []
    for path in fingerprints[KEEP:]:
        if path.name != keep and now - path.stat().st_mtime > MAX_IDLE_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
