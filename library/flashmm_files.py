#!/usr/bin/python
"""Ansible module: write every rendered FlashMM file of a host in one call.

Thin wrapper over ``flashmm_deploy.filesync`` (shipped as module_utils/flashmm_filesync.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_files
short_description: Converge all rendered FlashMM files of a host in one module call
description:
  - Writes each file atomically (temporary file in the same directory, fsync, rename) with the
    stated mode, only when its content, mode or owner differ.
  - Reports a per-file diff; values of the keys listed in C(mask_keys) are shown as
    C('<redacted>') (C('<redacted, changed>') where they change), never in clear.
  - Supports check mode (writes nothing, reports what would change).
options:
  root:
    description: Directory the file paths are relative to; created if missing.
    type: path
    required: true
  files:
    description: Non-secret files.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to I(root)., type: str, required: true}
      content: {description: Full file content., type: str, required: true}
      mode: {description: Octal mode string such as C("0644")., type: str, required: true}
  secret_files:
    description: Files holding secrets; their content is never logged or shown.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Path relative to I(root)., type: str, required: true}
      content: {description: Full file content (secret)., type: str, required: true}
      mode: {description: Octal mode string such as C("0600")., type: str, required: true}
      mask_keys: {description: KEY=value lines whose values are masked in the diff., type: list, elements: str, default: []}
  owner: {description: Owner of the files (default, the connecting user)., type: str}
  group: {description: Group of the files., type: str}
  directory_mode: {description: Mode of directories created., type: str, default: "0755"}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Write the rendered files
  flashmm_files:
    root: /opt/flashmm
    files:
      - {path: docker-compose.yml, content: "{{ compose_text }}", mode: "0644"}
    secret_files:
      - {path: .env, content: "{{ env_text }}", mode: "0600", mask_keys: [REDIS_PASSWORD]}
"""

RETURN = r"""
files: {description: path -> created, updated, mode or unchanged., type: dict, returned: always}
changed_files: {description: Paths that were (or in check mode would be) changed., type: list, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_filesync import SyncError, sync  # noqa: E402

_FILE = dict(path=dict(type="str", required=True), content=dict(type="str", required=True),
             mode=dict(type="str", required=True))
_SECRET_FILE = dict(_FILE, content=dict(type="str", required=True, no_log=True),
                    mask_keys=dict(type="list", elements="str", default=[], no_log=False))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            files=dict(type="list", elements="dict", default=[], options=_FILE),
            secret_files=dict(type="list", elements="dict", default=[], options=_SECRET_FILE),
            owner=dict(type="str"),
            group=dict(type="str"),
            directory_mode=dict(type="str", default="0755"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        specs = [dict(f, mode=int(f["mode"], 8)) for f in p["files"] + p["secret_files"]]
        result = sync(p["root"], specs, check=module.check_mode, owner=p["owner"],
                      group=p["group"], directory_mode=int(p["directory_mode"], 8))
    except (SyncError, OSError, KeyError, ValueError) as exc:
        module.fail_json(msg=f"flashmm_files: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
