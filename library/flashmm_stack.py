#!/usr/bin/python
"""Ansible module: a host's FlashMM stack step.  In a real run, ``docker compose up --wait``
(after the escape hatch's and compose secrets' one-off recreations); in check mode, what it
would do.  A thin wrapper over ``flashmm_deploy.hostside.compose_up`` and ``compose_state``;
the flashmm_stack action plugin runs it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_stack
short_description: Bring a FlashMM stack up, or tell what docker compose up would change
description:
  - O(task=up) (the real run's stack step) recreates the stale containers O(task=restart_stale_redis)
    and O(task=restart_stale_app) describe (when their options are on), then runs
    C(docker compose up --detach --wait --remove-orphans) once and reports C(changed) when compose
    created, recreated, started, stopped or removed anything or pulled an image (read from its
    C(--progress json) events, the rule of community.docker.docker_compose_v2). Needs Docker
    Compose 2.29 or later.
  - O(task=preview) (check mode of the stack step) compares the project's containers with the
    compose file the run would write (O(compose)) and the files it would write
    (O(planned_sha256)), the way C(docker compose up) does (config hash with the env files
    resolved, image id, state) and says, per container, what C(up) would do and why. It reads
    only. C(changed) is true exactly when C(up) would create, recreate, start or remove a
    container.
  - O(task=restart_stale_redis) (the escape hatch, in a real run after the files are written)
    recreates the Redis container when it runs and started before its ACL file was last
    written, so that it reads the new file; once only, since afterwards it started later.
  - O(task=restart_stale_app) (compose secrets, in a real run after the files are written)
    recreates the app's container when it runs and started before one of its secret files
    (O(app_secret_files)) was last written (a secret file is a bind mount of the file, and a
    running container keeps the one it started with).
  - Needs the C(docker) CLI with the compose v2 plugin on the target.
options:
  task:
    description: What to do.
    type: str
    choices: [preview, up, restart_stale_redis, restart_stale_app]
    default: preview
  root: {description: The stack's directory (compose project directory)., type: path, required: true}
  project_name: {description: Compose project name., type: str, required: true}
  compose:
    description: The compose file the run would write, as JSON, every env_file optional (C(required=false)).
    type: str
  env_files:
    description: service -> the env files it reads, relative to O(root); every service of O(compose).
    type: dict
    default: {}
  planned_sha256:
    description: path -> sha256 of each file the run would write, relative to O(root).
    type: dict
    default: {}
  acl_path: {description: The Redis ACL file relative to O(root)., type: str, default: redis/users.acl}
  redis_service: {description: The Redis service's name., type: str, default: redis}
  restart_redis_on_acl_change:
    description: The escape hatch is on (Redis restarts to read a changed ACL file).
    type: bool
    default: false
  app_service: {description: The app's service name., type: str, default: flashmm}
  app_secret_files:
    description: The app's secret files (compose secrets), relative to O(root).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds a docker command may take; for O(task=up), compose's C(--wait-timeout).
    type: int
    default: 180
author: flashmm-deploy
"""

RETURN = r"""
containers:
  description: >-
    service -> {container, action (create, recreate, start, remove, none), reasons}; for
    O(task=up), the containers recreated before C(up) and why.
  type: dict
  returned: always
actions:
  description: O(task=up) - what compose did, in order, each {what, id, status} (as docker_compose_v2 reports it).
  type: list
  elements: dict
  returned: when O(task=up)
msg: {description: One line per container that changes (or would), naming it and why., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_compose_state import (  # noqa: E402
    ComposeError, preview, restart_stale_app, restart_stale_redis)
from ansible.module_utils.flashmm_compose_up import ComposeUpError, stack_up  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            task=dict(type="str", default="preview",
                      choices=["preview", "up", "restart_stale_redis", "restart_stale_app"]),
            root=dict(type="path", required=True),
            project_name=dict(type="str", required=True),
            compose=dict(type="str"),
            env_files=dict(type="dict", default={}),
            # sha256 of files that hold secrets: not the values, still never shown
            planned_sha256=dict(type="dict", default={}, no_log=True),
            acl_path=dict(type="str", default="redis/users.acl"),
            redis_service=dict(type="str", default="redis"),
            restart_redis_on_acl_change=dict(type="bool", default=False),
            app_service=dict(type="str", default="flashmm"),
            app_secret_files=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=180)),
        required_if=[("task", "preview", ("compose",))],
        supports_check_mode=True)
    p = module.params
    docker = module.get_bin_path("docker", required=True)
    try:
        if p["task"] == "preview":
            result = preview(docker, p)
        elif module.check_mode:
            result = {"changed": False, "containers": {}, "msg": "check mode: see the preview"}
        elif p["task"] == "up":
            result = stack_up(docker, p)
        elif p["task"] == "restart_stale_app":
            result = restart_stale_app(docker, p)
        else:
            result = restart_stale_redis(docker, p)
    except (ComposeError, ComposeUpError, OSError, ValueError) as exc:
        module.fail_json(msg="flashmm_stack (project %s in %s): %s"
                         % (p["project_name"], p["root"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
