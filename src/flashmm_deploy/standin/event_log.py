"""One line per event on stdout, flushed at once (``docker logs`` and the tests read it live).

Messages are built never to hold a secret value; every line still passes through ``scrub``,
which masks each registered secret (defence in depth: a bug elsewhere shows ``***``, not a key).
Secrets shorter than ``MIN_SECRET_LEN`` are not scrubbed: masking every ``1`` or ``true`` would
make the log unreadable, and such values are not credentials anyway.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any, Iterable

from flashmm_config.log import LogBase

MASK = "***"
MIN_SECRET_LEN = 6


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. 2026-11-26T14:13:00.123Z."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


class EventLog(LogBase):
    """Thread-safe line logger with a secret scrubber and log-once memory."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self._stream = stream
        self._secrets: tuple[str, ...] = ()

    def add_secrets(self, values: Iterable[str | None]) -> None:
        """Register values that must never appear in a line (longest masked first)."""
        found = set(self._secrets)
        found.update(v for v in values if v and len(v) >= MIN_SECRET_LEN)
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __call__(self, message: str, level: str = "INFO") -> None:
        text = self.scrub(str(message)).replace("\r", "\\r").replace("\n", "\\n")
        line = "%s %s %s\n" % (utc_now(), level, text)
        stream = sys.stdout if self._stream is None else self._stream
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):      # closed or broken stdout: nothing to tell it
                pass
