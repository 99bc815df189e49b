#!/usr/bin/python
"""Ansible module: re-encrypt the app's encrypted records (``flashmm:secure:*``) under the new
encryption key, in batches.  A thin wrapper over ``flashmm_deploy.hostside.record_keys``, shipped as
module_utils.  Deploy tasks call it through its action plugin, which picks the keys and the
Redis password from the host's own variables."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_secure_records
short_description: Move FlashMM's encrypted records to a new encryption key
description:
  - Scans C(flashmm:secure:*) (Redis strings holding Fernet tokens) and re-encrypts every
    record that only O(old_key) decrypts under O(new_key) (MultiFernet rotate), one SCAN page
    per batch, each batch written by one Lua call that replaces a record only if it still
    holds the value read and keeps its TTL. Records already under O(new_key) are never
    rewritten, so a rerun after an interruption moves only what is left.
  - Needs the C(cryptography) package on the host (Debian python3-cryptography).
  - Supports check mode (counts what would move, writes nothing).
options:
  new_key: {description: The new Fernet key (ENCRYPTION_KEY)., type: str, required: true}
  old_key: {description: The previous Fernet key (OLD_ENCRYPTION_KEY)., type: str}
  batch: {description: Records per SCAN page and write., type: int, default: 500}
  max_records:
    description: Move at most this many records in this call (throttles a large migration; a later call moves the rest).
    type: int
extends_documentation_fragment: [flashmm_redis, flashmm_audit]
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Move the records to the new key
  flashmm_secure_records:
    port: 6379
    password: "{{ redis_password }}"
    new_key: "{{ new_key }}"
    old_key: "{{ old_key }}"
  no_log: true
"""

RETURN = r"""
records: {description: Records scanned., type: int, returned: success}
moved: {description: Records re-encrypted (in check mode, that would be)., type: int, returned: success}
current: {description: Records already under the new key., type: int, returned: success}
old_only: {description: Records still readable only with the old key afterwards (0 after a full run)., type: int, returned: success}
unreadable: {description: Records neither key decrypts, or not strings., type: int, returned: success}
seconds: {description: Time the migration took., type: float, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_audit_log import append, entry  # noqa: E402
from ansible.module_utils.flashmm_record_keys import RecordKeyError, migrate  # noqa: E402
from ansible.module_utils.flashmm_redis_client import RedisError  # noqa: E402
from ansible.module_utils.flashmm_seed_apply import (  # noqa: E402
    ENDPOINT_OPTIONS, SeedError, endpoint_from_params)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ENDPOINT_OPTIONS,
            new_key=dict(type="str", required=True, no_log=True),
            old_key=dict(type="str", no_log=True),
            batch=dict(type="int", default=500),
            max_records=dict(type="int"),
            audit=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        endpoint = endpoint_from_params(p)
        counts = migrate(endpoint, p["new_key"], p["old_key"], batch=max(1, p["batch"]),
                         check=module.check_mode, max_records=p["max_records"])
    except (RecordKeyError, RedisError, SeedError) as exc:
        module.fail_json(msg="flashmm_secure_records: %s" % exc, kind=exc.kind)
    if counts["moved"] and p["audit"] and not module.check_mode:
        # how many records now open with the new key (which records: not a secret, but not
        # a name an operator asks about either)
        append(p["audit"]["root"], p["audit"], [entry(p["audit"], "records re-encrypted",
                                                      count=counts["moved"])])
    module.exit_json(changed=counts["moved"] > 0, **counts)


if __name__ == "__main__":
    main()
