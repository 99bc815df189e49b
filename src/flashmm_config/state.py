"""The configuration of one running process: its layers, the last good of each, behind a lock.

The environment cannot change under a running process, so the ``env`` layer is read once.  The
file is re-read when it changes (``reload_file_if_changed``, polled by the app about once a
second, and on SIGHUP): a file that no longer parses is logged by key and the last good file
layer stays in force; at start-up the same problem is fatal (``load`` raises).  The runtime
layer is replaced by Redis scans and changed key by key by update messages; a runtime value
that is not valid JSON of its kind is ignored, so the key falls back to the layers below (the
effective value depends only on what the layers hold now, not on history).

The effective view is computed once per change of a layer, not per read: ``get`` is one dict
lookup.  ``listener`` (when set) is called after each change, outside the lock, with
``{key: (value, layer)}`` of every key whose effective value or layer changed.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from flashmm_config.layers import (ConfigError, Field, env_layer, file_layer,
                                                  resolve)
from flashmm_config.log import Log

DEFAULT_ENVIRONMENT = "development"
_ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigState:
    """Layers of one process.  ``effective()`` is consistent: one lock guards every layer."""

    def __init__(self, fields: Mapping[str, Field], environ: Mapping[str, str],
                 config_dir: Path, log: Log) -> None:
        self.fields = fields
        self.environ = environ
        self.environment = environ.get("ENVIRONMENT") or DEFAULT_ENVIRONMENT
        self.path = Path(config_dir) / "environments" / (self.environment + ".yml")
        self._log = log
        self._lock = threading.Lock()
        self._file: dict[str, Any] = {}
        self._env: dict[str, Any] = {}
        self._runtime: dict[str, Any] = {}
        self._file_sig: tuple | None = None
        self._effective: dict[str, tuple[Any, str]] = resolve(fields, {})
        self.listener: Callable[[dict[str, tuple[Any, str]]], None] | None = None
        self.loaded = False

    def _changed(self) -> dict[str, tuple[Any, str]]:
        """Recompute the effective view (call with the lock held); returns what changed, for
        ``_notify`` after the lock is released."""
        old, self._effective = self._effective, resolve(
            self.fields, {"file": self._file, "env": self._env, "runtime": self._runtime})
        return {k: v for k, v in self._effective.items() if old.get(k) != v}

    def _notify(self, changes: dict[str, tuple[Any, str]]) -> None:
        if changes and self.listener is not None:
            self.listener(changes)

    # ---- static layers -------------------------------------------------------------------

    def load(self) -> None:
        """Read the env and file layers; raises ConfigError with every problem (start-up)."""
        problems = []
        if not _ENV_NAME.match(self.environment) or ".." in self.environment:
            raise ConfigError(["ENVIRONMENT: not a plain environment name (letters, digits, "
                               "'_', '-', '.')"])
        try:
            env = env_layer(self.fields, self.environ)
        except ConfigError as exc:
            problems += exc.problems
        sig = _signature(self.path)
        try:
            file, unknown = file_layer(self.fields, self.path)
        except ConfigError as exc:
            problems += exc.problems
        if problems:
            raise ConfigError(problems)
        self._report_unknown(unknown)
        if sig is None:
            self._log("no environment file at %s: the file layer is empty" % self.path)
        else:
            self._log("environment file %s: %d keys" % (self.path, len(file)))
        with self._lock:
            self._env, self._file, self._file_sig = env, file, sig
            self.loaded = True
            changes = self._changed()
        self._notify(changes)

    def reload_file_if_changed(self) -> bool:
        """Re-read the file when its inode, size or mtime changed; True when the layer
        changed.  A bad or vanished file keeps the last good layer (and is logged once per
        change of the file)."""
        sig = _signature(self.path)
        if sig == self._file_sig:
            return False
        self._file_sig = sig
        if sig is None:
            self._log.warning("environment file %s disappeared: keeping the last good file "
                              "layer" % self.path)
            return False
        try:
            file, unknown = file_layer(self.fields, self.path)
        except ConfigError as exc:
            for problem in exc.problems:
                self._log.error("config file rejected, keeping the last good: %s" % problem)
            return False
        self._report_unknown(unknown)
        with self._lock:
            changed = sorted(k for k in set(file) | set(self._file)
                             if file.get(k, self) != self._file.get(k, self))
            self._file = file
            changes = self._changed()
        self._log("environment file %s reloaded: %s" % (
            self.path, ", ".join(changed) + " changed" if changed else "no value changed"))
        self._notify(changes)
        return bool(changed)

    def _report_unknown(self, unknown: list[str]) -> None:
        for key in unknown:
            self._log.once(("unknown file key", key),
                           "environment file %s: ignoring unknown key %s" % (self.path, key))

    # ---- runtime layer -------------------------------------------------------------------

    def runtime(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._runtime)

    def replace_runtime(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Install a whole scan; returns {key: new value or None when removed} of what changed."""
        with self._lock:
            old, self._runtime = self._runtime, dict(values)
            changes = self._changed()
        self._notify(changes)
        return {k: values.get(k) for k in sorted(set(old) | set(values))
                if old.get(k, self) != values.get(k, self)}

    def set_runtime(self, key: str, value: Any) -> None:
        with self._lock:
            self._runtime[key] = value
            changes = self._changed()
        self._notify(changes)

    def drop_runtime(self, key: str) -> None:
        with self._lock:
            self._runtime.pop(key, None)
            changes = self._changed()
        self._notify(changes)

    # ---- views ---------------------------------------------------------------------------

    def effective(self) -> dict[str, tuple[Any, str]]:
        """Every key's (value, layer): a copy."""
        return dict(self._effective)

    def view(self) -> dict[str, tuple[Any, str]]:
        """The current effective view itself (replaced, never changed, on every change: do
        not modify it).  What ``ConfigManager.get`` reads."""
        return self._effective

    def layers(self) -> dict[str, dict[str, Any]]:
        """Copies of the file, env and runtime layers (dotted key -> typed value)."""
        with self._lock:
            return {"file": dict(self._file), "env": dict(self._env),
                    "runtime": dict(self._runtime)}

    def value(self, key: str) -> Any:
        return self._effective[key][0]
