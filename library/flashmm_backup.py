#!/usr/bin/python
"""Ansible module: read everything a FlashMM host's backup needs in one call: the files its
last deploy wrote and a dump of its Redis runtime keys.  A thin wrapper over
``flashmm_deploy.hostside.backup_host``, shipped as module_utils."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_backup
short_description: Read a FlashMM host's deployed files and Redis runtime keys for a backup
description:
  - Reads, under the host's lock (C(.flashmm/lock), the one deploy holds), every file the
    host's last deploy wrote (listed in C(.flashmm/state.json)) with its mode, size and sha256,
    and dumps the Redis keys C(flashmm:config:*), C(flashmm:meta:*) and C(flashmm:secure:*)
    with type, TTL and value in one Lua script, so nothing interleaves.
  - Changes nothing on the host (the lock file's holder note aside). Contents come back base64
    encoded; the action plugin of the same name stores them on the controller, encrypting
    every secret, and never shows them.
  - Supports check mode (it reads the same way).
options:
  root: {description: The host's FlashMM directory (flashmm_root)., type: path, required: true}
  lock_timeout: {description: Seconds to wait for a deploy or restore holding the host's lock., type: float, default: 60}
  note: {description: Who holds the lock while reading (shown to a run that waits for it)., type: str, default: backup}
  run_id: {description: The backup run (a run holding the host's lease is waited for; see the flashmm_files module)., type: str}
  lease: {description: The run's lease options (a backup holds none; it waits for another run's)., type: dict}
  redis:
    description: Where the host's Redis is; the dump is skipped when omitted.
    type: dict
    suboptions:
      host: {description: Redis host as the target reaches it., type: str, default: 127.0.0.1}
      port: {description: Redis port., type: int, default: 6379}
      db: {description: Redis database number., type: int, default: 0}
      username: {description: ACL user (needs O(redis.password))., type: str}
      password: {description: Redis password (never logged)., type: str}
      tls: {description: Connect with TLS., type: bool, default: false}
      ca_file: {description: CA bundle to verify the server., type: path}
      cert_file: {description: Client certificate for mutual TLS., type: path}
      key_file: {description: Client key for mutual TLS., type: path}
      tls_verify: {description: Verify the server's certificate and host name., type: bool, default: true}
      timeout: {description: Socket timeout in seconds., type: float, default: 5.0}
extends_documentation_fragment: [flashmm_audit]
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Read a host's files and Redis keys
  flashmm_backup:
    root: /opt/flashmm
    redis: {port: 6379, password: "{{ redis_password }}"}
  no_log: true
"""

RETURN = r"""
files: {description: path -> mode, size, sha256 and base64 content of each deployed file., type: dict, returned: always}
redis: {description: Each backed-up key with type, ttl_ms and base64 values (null without O(redis))., type: list, elements: dict, returned: always}
deployed_by: {description: The run id of the deploy that last wrote the files., type: str, returned: always}
deployed_at: {description: When that deploy wrote them., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_audit_log import append, entry  # noqa: E402
from ansible.module_utils.flashmm_backup_host import (  # noqa: E402
    REDIS_OPTIONS, BackupHostError, backup, endpoint_of)


def main():
    module = AnsibleModule(
        argument_spec=dict(root=dict(type="path", required=True),
                           lock_timeout=dict(type="float", default=60.0),
                           note=dict(type="str", default="backup"),
                           run_id=dict(type="str"), lease=dict(type="dict"),
                           redis=dict(type="dict", options=REDIS_OPTIONS),
                           audit=dict(type="dict")),
        supports_check_mode=True)
    p = module.params
    try:
        result = backup(p["root"], endpoint_of(p["redis"]), lock_timeout=p["lock_timeout"],
                        note=p["run_id"] or p["note"], lease=p["lease"])
    except BackupHostError as exc:
        module.fail_json(msg="flashmm_backup: %s; nothing read" % exc, kind=exc.kind)
    if p["audit"] and not module.check_mode:
        append(p["root"], p["audit"], [entry(p["audit"], "backup read", note=p["note"],
                                             files=len(result.get("files") or {}),
                                             redis_keys=len(result.get("redis") or []))])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
