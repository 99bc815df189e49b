"""Replace a file atomically: a temporary file in the same directory, its mode (and owner) set
before the first byte, fsync, rename.  Readers see the old file or the new one, never a part.

Stdlib only, no relative imports: shipped to target hosts as ``module_utils/flashmm_atomic_write.py``.
"""

from __future__ import annotations

import os
import tempfile


def write_atomic(path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Temporary file in the same directory, mode (and owner) set before any byte is written,
    fsync, rename: readers see the old file or the new one, never a part."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    try:
        os.fchmod(fd, mode)             # restrictive before the first byte is written
        if (uid, gid) != (-1, -1) and (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
