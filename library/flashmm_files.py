#!/usr/bin/python
"""Ansible module: converge a FlashMM host's files in one call (and, where nothing must start
first, apply its Redis runtime layer in the same call).  A thin wrapper over
``flashmm_deploy.hostside.filesync`` and ``flashmm_deploy.hostside.seed_apply``, shipped as module_utils."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_files
short_description: Write a FlashMM host's files atomically, with stated modes and a masked diff
description:
  - Writes each file only when its content, mode or owner differ, atomically (temporary file
    in the same directory, fsync, rename) with its mode set before the first byte is written.
  - Each change gets a diff. In O(secret_files) the values of C(mask_keys) show as
    C('<redacted>') (C('<redacted, changed>') where they change), as does every line that is
    not a known non-secret assignment; a file with C(mask=all) shows no content at all.
  - Every path is checked before the first write (no file where a directory goes, nothing
    resolving outside O(root), no symlink where a file goes); a failure after that puts every
    file back. Files the previous run wrote and this one does not are removed
    (C(.flashmm/state.json) lists them). The call holds an exclusive lock on
    C(.flashmm/lock), waiting at most O(lock_timeout) for another run.
  - With O(runtime), the Redis runtime layer is checked (reachable, authenticated, keys of the
    right types) before any file is written and applied after them, in the same module call
    (see the flashmm_runtime module); if it fails, the files are put back. Deploy does this on
    hosts where no compose stack must start first, since one module call is most of a host's cost.
  - Supports check mode, in which nothing is written anywhere and the result says what would
    change.
options:
  root:
    description: Absolute directory the file paths are relative to; created if missing.
    type: path
    required: true
  files:
    description: Files that hold no secret value.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to O(root)., type: str, required: true}
      content: {description: Full file content., type: str, required: true}
      mode: {description: Octal mode string such as C("0644")., type: str, required: true}
      mask:
        description: C(all) hides the file's content in diffs (a file of password digests).
        type: str
        choices: [all]
  secret_files:
    description: Files holding secrets, in KEY='value' form; their content is never logged.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to O(root)., type: str, required: true}
      content: {description: Full file content (secret)., type: str, required: true}
      mode: {description: Octal mode string such as C("0600")., type: str, required: true}
      mask_keys: {description: Variables whose values are masked in the diff., type: list, elements: str, default: []}
      mask:
        description: C(env) (the default) shows KEY=value lines with the values of C(mask_keys) masked; C(all) shows nothing of the content (a file holding one secret).
        type: str
        choices: [env, all]
        default: env
  owner: {description: Owner of the files (default, the connecting user)., type: str}
  group: {description: Group of the files., type: str}
  directory_mode: {description: Mode of O(root) and the directories created below it., type: str, default: "0755"}
  run_id: {description: The deploy run this call belongs to (recorded with the lock and the files)., type: str}
  record_run:
    description: Record O(run_id) as the host's last writer even when nothing changed, so a later seed of the same run can tell whether another run wrote the files since.
    type: bool
    default: false
  lock_timeout: {description: Seconds to wait for another run's lock on the host before failing., type: float, default: 60}
  lease:
    description:
      - The run's hold on the host from its first call there to its last (C(.flashmm/lease.json)).
        Another run's live lease is waited for like the lock; see the flashmm_deploy.hostside.host_lock
        module for the fields (action, owner, started, ttl, hold, release, stale_runs).
    type: dict
  generation:
    description:
      - The secrets generation of the run's vault (number, id, at). A host that runs a newer one
        refuses the call before anything is written; otherwise it is recorded with the files.
    type: dict
  runtime:
    description: Apply the Redis runtime layer after the files; the options of the flashmm_runtime module.
    type: dict
  acl_reload:
    description:
      - The Redis of the host's stack, which reads C(redis/users.acl) of O(files). When it runs
        and serves other users than that file, C(ACL SETUSER) makes it serve the file's,
        without a restart and without dropping a client (check mode says it would). Nothing
        listening is not an error (the stack starts from the file). A C(default) user that is
        still the all-powerful one of a stack deployed before the app and deploy users is kept
        while this call changes a secret file of the app (the app connects as it until it
        restarts; the seed step turns it off).
      - Connection options as for the flashmm_runtime module (host, port, username (deploy's
        user), tls, ca_file, cert_file, key_file, tls_verify, timeout), plus C(password) and
        C(previous_password) (deploy's user's), tried in that order, then
        C(legacy_passwords) (the app's, as C(default)).
    type: dict
extends_documentation_fragment: [flashmm_audit]
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Write a host's files
  flashmm_files:
    root: /opt/flashmm
    files:
      - {path: docker-compose.yml, content: "{{ compose_text }}", mode: "0644"}
    secret_files:
      - {path: .env, content: "{{ env_text }}", mode: "0600", mask_keys: [REDIS_PASSWORD]}
"""

