#!/usr/bin/python
"""Ansible module: put a FlashMM host's files and Redis runtime keys back as a verified backup
holds them, in one call.  A thin wrapper over ``flashmm_deploy.hostside.filesync`` and
``flashmm_deploy.hostside.backup_host``, shipped as module_utils."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_restore
short_description: Restore a FlashMM host's files and Redis runtime keys from a backup
description:
  - Files (O(files), O(secret_files)) are written atomically with their modes, only where
    content, mode or owner differ; files the host's last run wrote that the backup does not
    hold are removed. Every path is checked before the first write, and a failure after it
    puts every file back. The call holds the host's lock (C(.flashmm/lock)).
  - Redis (O(redis)) is restored in one Lua script that reads and checks everything first.
    Keys under C(flashmm:config:), C(flashmm:meta:) and C(flashmm:secure:) that the backup does
    not hold are removed, every key whose type, value or persistence differs is rewritten
    (with the TTL it had left at backup time). When something changed, C(flashmm:meta:version)
    moves forward (it never goes back) and each changed config key is published on
    C(flashmm:config:updates). Restoring the state already there writes nothing.
  - With both, Redis is checked before the first file is written and restored after the
    files; if it fails, the files are put back. With O(redis) alone and O(run_id), the call
    holds the lock and refuses if another run wrote the host's files since O(run_id) did.
  - Supports check mode and diff mode; secret files and secure records are masked.
options:
  root: {description: The host's FlashMM directory., type: path, required: true}
  files:
    description: Files without secrets; omit to leave the files alone (O(redis) only).
    type: list
    elements: dict
    suboptions:
      path: {description: Path relative to O(root)., type: str, required: true}
      content: {description: Full file content., type: str, required: true}
      mode: {description: Octal mode string such as C("0644")., type: str, required: true}
  secret_files:
    description: Files holding secrets; their content is never logged.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to O(root)., type: str, required: true}
      content: {description: Full file content (secret)., type: str, required: true}
      mode: {description: Octal mode string such as C("0600")., type: str, required: true}
      mask:
        description: C(env) shows KEY=value lines with the values of O(secret_files[].mask_keys) masked; C(all) shows nothing of the content.
        type: str
        choices: [env, all]
        default: all
      mask_keys: {description: Variables whose values are masked in the diff., type: list, elements: str, default: []}
  owner: {description: Owner of the files (default, the connecting user)., type: str}
  group: {description: Group of the files., type: str}
  directory_mode: {description: Mode of O(root) and the directories created below it., type: str, default: "0755"}
  run_id: {description: The restore run (recorded as the host's last writer)., type: str}
  record_run: {description: Record O(run_id) even when no file changed (a Redis-only call of the same run checks it)., type: bool, default: false}
  lock_timeout: {description: Seconds to wait for another run's lock on the host., type: float, default: 60}
  lease: {description: The run's lease on the host (see the flashmm_files module)., type: dict}
  generation: {description: The secrets generation of the run's vault (see the flashmm_files module)., type: dict}
  generation_base:
    description:
      - With the backup's secrets restored, O(generation) is the one the vault gets at the end
        of the restore; this is the vault's before it. A host that runs a newer one refuses
        the call before anything is written (the checkout's vault is stale).
    type: dict
  acl_reload:
    description:
      - The Redis of the host's stack, which reads C(redis/users.acl). When that file is among
        O(secret_files) and the running server serves other passwords, C(ACL LOAD) makes it
        serve the restored file's (written first), without a restart and without dropping a
        client; nothing listening is not an error (the stack starts from the file).
      - Connection options as for the flashmm_files module's O(acl_reload); O(acl_reload.password)
        and O(acl_reload.previous_password) are deploy's user's passwords to authenticate with.
    type: dict
    suboptions:
      host: {description: Redis host as the target reaches it., type: str, default: 127.0.0.1}
      port: {description: Redis port., type: int, default: 6379}
      username: {description: ACL user to authenticate as., type: str}
      password: {description: A password to try first (never logged)., type: str}
      previous_password: {description: A password to try next (never logged)., type: str}
      other_passwords: {description: Passwords to try after those (never logged)., type: list, elements: str, default: []}
      legacy_passwords: {description: "The app's passwords, tried as the default user of a stack deployed before the app and deploy users (never logged).", type: list, elements: str, default: []}
      tls: {description: Connect with TLS., type: bool, default: false}
      ca_file: {description: CA bundle to verify the server., type: path}
      cert_file: {description: Client certificate for mutual TLS., type: path}
      key_file: {description: Client key for mutual TLS., type: path}
      tls_verify: {description: Verify the server's certificate and host name., type: bool, default: true}
      timeout: {description: Socket timeout in seconds., type: float, default: 5.0}
  redis:
    description: The Redis part; omit to leave Redis alone.
    type: dict
    suboptions:
      host: {description: Redis host as the target reaches it., type: str, default: 127.0.0.1}
      port: {description: Redis port., type: int, default: 6379}
      db: {description: Redis database number., type: int, default: 0}
      username: {description: ACL user (needs O(redis.password))., type: str}
      password: {description: Redis password (never logged)., type: str}
      fallback_passwords:
        description:
          - Passwords tried in turn when Redis refuses O(redis.password) (never logged); e.g. in
            check mode, where the running Redis has not loaded the restored ACL file yet.
        type: list
        elements: str
        default: []
      tls: {description: Connect with TLS., type: bool, default: false}
      ca_file: {description: CA bundle to verify the server., type: path}
      cert_file: {description: Client certificate for mutual TLS., type: path}
      key_file: {description: Client key for mutual TLS., type: path}
      tls_verify: {description: Verify the server's certificate and host name., type: bool, default: true}
      timeout: {description: Socket timeout in seconds., type: float, default: 5.0}
      backup_id: {description: The backup restored (named in the published summary)., type: str, required: true}
      entries: {description: "Keys without secrets: key, type, ttl_ms, values (base64).", type: list, elements: dict, default: []}
      secure_entries:
        description:
          - The flashmm:secure:* records (never logged), as one base64-encoded JSON list of entries like O(redis.entries).
          - One opaque string, so that Ansible's masking of no_log values hides it and nothing else (a list of dicts would mask every key name and type it holds, wherever they appear).
        type: str
extends_documentation_fragment: [flashmm_audit]
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Restore a host (the flashmm_restore action plugin builds these options from a backup)
  flashmm_restore:
    root: /opt/flashmm
    files:
      - {path: docker-compose.yml, content: "{{ compose_text }}", mode: "0644"}
    redis: {port: 6379, backup_id: 20261126T173012Z, entries: []}
"""

