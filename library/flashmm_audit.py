#!/usr/bin/python
"""Ansible module: read a host's audit trail (``.flashmm/audit.log`` and its rotated files),
first taking over the runtime sets waiting in the host's Redis.  A thin wrapper over
``flashmm_deploy.hostside.audit_log``, shipped as module_utils."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_audit
short_description: Read a FlashMM host's audit trail
description:
  - Reads C(<root>/.flashmm/audit.log) and its rotated files, oldest line first.
  - With O(audit) and O(redis), first copies the runtime sets on the Redis list
    C(flashmm:audit:runtime) (who set which runtime key, no value) that the log lacks into
    it (the config version of the last one copied is kept in
    C(.flashmm/audit-runtime.json)). Check mode copies nothing and reads the log only.
  - Lines hold names, never values; nothing here is secret.
options:
  root: {description: The host's FlashMM directory (flashmm_root)., type: path, required: true}
  since: {description: "Only lines at or after this time (ISO 8601, UTC, e.g. 2026-12-01 or 2026-12-01T10:00).", type: str}
  max_lines: {description: At most this many lines come back (the newest)., type: int, default: 10000}
  redis:
    description: The host's Redis, as the flashmm_runtime module reaches it (host, port, db, username, password, tls, ca_file, cert_file, key_file, tls_verify, timeout).
    type: dict
extends_documentation_fragment: [flashmm_audit]
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Read the audit trail
  flashmm_audit:
    root: /opt/flashmm
    since: "2026-12-01"
"""

RETURN = r"""
entries: {description: The lines (JSON objects) of the log at or after O(since), oldest first., type: list, elements: dict, returned: always}
truncated: {description: Lines left out by O(max_lines)., type: int, returned: always}
unreadable: {description: Lines that were not JSON (a torn write)., type: int, returned: always}
taken_over: {description: Runtime sets copied from Redis into the log by this call., type: int, returned: always}
redis_error: {description: Why the Redis list could not be read (the log is still read)., type: str, returned: when Redis failed}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_audit_log import read, take_over_runtime  # noqa: E402
from ansible.module_utils.flashmm_redis_client import Connection, RedisError  # noqa: E402
from ansible.module_utils.flashmm_seed_apply import (  # noqa: E402
    ENDPOINT_OPTIONS, SeedError, endpoint_from_params)


def main():
    module = AnsibleModule(
        argument_spec=dict(root=dict(type="path", required=True), since=dict(type="str"),
                           max_lines=dict(type="int", default=10000),
                           audit=dict(type="dict"),
                           redis=dict(type="dict", options=ENDPOINT_OPTIONS)),
        supports_check_mode=True)
    p = module.params
    taken, result = 0, {}
    if p["audit"] and p["redis"] and not module.check_mode:
        try:
            with Connection(endpoint_from_params(p["redis"])) as conn:
                taken = take_over_runtime(conn, p["root"], p["audit"])
        except (RedisError, SeedError) as exc:
            result["redis_error"] = str(exc)
            module.warn("flashmm_audit: runtime sets not copied from Redis: %s" % exc)
        except OSError as exc:
            module.fail_json(msg="flashmm_audit: cannot write %s's audit log: %s"
                             % (p["root"], exc))
    entries, bad = read(p["root"])
    since = (p["since"] or "").replace(" ", "T")
    if since:
        entries = [e for e in entries if str(e.get("time", "")) >= since]
    cut = max(0, len(entries) - max(0, p["max_lines"]))
    module.exit_json(changed=taken > 0, entries=entries[cut:], truncated=cut, unreadable=bad,
                     taken_over=taken, **result)


if __name__ == "__main__":
    main()
