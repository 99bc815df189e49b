"""The runs this controller started, so that a later run can tell which host leases belong to
runs that are gone (killed, crashed, or ended without reaching a host's last step).

Each run (deploy, rotation roll, backup, restore) registers once, on the controller, as
``<run id>.json`` in the user's state directory (``$XDG_STATE_HOME/flashmm-deploy/runs``, by
default ``~/.local/state/...``: shared by every checkout of this user on this machine, so two
checkouts know each other's runs).  The record names the ``ansible-playbook`` process and its
start time; a run whose process is gone (or whose pid now belongs to another process) is
stale, and its leases on hosts are broken by the next run (``host_lock``).  Runs of other
controllers are not known here: their leases expire (``flashmm_lock_lease``) or an operator
breaks one by name (``-e flashmm_lock_break=<run id>``).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from flashmm_deploy.core.paths import project_root

KEEP_SECONDS = 2 * 86400      # a dead run's record outlives any lease it may have left


def registry_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return Path(base) / "flashmm-deploy" / "runs"


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): a pid reused later differs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _alive(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # another user's live process
        return True
    ticks = _start_ticks(pid)
    return ticks is None or record.get("start") in (None, ticks)


def owner() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def stale_runs(directory: Path | None = None, now: float | None = None) -> list[str]:
    """Ids of registered runs whose process is gone; records older than KEEP_SECONDS are
    removed on the way."""
    directory = directory or registry_dir()
    now = time.time() if now is None else now
    stale = []
    try:
        entries = list(directory.glob("*.json"))
    except OSError:
        return []
    for path in entries:
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or _alive(record):
            continue
        stale.append(path.stem)
        if now - float(record.get("time") or 0) > KEEP_SECONDS:
            try:
                path.unlink()
            except OSError:
                pass
    return sorted(stale)


def start(run_id: str, action: str, *, pid: int, breaks: Any = None,
          directory: Path | None = None) -> dict[str, Any]:
    """Register run ``run_id`` of process ``pid`` (the ansible-playbook process) and return the
    lease description its host calls carry: run, action, owner, start, and the runs whose
    leases it may break (dead ones, and those named by ``breaks``)."""
    directory = directory or registry_dir()
    now = time.time()
    stale = stale_runs(directory, now)
    record = {"pid": pid, "start": _start_ticks(pid), "action": action, "time": now}
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = directory / f".{run_id}.tmp"
        tmp.write_text(json.dumps(record), "utf-8")
        os.replace(tmp, directory / f"{run_id}.json")
    except OSError:
        pass            # no registry here: this run's leases then expire instead of breaking
    named = [breaks] if isinstance(breaks, str) else list(breaks or [])
    return {"run_id": run_id, "action": action, "owner": owner(), "commit": toolkit_commit(),
            "started_ts": now,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "stale_runs": sorted(set(stale) | {str(b) for b in named if str(b).strip()})}


def toolkit_commit(root: Path | None = None) -> str | None:
    """The toolkit's git commit (40 hex digits; hosts record who deployed what with which, and
    backups with which toolkit they were taken); None outside a git checkout.  Read from .git
    directly: no git process per run."""
    git = (root or project_root()) / ".git"
    try:
        head = (git / "HEAD").read_text("ascii").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            if loose.is_file():
                head = loose.read_text("ascii").strip()
            else:
                packed = (git / "packed-refs").read_text("ascii").splitlines()
                head = next(line.split()[0] for line in packed if line.endswith(" " + ref))
    except (OSError, StopIteration, UnicodeDecodeError, IndexError):
        return None
    return head if len(head) == 40 and all(c in "0123456789abcdef" for c in head) else None


def lease_args(plan: Any, host_plan: Any, *, hold: bool, release: bool) -> dict | None:
    """The host modules' ``lease`` option for one call of the run whose controller pass is
    ``plan`` (None when that pass registered no lease)."""
    lease = plan.get("lease") if hasattr(plan, "get") else None
    if not lease:
        return None
    ttl = host_plan.get("lease_ttl") or 1800
    return {"action": lease["action"], "owner": lease["owner"], "started": lease["started"],
            "commit": lease.get("commit"),
            "started_ts": lease["started_ts"],
            "stale_runs": lease["stale_runs"], "ttl": float(ttl), "hold": hold,
            "release": release}


def audit_args(plan: Any, host_plan: Any) -> dict | None:
    """The host modules' ``audit`` option (``audit_log``): where and how the host logs each
    change, and the run's who/what/which; None when ``security.audit_logging`` is off."""
    audit = host_plan.get("audit") if hasattr(host_plan, "get") else None
    if not audit:
        return None
    lease = (plan.get("lease") if hasattr(plan, "get") else None) or {}
    return dict(audit, actor=lease.get("owner") or owner(),
                action=lease.get("action") or plan.get("action"), run=plan.get("run_id"),
                commit=lease.get("commit"))
