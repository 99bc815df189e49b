"""``flashmm-config audit inventories/<env> [--since WHEN] [--limit PATTERN] [--json]``: every
host's audit trail (``security.audit_logging``) merged in time order, from
``playbooks/audit.yml`` (which reaches the hosts as Ansible does: SSH, become, vault).  One line
per change: time, host, actor, action, what changed (file and variable names, runtime keys,
versions; never a value).  Exit 0, or 2 when some host could not be read (the rest is shown)
or the run failed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from flashmm_deploy.cli.common import UsageError
from flashmm_deploy.cli.drift import report_of, show

PLAYBOOK = Path("playbooks") / "audit.yml"
_SINCE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2})?)?)?")


def cmd_audit(args) -> int:
    extra = {}
    if args.since:
        if not _SINCE.fullmatch(args.since):
            raise UsageError(f"--since {args.since!r}: expected a UTC date or time, "
                             "e.g. 2026-12-01 or 2026-12-01T10:00")
        extra["flashmm_audit_since"] = args.since.replace(" ", "T")
    # the summary on stderr: the table alone can be piped
    return show(report_of(args, PLAYBOOK, extra), args.json, summary_to=sys.stderr)


def register(sub) -> None:
    a = sub.add_parser("audit", help="every host's audit trail (security.audit_logging), "
                       "merged in time order; exit 0, or 2 when a host could not be read")
    a.add_argument("inventory")
    a.add_argument("--since", metavar="WHEN", help="only lines at or after this UTC time "
                   "(2026-12-01 or 2026-12-01T10:00)")
    a.add_argument("--limit", metavar="PATTERN", help="hosts, as ansible-playbook --limit")
    a.add_argument("--json", action="store_true", help="the report as JSON")
    a.set_defaults(func=cmd_audit)
