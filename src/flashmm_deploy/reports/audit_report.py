"""The environment's audit trail, from what ``playbooks/audit.yml``'s ``flashmm_audit`` task
read on each host: every line of every host, merged in time order, for
``flashmm-config audit inventories/<env> [--since] [--json]``.

Exit code: 0 every host read, 2 some host could not be read (unreachable, or its task failed;
the others are still shown).  Light: a filter in the report play imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXIT = {"ok": 0, "unreachable": 2, "failed": 2}
# What a line shows after time, host and actor/action, in this order (the rest only in --json)
_DETAIL = ("file", "state", "key", "keys", "keys_total", "enforced", "version", "generation",
           "backup", "count", "note", "files", "redis_keys")


def host_report(result: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        return {"status": "failed", "error": "not read (the host was not in the run)",
                "entries": []}
    if result.get("unreachable"):
        return {"status": "unreachable", "error": str(result.get("msg") or "")[:300],
                "entries": []}
    if result.get("failed") or "entries" not in result:
        return {"status": "failed", "error": str(result.get("msg") or "failed")[:300],
                "entries": []}
    out = {"status": "ok", "entries": list(result["entries"]),
           "truncated": int(result.get("truncated") or 0),
           "unreadable": int(result.get("unreadable") or 0)}
    if result.get("redis_error"):
        out["error"] = "runtime sets not copied from Redis: " + str(result["redis_error"])
    return out


def _detail(entry: Mapping[str, Any]) -> str:
    parts = []
    for key in _DETAIL:
        if key in entry:
            value = entry[key]
            if isinstance(value, list):
                value = ",".join(str(v) for v in value) if key != "version" else \
                    "->".join(str(v) for v in value)
            parts.append(f"{key}={value}")
    return " ".join(parts)


def report(per_host: Mapping[str, Any]) -> dict[str, Any]:
    """``per_host``: host -> its ``flashmm_audit`` result.  The merged lines, the per-host
    status, a table for people and the exit code."""
    hosts = {h: host_report(r) for h, r in sorted(per_host.items())}
    merged = sorted(({**e, "host": e.get("host") or h} for h, r in hosts.items()
                     for e in r["entries"]), key=lambda e: (str(e.get("time", "")), e["host"]))
    table = [f"{e.get('time', '?')}  {e['host']}  {e.get('actor', '?')}  "
             f"{e.get('action', '-')}  {e.get('change', '?')}  {_detail(e)}".rstrip()
             for e in merged]
    problems = [f"{h}: {r['status']}{': ' + r['error'] if r.get('error') else ''}"
                for h, r in hosts.items() if r["status"] != "ok" or r.get("error")]
    code = max([EXIT[r["status"]] for r in hosts.values()] or [0])
    summary = (f"{len(merged)} line(s) from {sum(r['status'] == 'ok' for r in hosts.values())}"
               f" of {len(hosts)} host(s)")
    return {"hosts": {h: {k: v for k, v in r.items() if k != "entries"}
                      for h, r in hosts.items()},
            "entries": merged, "problems": problems, "exit": code, "summary": summary,
            "table": "\n".join(table + [f"! {p}" for p in problems]) or "(no audit lines)"}
