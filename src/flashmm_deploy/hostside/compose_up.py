"""``docker compose up --wait`` of a host's stack in one docker command, with Ansible's notion
of a change read from compose's ``--progress json`` events (Compose 2.29 or later).

community.docker.docker_compose_v2 does the same with five docker commands per call (docker
version, compose version, up, ps, images; thirteen processes with the CLI plugin's metadata
calls): ~0.6 s of the host's CPU for a stack that is already up, against ~0.35 s here, in
every deploy, restore and rotation roll.  The rule for a change is that module's
(``has_changes``): an event in a working state (creating, recreating, starting, stopping,
removing a container, network or volume, or pulling or building an image).  ``Running``,
``Waiting`` and ``Healthy`` change nothing.

Compose writes two shapes of event line: ``{"id": "Container x", "status": "Recreated"}``,
and for pulls ``{"id": "redis", "text": "Pulling", "status": <detail>}``; an error is
``{"error": true, "message": ...}`` or ``text: "Error"`` with the detail in ``status``.

Standard library only: shipped to targets as ``module_utils/flashmm_compose_up.py``.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Dict, List

try:
    from flashmm_deploy.hostside.compose_state import restart_stale_app, restart_stale_redis
except ImportError:      # on a target host, as module_utils ships it
    from ansible.module_utils.flashmm_compose_state import (  # type: ignore[no-redef]
        restart_stale_app, restart_stale_redis)

WORKING = frozenset(("Creating", "Recreate", "Starting", "Restarting", "Stopping", "Killing",
                     "Removing", "Pulling", "Building"))
MIN_COMPOSE = "2.29"          # the first with --progress json


class ComposeUpError(Exception):
    """``docker compose up`` failed: the message says what compose said went wrong."""


def events(stderr: str) -> List[Dict[str, Any]]:
    """Compose's event lines; any other line as ``{"line": <text>}`` (kept for errors)."""
    found: List[Dict[str, Any]] = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:
            event = None
        found.append(event if isinstance(event, dict) else {"line": line})
    return found


def _state(event: Dict[str, Any]) -> str:
    # a pull event names its state in "text" and its detail in "status"
    text, status = event.get("text"), event.get("status")
    if isinstance(text, str) and (text in WORKING or text == "Error"):
        return text
    return status if isinstance(status, str) else ""     # odd JSON is no state, never a crash


def actions(found: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """What compose did: ``{what, id, status}`` per event in a working state, in order (the
    shape of docker_compose_v2's ``actions``)."""
    out = []
    for event in found:
        state = _state(event)
        if state in WORKING:
            what, _, name = str(event.get("id", "")).partition(" ")
            if not name:                       # a pull or build names the service alone
                what, name = "service", what
            out.append({"what": what.lower(), "id": name, "status": state})
    return out


def errors(found: List[Dict[str, Any]]) -> List[str]:
    """Compose's error messages, else its other output lines (the last few)."""
    out = []
    for event in found:
        if event.get("error"):
            out.append(str(event.get("message") or "error"))
        elif _state(event) == "Error":
            out.append("%s: %s" % (event.get("id", "?"), event.get("status") or "error"))
    if not out:
        out = [e["line"] for e in found if "line" in e][-5:]
    return out


def failure(found: List[Dict[str, Any]], returncode: int) -> str:
    """What a failed ``up`` says: compose's errors, and which compose this step needs when the
    one on the host refused the JSON progress output (older than 2.29)."""
    said = errors(found) or ["exit status %d" % returncode]
    plain = " ".join(e["line"] for e in found if "line" in e)
    if "--progress" in plain and all("line" in e for e in found):
        said.append("this step needs Docker Compose %s or later (docker compose version)"
                    % MIN_COMPOSE)
    return "; ".join(" ".join(s.split()) for s in said)[-1500:]


def up(docker: str, root: str, project: str, wait_timeout: int) -> Dict[str, Any]:
    """``up --detach --wait --remove-orphans`` of ``project`` in ``root``: ``changed`` and the
    ``actions`` compose took; raises ``ComposeUpError`` when it fails."""
    args = [docker, "compose", "--ansi", "never", "--progress", "json",
            "--project-directory", root, "--project-name", project,
            "up", "--detach", "--no-color", "--quiet-pull", "--remove-orphans",
            "--wait", "--wait-timeout", str(int(wait_timeout))]
    try:
        # odd bytes in compose's output (a container name, an error) never fail the step
        proc = subprocess.run(args, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", cwd=root, timeout=int(wait_timeout) + 60)
    except subprocess.TimeoutExpired:
        raise ComposeUpError("docker compose up did not return within %d s"
                             % (int(wait_timeout) + 60)) from None
    found = events(proc.stderr)
    if proc.returncode != 0:
        raise ComposeUpError(failure(found, proc.returncode))
    done = actions(found)
    return {"changed": bool(done), "actions": done}


def stack_up(docker: str, p: Dict[str, Any]) -> Dict[str, Any]:
    """The real run's stack step, in order: the escape hatch's Redis and (compose secrets) an
    app that started before one of its secret files was written, each recreated once when
    stale (``compose_state``), then ``up``.  ``containers``: those recreated and why."""
    recreated: Dict[str, Any] = {}
    lines: List[str] = []
    for wanted, restart in ((p.get("restart_redis_on_acl_change"), restart_stale_redis),
                            (p.get("app_secret_files"), restart_stale_app)):
        if wanted:
            done = restart(docker, p)            # compose_state.summarize's result
            recreated.update(done["containers"])
            lines += [done["msg"]] if done["changed"] else []
    done = up(docker, p["root"], p["project_name"], int(p.get("timeout") or 180))
    lines += ["%s %s: %s" % (a["what"], a["id"], a["status"].lower()) for a in done["actions"]]
    return {"changed": bool(recreated) or done["changed"], "actions": done["actions"],
            "containers": recreated,
            "msg": "\n".join(lines) or "project %s: up, nothing changed" % p["project_name"]}
