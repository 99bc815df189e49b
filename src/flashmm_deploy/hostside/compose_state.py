"""What ``docker compose up`` would do to a host's stack, told before it runs (check mode), and
the escape hatch's one restart of Redis.

Compose (v2.40) recreates a service's container when the container's
``com.docker.compose.config-hash`` label differs from the hash of the service's definition
(its env files resolved into ``environment``), or when the image its name points to now is
another image (``com.docker.compose.image``); it creates a missing container, starts a stopped
one and, with ``--remove-orphans``, removes containers of services the file no longer has.
``docker compose up --dry-run`` cannot tell this here: it reads the files on the host, which
check mode does not write, and it fails on a stopped dependency ("dependency failed to
start").  So the check computes the hashes the way ``up`` does, for the file the run *would*
write: ``docker compose config --format json`` resolves the env files, and ``config --hash``
of that resolved model gives exactly the label ``up`` sets (``config --hash`` of the file
itself leaves the env files out).  The new compose file reaches compose on stdin with
``--project-directory <root>``, so every relative path resolves as in the real run.  The
env files themselves are the host's (check mode does not write them; their new content holds
secrets): a service whose env file would change is recreated (compose puts the file's
variables into the hash), so that is decided from the file's sha256 instead.

The escape hatch (``flashmm_stack_redis_restart_on_acl_change``): Redis reads its ACL file at
start, so a Redis that started before the file was last written is recreated, once: after the
restart it started later than the file, and neither the next run with the hatch nor a plain
deploy restarts it again (no label in the compose file changes).

Standard library only: shipped to targets as ``module_utils/flashmm_compose_state.py``.  No
output of ``docker compose config`` leaves this module (it holds the env files' secrets).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from typing import Any, Dict, List, Mapping, Optional

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
HASH_LABEL = "com.docker.compose.config-hash"
IMAGE_LABEL = "com.docker.compose.image"
OUR_LABELS = "io.flashmm."
# What a file's label fingerprints, for the reason a check gives
LABEL_MEANING = {"io.flashmm.config-sha256": "its configuration file changed",
                 "io.flashmm.secrets-digest": "a secret file it mounts changed"}


class ComposeError(Exception):
    """A docker command failed (message: the command and its error output, never its
    standard output, which for `compose config` holds the env files' values)."""


def run_docker(docker: str, args: List[str], stdin: Optional[str] = None,
               cwd: Optional[str] = None, timeout: float = 120) -> str:
    proc = subprocess.run([docker] + args, input=stdin, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        err = " ".join(proc.stderr.split())[-800:] or "exit status %d" % proc.returncode
        raise ComposeError("`docker %s` failed: %s" % (" ".join(args[:4]), err))
    return proc.stdout


def file_sha256(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None


def _timestamp_ns(value: str) -> int:
    """Docker's RFC 3339 time (``2026-12-03T13:43:21.856436574Z``) as ns since the epoch."""
    import calendar
    import time
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value or "")
    if not m:
        return 0
    seconds = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        seconds -= sign * (int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
    return seconds * 10**9 + int((m.group(2) or "0")[:9].ljust(9, "0"))


def containers(docker: str, project: str) -> Dict[str, Dict[str, Any]]:
    """service -> the project's container of it (``docker inspect``), one-off containers
    (``compose run``) left out."""
    ids = run_docker(docker, ["ps", "-a", "-q", "--no-trunc", "--filter",
                              "label=%s=%s" % (PROJECT_LABEL, project)]).split()
    if not ids:
        return {}
    out: Dict[str, Dict[str, Any]] = {}
    for info in json.loads(run_docker(docker, ["inspect"] + ids)):
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(ONEOFF_LABEL) == "True":
            continue
        service = labels.get(SERVICE_LABEL) or info.get("Name", "").lstrip("/")
        state = info.get("State") or {}
        out.setdefault(service, {
            "name": info.get("Name", "").lstrip("/"), "labels": labels,
            "status": state.get("Status"), "started_ns": _timestamp_ns(state.get("StartedAt")),
            "image": (info.get("Config") or {}).get("Image"),
        })
    return out


def expected_services(docker: str, root: str, compose_json: str) -> Dict[str, Dict[str, Any]]:
    """service -> {hash, image, labels} of the compose file ``compose_json`` (the file the
    run would write, every env_file optional) for the project in ``root``: the hash is the
    one ``up`` would put in the container's config-hash label."""
    base = ["compose", "-f", "-", "--project-directory", root]
    resolved = run_docker(docker, base + ["config", "--format", "json"], stdin=compose_json)
    model = json.loads(resolved)
    hashes = {}
    for line in run_docker(docker, base + ["config", "--hash", "*"],
                           stdin=resolved).splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return {name: {"hash": hashes.get(name), "image": svc.get("image"),
                   "labels": svc.get("labels") or {}}
            for name, svc in (model.get("services") or {}).items()}


def image_id(docker: str, image: str) -> Optional[str]:
    """The id of the image ``image`` names on this engine; None when it has none."""
    try:
        return run_docker(docker, ["image", "inspect", "--format", "{{.Id}}", image]).strip()
    except ComposeError:
        return None


def acl_is_newer(root: str, acl_path: str, container: Mapping[str, Any]) -> bool:
    """The ACL file was written after the container last started (Redis has not read it)."""
    try:
        written = os.stat(os.path.join(root, acl_path)).st_mtime_ns
    except FileNotFoundError:
        return False
    return written > container["started_ns"]


def _changed_labels(want: Mapping[str, str], have: Mapping[str, str]) -> List[str]:
    """Our labels of the compose file whose value the container does not have (a container
    also carries its image's labels: only the compose file's are compared)."""
    return sorted(k for k in want if k.startswith(OUR_LABELS) and want[k] != have.get(k))


def preview(docker: str, p: Mapping[str, Any]) -> Dict[str, Any]:
    """What ``up`` would do to each container, given the files the run would write (module
    options: root, project_name, compose, env_files, planned_sha256, acl_path,
    restart_redis_on_acl_change, redis_service).  Reads only."""
    root, project = p["root"], p["project_name"]
    running = containers(docker, project)
    planned = p.get("planned_sha256") or {}
    env_files = p.get("env_files") or {}
    services = sorted(env_files) if env_files else []
    expected: Dict[str, Dict[str, Any]] = {}
    if running:     # nothing to compare with on a first deploy: every container is created
        expected = expected_services(docker, root, p["compose"])
        services = sorted(expected)
    images: Dict[str, Optional[str]] = {}
    actions: Dict[str, Dict[str, Any]] = {}
    for service in services:
        have = running.get(service)
        name = have["name"] if have else "%s-%s-1" % (project, service)
        if have is None:
            actions[service] = {"container": name, "action": "create",
                                "reasons": ["it has no container"]}
            continue
        want = expected[service]
        reasons = []
        for path in env_files.get(service, []):
            sha = file_sha256(os.path.join(root, path))
            if path in planned and planned[path] != sha:
                reasons.append("its env file %s %s" % (path, "would be written" if sha is None
                                                       else "changes"))
        if want["hash"] != have["labels"].get(HASH_LABEL):
            labels = _changed_labels(want["labels"], have["labels"])
            if want["image"] != have["image"]:
                reasons.append("its image changes: %s -> %s" % (have["image"], want["image"]))
            reasons.extend("%s (%s)" % (LABEL_MEANING.get(k, "label %s changes" % k), k)
                           for k in labels)
            if not reasons:
                reasons.append("its compose definition changes")
        elif want["image"]:
            if want["image"] not in images:
                images[want["image"]] = image_id(docker, want["image"])
            current = images[want["image"]]
            if current is None:
                reasons.append("image %s is not on the host (up pulls it)" % want["image"])
            elif current != have["labels"].get(IMAGE_LABEL):
                reasons.append("image %s is another image now (%s)"
                               % (want["image"], current[:19]))
        if p.get("restart_redis_on_acl_change") and service == p.get("redis_service"):
            reasons.extend(_hatch_reasons(root, p["acl_path"], planned, have))
        if service == p.get("app_service") and not reasons:
            reasons.extend(_secret_file_reasons(root, list(p.get("app_secret_files") or []),
                                                planned, have))
        if reasons:
            actions[service] = {"container": name, "action": "recreate", "reasons": reasons}
        elif have["status"] != "running":
            actions[service] = {"container": name, "action": "start",
                                "reasons": ["it is %s" % have["status"]]}
        else:
            actions[service] = {"container": name, "action": "none", "reasons": []}
        actions[service]["status"] = have["status"]       # running, exited... (drift, status)
    for service in sorted(set(running) - set(services)):
        actions[service] = {"container": running[service]["name"], "action": "remove",
                            "reasons": ["the compose file has no service %s" % service]}
    return summarize(project, actions, check=True)


def _hatch_reasons(root: str, acl_path: str, planned: Mapping[str, str],
                   have: Mapping[str, Any]) -> List[str]:
    if acl_path in planned and planned[acl_path] != file_sha256(os.path.join(root, acl_path)):
        return ["its ACL file changes and flashmm_stack_redis_restart_on_acl_change is set"]
    if have["status"] == "running" and acl_is_newer(root, acl_path, have):
        return ["it started before its ACL file was written and "
                "flashmm_stack_redis_restart_on_acl_change is set"]
    return []


def _written_after_start(root: str, paths: List[str],
                         container: Mapping[str, Any]) -> Optional[str]:
    """The first of ``paths`` written after the container last started, if any."""
    for path in paths:
        try:
            if os.stat(os.path.join(root, path)).st_mtime_ns > container["started_ns"]:
                return path
        except FileNotFoundError:
            continue
    return None


def _secret_file_reasons(root: str, paths: List[str], planned: Mapping[str, str],
                         have: Mapping[str, Any]) -> List[str]:
    """Why the app must be recreated for its secret files (compose secrets), beyond its label:
    a secret file is a bind mount of the file, and a running container keeps the file (inode)
    it started with, so one rewritten since (a hand-edited file put back, by deploy or a
    restore, with the content the label already digests) is not what it sees."""
    for path in paths:
        if path in planned and planned[path] != file_sha256(os.path.join(root, path)):
            return ["its secret file %s is rewritten (a running container keeps the file it "
                    "started with)" % path]
    if have["status"] == "running":
        path = _written_after_start(root, paths, have)
        if path:
            return ["it started before its secret file %s was written" % path]
    return []


def restart_stale_app(docker: str, p: Mapping[str, Any]) -> Dict[str, Any]:
    """Compose secrets, in a real run after the files are written: recreate the app's
    container if it runs and started before one of its secret files was written, so that it
    mounts the files there now (``_secret_file_reasons``).  Before ``up``, with the new
    compose file: one recreation, and ``up`` then finds nothing to change."""
    root, project, service = p["root"], p["project_name"], p["app_service"]
    have = containers(docker, project).get(service)
    actions: Dict[str, Dict[str, Any]] = {}
    path = (_written_after_start(root, list(p.get("app_secret_files") or []), have)
            if have is not None and have["status"] == "running" else None)
    if path:
        run_docker(docker, ["compose", "--project-directory", root, "-p", project, "up",
                            "--detach", "--no-deps", "--force-recreate", service], cwd=root,
                   timeout=float(p.get("timeout") or 180))
        actions[service] = {"container": have["name"], "action": "recreate",
                            "reasons": ["it started before its secret file %s was written"
                                        % path]}
    return summarize(project, actions, check=False)


def restart_stale_redis(docker: str, p: Mapping[str, Any]) -> Dict[str, Any]:
    """The escape hatch, in a real run after the files are written: recreate the Redis
    container if it runs and started before its ACL file was written (a stopped one is
    started by ``up`` and reads the file then)."""
    root, project, service = p["root"], p["project_name"], p["redis_service"]
    have = containers(docker, project).get(service)
    actions: Dict[str, Dict[str, Any]] = {}
    if have is not None and have["status"] == "running" and acl_is_newer(root, p["acl_path"],
                                                                          have):
        run_docker(docker, ["compose", "--project-directory", root, "-p", project, "up",
                            "--detach", "--no-deps", "--force-recreate", service], cwd=root,
                   timeout=float(p.get("timeout") or 180))
        actions[service] = {"container": have["name"], "action": "recreate",
                            "reasons": ["it started before its ACL file was written and "
                                        "flashmm_stack_redis_restart_on_acl_change is set"]}
    return summarize(project, actions, check=False)


VERB = {"create": ("would create", "created"), "recreate": ("would recreate", "recreated"),
        "start": ("would start", "started"), "remove": ("would remove", "removed")}


def summarize(project: str, actions: Mapping[str, Mapping[str, Any]],
              check: bool) -> Dict[str, Any]:
    """The module's result: ``changed`` when a container is created, recreated, started or
    removed, ``containers`` (service -> container, action, reasons), ``msg`` and a --diff
    text naming each container and why."""
    lines = ["%s %s (%s): %s" % (VERB[a["action"]][0 if check else 1], a["container"], s,
                                 "; ".join(a["reasons"]))
             for s, a in sorted(actions.items()) if a["action"] != "none"]
    changed = bool(lines)
    msg = ("\n".join(lines) if changed else
           "project %s: no container %s" % (project, "would change" if check else "changed"))
    result = {"changed": changed, "containers": dict(actions), "msg": msg}
    if changed:
        result["diff"] = {"before_header": "project %s: containers" % project,
                          "after_header": "project %s: containers" % project,
                          "prepared": msg + "\n"}
    return result