RETURN = r"""
files: {description: path -> created, updated, mode or unchanged., type: dict, returned: always}
changed_files: {description: Paths that were (or in check mode would be) changed or removed., type: list, elements: str, returned: always}
removed_files: {description: Paths the previous run wrote that were (or would be) removed., type: list, elements: str, returned: always}
last_write: {description: "The record of the run that last wrote the host's files (run_id, written_at, owner, action, commit), before this call.", type: dict, returned: always}
created_directories: {description: Directories created (or that would be)., type: list, elements: str, returned: always}
extra_files: {description: "Files under O(root) (not .flashmm/) that deploy never wrote there, at most 100.", type: list, elements: str, returned: in check mode}
acl_reloaded: {description: Whether the running Redis reloaded (or would reload) its ACL file., type: bool, returned: when O(acl_reload) is given}
runtime:
  description: The runtime layer's result (see flashmm_runtime), when O(runtime) was given.
  type: dict
  returned: when O(runtime) is given
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_converge import converge  # noqa: E402
from ansible.module_utils.flashmm_host_lock import describe_holder  # noqa: E402
from ansible.module_utils.flashmm_redis_acl import (  # noqa: E402
    ACL_PATH, ACL_RELOAD_OPTIONS, AclError)
from ansible.module_utils.flashmm_seed_apply import RUNTIME_OPTIONS, SeedStep  # noqa: E402

_FILE = dict(path=dict(type="str", required=True), content=dict(type="str", required=True),
             mode=dict(type="str", required=True), mask=dict(type="str", choices=["all"]))
_SECRET_FILE = dict(path=dict(type="str", required=True),
                    content=dict(type="str", required=True, no_log=True),
                    mode=dict(type="str", required=True),
                    mask=dict(type="str", choices=["env", "all"], default="env"),
                    mask_keys=dict(type="list", elements="str", default=[], no_log=False))


def _differs(path, content):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read() != content
    except OSError:
        return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            files=dict(type="list", elements="dict", default=[], options=_FILE),
            secret_files=dict(type="list", elements="dict", default=[], options=_SECRET_FILE),
            owner=dict(type="str"),
            group=dict(type="str"),
            directory_mode=dict(type="str", default="0755"),
            runtime=dict(type="dict", options=RUNTIME_OPTIONS),
            acl_reload=dict(type="dict", options=ACL_RELOAD_OPTIONS),
            run_id=dict(type="str"),
            record_run=dict(type="bool", default=False),
            lock_timeout=dict(type="float", default=60.0),
            lease=dict(type="dict"),
            generation=dict(type="dict"),
            audit=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    specs = [dict(f, mode=int(f["mode"], 8)) for f in p["files"] + p["secret_files"]]
    acl = next((f["content"] for f in p["files"] if f["path"] == ACL_PATH), None)
    seed = SeedStep(p["runtime"], check_mode=module.check_mode) if p["runtime"] else None
    try:
        done = converge(
            p["root"], specs, check=module.check_mode, redis=seed,
            # the app restarts with a changed secret file after this call: an old default
            # user it may still connect as stays until then
            acl=dict(options=p["acl_reload"], content=acl, keep_legacy_default=any(
                _differs(os.path.join(p["root"], f["path"]), f["content"])
                for f in p["secret_files"])) if p["acl_reload"] and acl is not None else None,
            run_id=p["run_id"], lock_timeout=p["lock_timeout"], lease=p["lease"],
            audit=p["audit"], owner=p["owner"], group=p["group"],
            directory_mode=int(p["directory_mode"], 8), record_run=p["record_run"],
            generation=p["generation"])
    except Exception as exc:        # SyncError, SeedError, AclError, OSError: nothing half-written
        what = ("redis ACL" if isinstance(exc, AclError) else
                "runtime layer" if getattr(exc, "kind", None) else "files")
        module.fail_json(msg="flashmm_files: %s; no file changed (%s)" % (exc, what),
                         kind=getattr(exc, "kind", "files"))
    synced, acl_live = done["files"], done["acl"]
    if synced.get("broke_lease"):
        module.warn("flashmm_files: took over the host from %s (%s)" % (
            describe_holder(synced["broke_lease"]), synced["broke_lease"]["reason"]))
    result = dict(changed=synced["changed"], files=synced["files"],
                  changed_files=synced["changed_files"], removed_files=synced["removed_files"],
                  diff=synced["diff"], created_directories=synced["created_directories"],
                  last_write=synced["last_write"])
    if "extra_files" in synced:
        result["extra_files"] = synced["extra_files"]
    if acl_live:
        result["acl_reloaded"] = acl_live["reloaded"]
        result["changed"] = result["changed"] or acl_live["reloaded"]
    if p["runtime"]:
        applied, diff, warnings = done["redis"]
        for warning in warnings:
            module.warn(warning)
        result["runtime"] = applied
        result["changed"] = result["changed"] or applied["changed"]
        if applied["changed"]:
            result["diff"].append(diff)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
