#!/usr/bin/python
"""Ansible module: apply a rendered FlashMM Redis seed script (one EVAL, three-way merge)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_redis_seed
short_description: Seed FlashMM's Redis runtime configuration layer in one atomic script
description:
  - Runs a seed script rendered on the controller by C(flashmm_deploy.redis_seed.render_script)
    against a Redis server, in one EVALSHA (EVAL when the script is not cached yet).
  - Keys absent, or unchanged since deploy last seeded them (recorded in the hash
    C(flashmm:config:seeded)), take the inventory value. Keys an operator changed at runtime are
    kept and reported as C(drift) unless O(mode=enforce). Keys no longer desired are deleted when
    unchanged since seeding, else kept and reported as drift.
  - When a config key changes, C(flashmm:config:version) is incremented and one message listing
    the changed keys (never values) is published on C(flashmm:config:updates).
  - Needs only the Python standard library on the target host.
version_added: "0.1.0"
options:
  script:
    description:
      - The rendered seed script (Lua source), not a path.
      - Not logged, since it embeds the desired values.
    type: str
    required: true
  host:
    description: Redis host, as seen from the target host.
    type: str
    default: 127.0.0.1
  port:
    description: Redis port.
    type: int
    default: 6379
  db:
    description: Redis database number.
    type: int
    default: 0
  username:
    description: ACL user name (needs O(password)); the default user when omitted.
    type: str
  password:
    description: Redis password. Never logged, never in a result or an error message.
    type: str
  mode:
    description:
      - V(keep) keeps operator overrides and reports them as drift.
      - V(enforce) overwrites them with the inventory value.
    type: str
    choices: [keep, enforce]
    default: keep
  timeout:
    description: Seconds allowed for connecting and for each reply.
    type: float
    default: 5.0
  secret_keys:
    description: Redis keys whose values must never be shown (in drift, diff or result).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    details: Runs the same computation inside Redis without writing anything.
  diff_mode:
    support: full
    details: Before/after of the keys that change, one C(key = value) line each.
author:
  - flashmm-deploy
"""

EXAMPLES = r"""
- name: Seed the Redis runtime layer
  flashmm_redis_seed:
    script: "{{ lookup('ansible.builtin.file', flashmm_seed_script) }}"
    host: 127.0.0.1
    port: 6379
    db: 0
    password: "{{ flashmm_redis_password }}"
    mode: keep
  register: seed

- name: Report operator overrides that were kept
  ansible.builtin.debug:
    var: seed.drift
  when: seed.drift | length > 0
"""

RETURN = r"""
changed_keys:
  description: Config keys written or deleted (in check mode, that would be), sorted.
  returned: always
  type: list
  elements: str
  sample: ["flashmm:config:trading:max_position_usdc"]
drift:
  description:
    - Operator overrides kept, key -> runtime and inventory value (C(null) inventory value for
      a key no longer desired). Secret keys show C(<redacted>).
  returned: always
  type: dict
  sample: {"flashmm:config:trading:quote_frequency_hz": {"runtime": "2.5", "inventory": "5.0"}}
enforced:
  description: Operator overrides overwritten because O(mode=enforce), same shape as RV(drift).
  returned: always
  type: dict
version:
  description: C(flashmm:config:version) after the run (unchanged in check mode).
  returned: always
  type: int
  sample: 3
diff:
  description:
    - Before/after text of the changed keys, one C(key = JSON value) line each (an absent key
      has no line); secret keys show C(<redacted>). Shown by C(--diff).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.flashmm_redis_seed import SeedError, apply


def _lines(values):
    return "".join("%s = %s\n" % (k, v) for k, v in sorted(values.items()) if v is not None)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            # no_log: the script embeds the desired values, and secret_keys says some may be
            # secrets; -vvv would otherwise print it with the module's invocation.
            script=dict(type="str", required=True, no_log=True),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=6379),
            db=dict(type="int", default=0),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            mode=dict(type="str", choices=["keep", "enforce"], default="keep"),
            timeout=dict(type="float", default=5.0),
            secret_keys=dict(type="list", elements="str", default=[], no_log=False),
        ),
        required_by={"username": "password"},
        supports_check_mode=True,
    )
    p = module.params
    where = "redis://%s:%s/%s" % (p["host"], p["port"], p["db"])
    try:
        result = apply(p["host"], p["port"], p["db"], p["script"], mode=p["mode"],
                       check=module.check_mode, username=p["username"],
                       password=p["password"], timeout=p["timeout"],
                       secret_keys=p["secret_keys"])
    except SeedError as exc:
        module.fail_json(msg="flashmm_redis_seed: %s" % exc, kind=exc.kind)

    changed = result["would_change"] if module.check_mode else result["changed"]
    for key in sorted(result["drift"]):
        module.warn("runtime override kept in %s: %s (pass mode=enforce to overwrite)"
                    % (where, key))
    out = dict(
        changed=changed,
        changed_keys=result["changed_keys"],
        drift=result["drift"],
        enforced=result["enforced"],
        version=result["version"],
    )
    out["diff"] = dict(before=_lines(result["before"]), after=_lines(result["after"]),
                       before_header=where, after_header=where)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
