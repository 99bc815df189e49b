"""The library's log: a callable with ``warning``, ``error`` and ``once``.

By default it writes to the standard ``logging`` logger ``flashmm_config`` (the application
decides handlers and levels).  The stand-in app passes its own ``EventLog`` (same interface:
``log(message, level="INFO")``, ``log.warning``, ``log.error``, ``log.once(tag, message)``).
Messages are built never to hold a secret value.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR}


class LogBase:
    """What every log the library is given offers: ``log(message, level)`` (subclasses),
    ``warning``, ``error`` and ``once``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set = set()

    def __call__(self, message: str, level: str = "INFO") -> None:
        raise NotImplementedError

    def warning(self, message: str) -> None:
        self(message, "WARNING")

    def error(self, message: str) -> None:
        self(message, "ERROR")

    def once(self, tag: Any, message: str, level: str = "WARNING") -> None:
        """Log ``message`` the first time ``tag`` is seen only."""
        with self._lock:
            if tag in self._seen:
                return
            self._seen.add(tag)
        self(message, level)


class Log(LogBase):
    """``logging`` behind the interface the library's parts call."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.logger = logger or logging.getLogger("flashmm_config")

    def __call__(self, message: str, level: str = "INFO") -> None:
        self.logger.log(_LEVELS.get(level, logging.INFO), "%s", message)