RETURN = r"""
files: {description: path -> created, updated, mode, owner, removed or unchanged., type: dict, returned: when O(files) is given}
acl_reloaded: {description: Whether the running Redis reloaded (or would reload) its ACL file., type: bool, returned: when O(acl_reload) is given and the backup holds the ACL file}
changed_files: {description: Paths that were (or would be) changed or removed., type: list, elements: str, returned: always}
redis:
  description: changed_keys (names only), version before and after, and whether Redis could be reached in check mode.
  type: dict
  returned: when O(redis) is given
"""

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_backup_host import (  # noqa: E402
    REDIS_OPTIONS, BackupHostError, RestoreStep, endpoint_of, redis_diff)
from ansible.module_utils.flashmm_converge import converge  # noqa: E402
from ansible.module_utils.flashmm_filesync import check_generation  # noqa: E402
from ansible.module_utils.flashmm_redis_acl import ACL_PATH, ACL_RELOAD_OPTIONS  # noqa: E402

_FILE = dict(path=dict(type="str", required=True), content=dict(type="str", required=True),
             mode=dict(type="str", required=True))
_SECRET_FILE = dict(path=dict(type="str", required=True),
                    content=dict(type="str", required=True, no_log=True),
                    mode=dict(type="str", required=True),
                    mask=dict(type="str", choices=["env", "all"], default="all"),
                    mask_keys=dict(type="list", elements="str", default=[], no_log=False))
_REDIS = dict(REDIS_OPTIONS, backup_id=dict(type="str", required=True),
              entries=dict(type="list", elements="dict", default=[]),
              secure_entries=dict(type="str", no_log=True),
              fallback_passwords=dict(type="list", elements="str", default=[], no_log=True))
