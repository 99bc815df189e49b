"""Doc fragment: the ``audit`` option of the host modules that change a host (files, runtime,
restore, backup, secure records, audit)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  audit:
    description:
      - With C(security.audit_logging) on, the run's audit context (root, host, actor, action,
        run, commit, max_bytes, keep); omitted when it is off.
      - Each change this call makes is one JSON line of C(<root>/.flashmm/audit.log), names
        only, never a value (see flashmm_deploy.hostside.audit_log).
    type: dict
"""
