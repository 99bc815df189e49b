"""Drift: what runs on each host against what the inventory renders now, from the check-mode
results of deploy's own steps (``playbooks/drift.yml`` runs them with ``check_mode``; nothing is
written, no lease is taken, Redis is only read).

Per host:

* ``files``       each deployed file that differs: ``updated`` (edited by hand, or the
                  inventory changed), ``created`` (missing on the host), ``mode``, ``removed``
                  (deploy wrote it before and no longer does), ``extra`` (in the root, but no
                  run of deploy wrote it; the first 100).  Secret files are compared by
                  digest only (the files step never returns their content);
* ``runtime``     each runtime key that differs: an operator's override (``override``, with the
                  live and the inventory value and, when its runtime set recorded it, who set
                  it and when), or a key the next seed would write
                  (``unseeded``: missing, or the inventory changed since the last seed), or a
                  key under ``flashmm:config:`` the schema does not have (``unknown``);
* ``containers``  each service whose container would change: ``create`` (missing), ``start``
                  (stopped), ``recreate`` (image or config fingerprint differs), with compose's
                  reasons.

``status``: ``clean``, ``drift``, ``unreachable`` or ``failed`` (a step could not look).
Exit code of ``flashmm-config drift``: 0 all clean, 1 drift on some host, 2 some host not
reachable or not checked (worst wins).

Light: a filter in the report play imports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

STEPS = ("files", "stack", "runtime")
APP_SERVICE = "flashmm"
EXIT = {"clean": 0, "drift": 1, "failed": 2, "unreachable": 2}


# What each step's result holds when it could look (the playbook sets failed_when: false, so a
# failure shows as a result without it)
_LOOKED = {"files": "changed_files", "stack": "containers", "runtime": "changed_keys"}


def _problem(step: str, result: Mapping[str, Any]) -> str | None:
    if result.get("unreachable"):
        return "unreachable"
    if result.get("failed") or _LOOKED[step] not in result:
        return "failed"
    return None


def host_report(results: Mapping[str, Any]) -> dict[str, Any]:
    """One host's drift from ``results``: step -> its task's registered result (missing or
    skipped where the host has no such step)."""
    out: dict[str, Any] = {"status": "clean", "files": {}, "runtime": {}, "containers": {},
                           "errors": [], "version": None, "last_write": {}, "app": None}
    for step in STEPS:
        result = results.get(step)
        if not isinstance(result, Mapping) or result.get("skipped"):
            continue
        problem = _problem(step, result)
        if problem:
            out["errors"].append(f"{step}: {str(result.get('msg') or problem).strip()[:300]}")
            out["status"] = problem if out["status"] != "unreachable" else out["status"]
            continue
        if step == "files":
            out["last_write"] = dict(result.get("last_write") or {})
            states = result.get("files") or {}
            for path in result.get("changed_files") or []:
                out["files"][path] = states.get(path, "removed")
            for path in result.get("removed_files") or []:
                out["files"][path] = "removed"
            for path in result.get("extra_files") or []:
                out["files"][path] = "extra"
            runtime = result.get("runtime")
            if isinstance(runtime, Mapping):
                _runtime(out, runtime)
        elif step == "runtime":
            _runtime(out, result)
        else:
            out["app"] = _app_state((result.get("containers") or {}).get(APP_SERVICE))
            for service, c in sorted((result.get("containers") or {}).items()):
                if isinstance(c, Mapping) and c.get("action") not in (None, "none"):
                    out["containers"][service] = {"action": c["action"],
                                                  "reasons": list(c.get("reasons") or [])}
    if out["status"] == "clean" and (out["files"] or out["runtime"] or out["containers"]):
        out["status"] = "drift"
    out["count"] = len(out["files"]) + len(out["runtime"]) + len(out["containers"])
    return out


def _app_state(app: Any) -> str:
    """The app container as status shows it: its state, and whether `up` would replace it."""
    if not isinstance(app, Mapping) or app.get("action") == "create":
        return "missing"
    state = str(app.get("status") or ("running" if app.get("action") == "none" else "?"))
    return state + (", out of date" if app.get("action") == "recreate" else "")


def _runtime(out: dict[str, Any], result: Mapping[str, Any]) -> None:
    if isinstance(result.get("version"), int):
        out["version"] = result["version"]
    for key, values in sorted((result.get("drift") or {}).items()):
        out["runtime"][key] = {"state": "override", **_values(values)}
    for key in result.get("changed_keys") or []:
        out["runtime"].setdefault(key, {"state": "unseeded"})
    for key in result.get("unknown") or []:
        out["runtime"].setdefault(key, {"state": "unknown"})


def _values(values: Any) -> dict[str, Any]:
    """The live and inventory values and, when a runtime set recorded it, who made the
    override and when (UTC)."""
    if not isinstance(values, Mapping):
        return {}
    out = {k: values[k] for k in ("runtime", "inventory") if k in values}
    if isinstance(values.get("by"), str):
        out["by"] = values["by"]
    if isinstance(values.get("at"), (int, float)):
        out["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(values["at"]))
    return out


def report(per_host: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"hosts": host -> host_report, "exit": code, "summary": "2 clean, 1 drift",
    "table": table()}`` over every host of the run."""
    hosts = {h: host_report(r) for h, r in sorted(per_host.items())}
    worst = max((EXIT[h["status"]] for h in hosts.values()), default=0)
    counts = {s: sum(h["status"] == s for h in hosts.values()) for s in EXIT}
    rep = {"hosts": hosts, "exit": worst,
           "summary": ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no hosts"}
    rep["table"] = table(rep)
    return rep


def table(rep: Mapping[str, Any]) -> str:
    """The report for people: one line per host, then one indented line per difference."""
    lines = []
    for host, h in rep["hosts"].items():
        lines.append(f"{host}: {h['status']}" + (f" ({h['count']} difference(s))"
                                                 if h["count"] else ""))
        lines += [f"  file {path}: {state}" for path, state in sorted(h["files"].items())]
        for key, r in h["runtime"].items():
            # the values as Redis holds them (JSON text; runtime keys are never secret)
            seen = (f": live {r['runtime']}, inventory {r['inventory'] or '(not a key)'}"
                    if "runtime" in r else "")
            if r.get("by"):
                seen += f" (set by {r['by']}" + (f" at {r['at']})" if r.get("at") else ")")
            lines.append(f"  redis {key}: {r['state']}{seen}")
        for service, c in h["containers"].items():
            why = f" ({'; '.join(c['reasons'])})" if c["reasons"] else ""
            lines.append(f"  container {service}: would {c['action']}{why}")
        lines += [f"  error {e}" for e in h["errors"]]
    return "\n".join(lines)
