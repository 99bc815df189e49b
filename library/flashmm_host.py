#!/usr/bin/python
"""Ansible module: converge one FlashMM host in a single call: its rendered files, then its
Redis runtime layer.  A thin wrapper over ``flashmm_deploy.filesync`` and
``flashmm_deploy.redis_seed`` (shipped as module_utils/flashmm_filesync.py and
module_utils/flashmm_redis_seed.py): one module call per host is most of a deploy's cost."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_host
short_description: Write a FlashMM host's rendered files and seed its Redis runtime layer in one call
description:
  - Files are written atomically (temporary file in the same directory, fsync, rename) with the
    stated mode, only when content, mode or owner differ; each change gets a diff in which the
    values of C(mask_keys) show as C('<redacted>') (C('<redacted, changed>') where they change).
  - The seed applies a rendered Lua script in one EVAL with three-way semantics (see
    C(flashmm_deploy.redis_seed)); runtime overrides it keeps are returned as C(drift) and warned
    about by key name.  Files are written first; a seed failure leaves them written.
  - Supports check mode: nothing is written, anywhere; the result says what would change.
options:
  root:
    description: Directory the file paths are relative to; created if missing.
    type: path
  files:
    description: Non-secret files.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to O(root)., type: str, required: true}
      content: {description: Full file content., type: str, required: true}
      mode: {description: Octal mode string such as C("0644")., type: str, required: true}
  secret_files:
    description: Files holding secrets; their content is never logged or shown.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to O(root)., type: str, required: true}
      content: {description: Full file content (secret)., type: str, required: true}
      mode: {description: Octal mode string such as C("0600")., type: str, required: true}
      mask_keys: {description: KEY=value lines whose values are masked in the diff., type: list, elements: str, default: []}
  owner: {description: Owner of the files (default, the connecting user)., type: str}
  group: {description: Group of the files., type: str}
  directory_mode: {description: Mode of directories created., type: str, default: "0755"}
  seed:
    description: The Redis seed to apply after the files (omit to write files only).
    type: dict
    suboptions:
      script: {description: The rendered seed script (redis/seed.lua); holds no secret., type: str, required: true}
      host: {description: Redis host as this target reaches it., type: str, default: 127.0.0.1}
      port: {description: Redis port., type: int, default: 6379}
      db: {description: Redis database number., type: int, default: 0}
      username: {description: ACL user (needs O(seed.password))., type: str}
      password: {description: Redis password (never logged)., type: str}
      mode:
        description: C(keep) reports runtime overrides as drift, C(enforce) overwrites them.
        type: str
        choices: [keep, enforce]
        default: keep
      timeout: {description: Socket timeout in seconds., type: float, default: 5.0}
      secret_keys: {description: Redis keys whose values must never be shown., type: list, elements: str, default: []}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Write the files and seed Redis in one call
  flashmm_host:
    root: /opt/flashmm
    files:
      - {path: docker-compose.yml, content: "{{ compose_text }}", mode: "0644"}
    secret_files:
      - {path: .env, content: "{{ env_text }}", mode: "0600", mask_keys: [REDIS_PASSWORD]}
    seed:
      script: "{{ seed_lua }}"
      port: 6379
      db: 1
"""

RETURN = r"""
files: {description: path -> created, updated, mode or unchanged., type: dict, returned: when O(root) is given}
changed_files: {description: Paths that were (or in check mode would be) changed., type: list, returned: always}
seed:
  description: >-
    Seed result with C(changed), C(changed_keys), C(drift) (key -> runtime and inventory value),
    C(enforced) and C(version) (after the run; unchanged in check mode).
  type: dict
  returned: when O(seed) is given
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_filesync import SyncError, sync  # noqa: E402
from ansible.module_utils.flashmm_redis_seed import SEED_OPTIONS, SeedError, apply_for_module  # noqa: E402

_FILE = dict(path=dict(type="str", required=True), content=dict(type="str", required=True),
             mode=dict(type="str", required=True))
_SECRET_FILE = dict(_FILE, content=dict(type="str", required=True, no_log=True),
                    mask_keys=dict(type="list", elements="str", default=[], no_log=False))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path"),
            files=dict(type="list", elements="dict", default=[], options=_FILE),
            secret_files=dict(type="list", elements="dict", default=[], options=_SECRET_FILE),
            owner=dict(type="str"),
            group=dict(type="str"),
            directory_mode=dict(type="str", default="0755"),
            seed=dict(type="dict", options=SEED_OPTIONS),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, changed_files=[], diff=[])
    specs = p["files"] + p["secret_files"]
    if specs:
        if not p["root"]:
            module.fail_json(msg="flashmm_host: files need root")
        try:
            synced = sync(p["root"], [dict(f, mode=int(f["mode"], 8)) for f in specs],
                          check=module.check_mode, owner=p["owner"], group=p["group"],
                          directory_mode=int(p["directory_mode"], 8))
        except (SyncError, OSError, KeyError, ValueError) as exc:
            module.fail_json(msg="flashmm_host: %s" % exc)
        result.update(changed=synced["changed"], files=synced["files"],
                      changed_files=synced["changed_files"], diff=synced["diff"],
                      created_directories=synced["created_directories"])
    if p["seed"]:
        try:
            seeded, diff, warnings = apply_for_module(p["seed"], module.check_mode)
        except SeedError as exc:
            module.fail_json(msg="flashmm_host: %s" % exc, kind=exc.kind, **result)
        for warning in warnings:
            module.warn(warning)
        result["seed"] = seeded
        result["changed"] = result["changed"] or seeded["changed"]
        if seeded["changed"]:
            result["diff"].append(diff)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
