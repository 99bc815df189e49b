"""Who started a piece of work, so that it can end with its owner: a process named so that a
later reader can tell whether it is still running (pid, start time in clock ticks since boot,
the boot and the pid namespace it was seen in).

A run's /health watcher (``hostside/health_watch.py``) runs detached on the host: killing
``ansible-playbook`` leaves it running.  It is given the identity of the
``ansible-playbook`` process and ends when that process is gone.  Where the watcher runs on
another machine (or in another pid namespace) than the controller, the pid means nothing
there: ``alive`` says "unknown" (None) and the watcher's own time bound applies.

Stdlib only, no relative imports: shipped to hosts as ``module_utils/flashmm_process_owner.py``.
"""

from __future__ import annotations

import os

_DEAD_STATES = ("Z", "X")        # a zombie has ended: only its exit status is left to collect


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode("ascii", "replace").strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start ticks) of ``pid`` from /proc, or None when there is no such process."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        return fields[0], fields[19]
    except IndexError:
        return None


def _pid_namespace(pid: str | int = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def identity(pid: int) -> dict:
    """The identity of process ``pid`` as seen from here (empty values where /proc is not)."""
    seen = _stat(pid)
    return {"pid": int(pid), "start": seen[1] if seen else "",
            "boot_id": _read("/proc/sys/kernel/random/boot_id") or "",
            "pid_namespace": _pid_namespace(pid) or ""}


def visible(owner: dict) -> bool:
    """Whether ``owner`` was seen on this machine, in this pid namespace, since its boot."""
    return bool(owner.get("boot_id") and owner.get("pid_namespace") and owner.get("start")
                and owner["boot_id"] == (_read("/proc/sys/kernel/random/boot_id") or "")
                and owner["pid_namespace"] == (_pid_namespace() or ""))


def alive(owner: dict) -> bool | None:
    """True while the process runs, False once it is gone (or its pid belongs to another
    process), None when it cannot be seen from here."""
    if not visible(owner):
        return None
    seen = _stat(int(owner.get("pid") or 0)) if str(owner.get("pid", "")).isdigit() else None
    return bool(seen and seen[0] not in _DEAD_STATES and seen[1] == str(owner["start"]))
