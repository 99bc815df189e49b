#!/usr/bin/python
"""Ansible module: apply a host's Redis runtime layer (``redis/seed.lua``) in one atomic script.
A thin wrapper over ``flashmm_deploy.hostside.seed_apply`` and its standard-library Redis client."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_runtime
short_description: Seed the FlashMM runtime layer (flashmm:config:*) into Redis in one EVAL
description:
  - Runs the rendered seed script in one EVALSHA (EVAL when the server has not cached it).
    Keys absent or unchanged since the last seed take the inventory value; a key an operator
    changed at runtime is kept and reported as drift, one warning per key, unless O(mode) is
    C(enforce). When a value changed, C(flashmm:meta:version) is bumped and each changed key
    is published, as its dotted name, on C(flashmm:config:updates).
  - The script reads and checks everything before its first write, so a failure changes
    nothing.
  - Needs nothing but Python's standard library on the target; TLS (C(rediss)) and ACL users
    are supported.
  - Supports check mode (the same read phase, no write).
options:
  script: {description: The rendered seed script (redis/seed.lua); holds no secret., type: str, required: true}
  mode:
    description: C(keep) reports runtime overrides as drift, C(enforce) overwrites them.
    type: str
    choices: [keep, enforce]
    default: keep
  root:
    description: The host's FlashMM directory; with O(run_id), the seed holds the host's lock and refuses to apply when another run wrote the files since O(run_id) did.
    type: path
  run_id: {description: The deploy run whose files this seed goes with., type: str}
  lock_timeout: {description: Seconds to wait for another run's lock on the host., type: float, default: 60}
  lease: {description: The run's lease on the host (see the flashmm_files module)., type: dict}
  acl_reload:
    description:
      - Before the seed, the running Redis is brought to the users of C(content) (the ACL file
        deploy wrote) live, as the flashmm_files module's O(acl_reload) does, the C(default)
        user included (an upgrade's old one, kept by the write step until the app restarted).
      - The options of the flashmm_files module's O(acl_reload), plus C(content).
    type: dict
extends_documentation_fragment: [flashmm_redis, flashmm_audit]
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Seed the runtime layer over the stack's loopback port
  flashmm_runtime:
    script: "{{ lookup('ansible.builtin.file', 'seed.lua') }}"
    port: 6379
    password: "{{ redis_password }}"
"""

RETURN = r"""
acl_reloaded: {description: Whether the running Redis took (or would take) its ACL file's users., type: bool, returned: when the users changed}
changed_keys: {description: Redis keys written or deleted (or that would be)., type: list, elements: str, returned: always}
drift: {description: key -> runtime and inventory value of each override kept., type: dict, returned: always}
unknown: {description: "Keys under flashmm:config: that no seed wrote and the schema does not have (the first 100).", type: list, elements: str, returned: in check mode when there are any}
enforced: {description: key -> runtime and inventory value of each override overwritten., type: dict, returned: always}
version: {description: flashmm:meta:version after the run (unchanged in check mode)., type: int, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_converge import converge  # noqa: E402
from ansible.module_utils.flashmm_redis_acl import ACL_RELOAD_OPTIONS, AclError  # noqa: E402
from ansible.module_utils.flashmm_seed_apply import (  # noqa: E402
    RUNTIME_OPTIONS, SeedError, SeedStep)

_ACL_RELOAD = dict(ACL_RELOAD_OPTIONS, content=dict(type="str", required=True, no_log=True))


def main():
    module = AnsibleModule(
        argument_spec=dict(RUNTIME_OPTIONS, root=dict(type="path"), run_id=dict(type="str"),
                           lock_timeout=dict(type="float", default=60.0),
                           lease=dict(type="dict"), audit=dict(type="dict"),
                           acl_reload=dict(type="dict", options=_ACL_RELOAD)),
        supports_check_mode=True, required_by={"username": ("password",)},
        required_together=[("root", "run_id")])
    p = module.params
    try:
        # the seed's own check comes with its write (one round trip); with root and run_id,
        # under the host's lock, refused when another run wrote the files since this one
        done = converge(p["root"] or (p["audit"] or {}).get("root"), None,
                        check=module.check_mode,
                        redis=SeedStep(p, check_mode=module.check_mode, direct=True),
                        acl=dict(options=p["acl_reload"], content=p["acl_reload"]["content"])
                        if p["acl_reload"] else None,
                        run_id=p["run_id"] if p["root"] else None,
                        lock_timeout=p["lock_timeout"], lease=p["lease"], audit=p["audit"])
        result, diff, warnings = done["redis"]
        reloaded = done["acl"].get("reloaded", False)
    except AclError as exc:
        module.fail_json(msg="flashmm_runtime: redis ACL: %s" % exc, kind=exc.kind)
    except SeedError as exc:
        module.fail_json(msg="flashmm_runtime: %s" % exc, kind=exc.kind)
    except Exception as exc:        # the lock or the run check (SyncError), or the host's disk
        module.fail_json(msg="flashmm_runtime: %s" % exc, kind="host")
    if reloaded:
        result.update(changed=True, acl_reloaded=True)
    for warning in warnings:
        module.warn(warning)
    if result["changed"]:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
