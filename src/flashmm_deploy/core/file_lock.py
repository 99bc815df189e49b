"""An exclusive ``flock`` on a lock file, waited for at most ``timeout`` seconds: the one way
the controller serialises edits of a shared file (the vault's ``.vault.lock``, a backup
environment's ``.lock``).  The kernel releases it when the holder ends, however it ends."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path, timeout: float, *, on_open_error: Callable[[OSError], Exception],
              on_busy: Callable[[], Exception], poll: float = 0.05) -> Iterator[None]:
    """Hold ``path`` (created 0600, never through a symlink) for the ``with`` body; raise
    ``on_open_error(exc)`` when it cannot be opened, ``on_busy()`` after ``timeout``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise on_open_error(exc) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise on_busy() from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)
