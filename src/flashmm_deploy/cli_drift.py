"""``flashmm-config drift inventories/<env>``: ``playbooks/drift.yml`` run for the operator, its
report shown as a table (or ``--json``), and an exit code a script can act on: 0 every host
matches the inventory, 1 some host drifted, 2 some host could not be checked (unreachable, a
step failed) or the run itself failed (invalid inventory: its output is shown).

Reaching hosts is Ansible's job (SSH, become, vault passwords), so this runs the playbook rather
than reading hosts itself; ``--vault-id`` / ``--vault-password-file`` and ``--limit`` are passed
on.  The report holds no secret (secret files are compared by digest on the host).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .drift import EXIT

PLAYBOOK = Path("playbooks") / "drift.yml"
EXIT_RUN_FAILED = max(EXIT.values())


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def run_playbook(inventory: str, *, limit: str | None, vault_args: list[str],
                 timeout: float | None = None) -> tuple[dict | None, subprocess.CompletedProcess]:
    """(the report, or None when the run produced none; the finished process)."""
    root = _project_root()
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    with tempfile.TemporaryDirectory(prefix="flashmm-drift-") as tmp:
        out = Path(tmp) / "drift.json"
        cmd = [str(ansible_playbook), str(root / PLAYBOOK), "-i", inventory,
               "-e", json.dumps({"flashmm_drift_json": str(out)}), *vault_args]
        if limit:
            cmd += ["--limit", limit]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                              check=False)
        report = json.loads(out.read_text()) if out.is_file() else None
    return report, proc


def cmd_drift(args) -> int:
    vault_args = [a for v in args.vault_id for a in ("--vault-id", v)] + \
        [a for f in args.vault_password_file for a in ("--vault-password-file", f)]
    report, proc = run_playbook(args.inventory, limit=args.limit, vault_args=vault_args)
    if report is None:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        print(f"flashmm-config drift: {PLAYBOOK} produced no report (exit {proc.returncode}); "
              "its output is above", file=sys.stderr)
        return EXIT_RUN_FAILED
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=1,
                         sort_keys=True))
    else:
        print(report["table"])
        print(f"-- {report['summary']}")
    return int(report["exit"])


def register(sub) -> None:
    d = sub.add_parser("drift", help="each host against what the inventory renders now "
                       "(files, Redis runtime keys, containers); exit 0 clean, 1 drift, "
                       "2 not reachable")
    d.add_argument("inventory")
    d.add_argument("--limit", metavar="PATTERN", help="hosts, as ansible-playbook --limit")
    d.add_argument("--json", action="store_true", help="the report as JSON")
    d.set_defaults(func=cmd_drift)