_ACL_RELOAD = dict(ACL_RELOAD_OPTIONS,
                   other_passwords=dict(type="list", elements="str", default=[], no_log=True))


def _secure(blob):
    return json.loads(base64.b64decode(blob)) if blob else []


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            files=dict(type="list", elements="dict", options=_FILE),
            secret_files=dict(type="list", elements="dict", default=[], options=_SECRET_FILE),
            owner=dict(type="str"), group=dict(type="str"),
            directory_mode=dict(type="str", default="0755"),
            run_id=dict(type="str"), record_run=dict(type="bool", default=False),
            lock_timeout=dict(type="float", default=60.0),
            lease=dict(type="dict"), generation=dict(type="dict"),
            generation_base=dict(type="dict"),
            redis=dict(type="dict", options=_REDIS),
            acl_reload=dict(type="dict", options=_ACL_RELOAD),
            audit=dict(type="dict"),
        ),
        supports_check_mode=True)
    p = module.params
    check = module.check_mode
    r = p["redis"]
    acl = next((f["content"] for f in p["secret_files"] if f["path"] == ACL_PATH), None)
    files = None
    if p["files"] is not None:
        files = [dict(f, mode=int(f["mode"], 8)) for f in p["files"]]
        files += [dict(path=f["path"], content=f["content"], mode=int(f["mode"], 8),
                       mask=f["mask"], mask_keys=f["mask_keys"]) for f in p["secret_files"]]
    result = dict(changed=False, changed_files=[], diff=[])
    try:
        # bad connection options (a username without a password) fail here, by name
        login = {k: v for k, v in r.items() if k in REDIS_OPTIONS} if r else None
        endpoint = endpoint_of(login)
        # deploy's login, then the fallbacks tried when Redis refuses it
        endpoints = [endpoint] + [endpoint_of(dict(login, password=pw))
                                  for pw in r["fallback_passwords"]] if r else []
        restore = RestoreStep(endpoints, r["entries"] + _secure(r["secure_entries"]),
                              r["backup_id"], check_mode=check,
                              warn=lambda msg: module.warn("flashmm_restore: " + msg)
                              ) if r else None
        if p["generation_base"] and files is not None and os.path.isdir(p["root"]):
            check_generation(p["root"], p["generation_base"])
        done = converge(
            p["root"], files, check=check, redis=restore,
            # the running Redis serves the restored ACL file before the app can read the
            # restored password from .env (written after it)
            acl=dict(options=p["acl_reload"], content=acl,
                     extra_passwords=p["acl_reload"]["other_passwords"])
            if p["acl_reload"] and acl is not None and files is not None else None,
            run_id=p["run_id"], lock_timeout=p["lock_timeout"], lease=p["lease"],
            audit=p["audit"], owner=p["owner"], group=p["group"],
            directory_mode=int(p["directory_mode"], 8), record_run=p["record_run"],
            generation=p["generation"])
    except BackupHostError as exc:
        module.fail_json(msg="flashmm_restore: %s; nothing restored on this host" % exc,
                         kind=exc.kind)
    except Exception as exc:        # SyncError, OSError: the files were put back
        module.fail_json(msg="flashmm_restore: %s; no file changed" % exc, kind="files")
    synced, acl_live = done["files"], done["acl"]
    if synced is not None:
        result.update(changed=synced["changed"], files=synced["files"],
                      changed_files=synced["changed_files"], diff=synced["diff"])
    if acl_live:
        result["acl_reloaded"] = acl_live["reloaded"]
        result["changed"] = result["changed"] or acl_live["reloaded"]
    if endpoint is not None:
        report = done["redis"]
        where = "redis %s" % endpoint.label()
        changed = report["would_change"] if check else report["changed"]
        result["changed"] = result["changed"] or changed
        if report["would_change"]:
            result["diff"].append(redis_diff(report, where))
        result["redis"] = dict(changed=changed, changed_keys=report["changed_keys"],
                               version_before=report.get("version_before"),
                               version=report.get("version"),
                               unreachable=bool(report.get("unreachable")))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
