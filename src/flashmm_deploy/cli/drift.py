"""``flashmm-config drift|status inventories/<env>``: ``playbooks/drift.yml`` run for the
operator.  ``drift`` shows its report as a table (or ``--json``) with an exit code a script can
act on: 0 every host matches the inventory, 1 some host drifted, 2 some host could not be
checked (unreachable, a step failed) or the run itself failed (invalid inventory: its output is
shown).  ``status`` is the screen an operator opens first: one line per host with its config
version, the last run that wrote it (when, who, which toolkit commit), the app's container, the
drift count, a rotation in progress and the newest backup with its age; same exit codes.

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

from flashmm_deploy.reports.drift import EXIT
from flashmm_deploy.core.paths import project_root

PLAYBOOK = Path("playbooks") / "drift.yml"
EXIT_RUN_FAILED = max(EXIT.values())


def run_playbook(inventory: str, *, limit: str | None, vault_args: list[str],
                 timeout: float | None = None, playbook: Path = PLAYBOOK,
                 extra: dict | None = None) -> tuple[dict | None, subprocess.CompletedProcess]:
    """(the report, or None when the run produced none; the finished process).  The playbook
    writes its report to the file named by ``flashmm_<its name>_json``."""
    root = project_root()
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    with tempfile.TemporaryDirectory(prefix=f"flashmm-{playbook.stem}-") as tmp:
        out = Path(tmp) / "report.json"
        variables = dict(extra or {}, **{f"flashmm_{playbook.stem}_json": str(out)})
        cmd = [str(ansible_playbook), str(root / playbook), "-i", inventory,
               "-e", json.dumps(variables), *vault_args]
        if limit:
            cmd += ["--limit", limit]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                              check=False)
        report = json.loads(out.read_text()) if out.is_file() else None
    return report, proc


def report_of(args, playbook: Path = PLAYBOOK, extra: dict | None = None) -> dict | None:
    """The report of ``playbook`` over the command's inventory and --limit, or None after
    showing why the run produced none (its output, on stderr)."""
    vault_args = [a for v in args.vault_id for a in ("--vault-id", v)] + \
        [a for f in args.vault_password_file for a in ("--vault-password-file", f)]
    report, proc = run_playbook(args.inventory, limit=args.limit, vault_args=vault_args,
                                playbook=playbook, extra=extra)
    if report is None:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        print(f"flashmm-config {args.command}: {playbook} produced no report "
              f"(exit {proc.returncode}); its output is above", file=sys.stderr)
    return report


def show(report: dict | None, as_json: bool, summary_to=None) -> int:
    """Print a playbook's report (its table and summary line, or JSON without the table);
    its exit code (EXIT_RUN_FAILED when the run produced none)."""
    if report is None:
        return EXIT_RUN_FAILED
    if as_json:
        print(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=1,
                         sort_keys=True))
    else:
        print(report["table"])
        print(f"-- {report['summary']}", file=summary_to or sys.stdout)
    return int(report["exit"])


def cmd_drift(args) -> int:
    return show(report_of(args), args.json)


def _ago(stamp: str | None, now: float) -> str:
    import calendar
    import time

    try:
        then = calendar.timegm(time.strptime(str(stamp)[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return "?"
    minutes = max(0, int(now - then)) // 60
    return (f"{minutes} min" if minutes < 120 else
            f"{minutes // 60} h" if minutes < 48 * 60 else f"{minutes // 1440} d") + " ago"


def status_lines(report: dict, *, rotations: list[str], backup: tuple[str, str] | None,
                 now: float) -> list[str]:
    """One line per host of a drift report, with the environment's rotation and backup."""
    lines = []
    for host, h in report["hosts"].items():
        last = h.get("last_write") or {}
        deployed = (f"written {last['written_at']} ({_ago(last['written_at'], now)})"
                    + (f" by {last['owner']}" if last.get("owner") else "")
                    + (f" ({last['action']}" if last.get("action") else "")
                    + (f", toolkit {last['commit'][:12]}" if last.get("commit") else "")
                    + (")" if last.get("action") else "")) if last.get("written_at") \
            else "never written"
        parts = [host, h["status"],
                 f"version {h['version']}" if h.get("version") is not None else "version ?",
                 deployed, f"app {h.get('app') or '?'}", f"drift {h['count']}",
                 "rotation " + ("; ".join(rotations) if rotations else "none"),
                 (f"backup {backup[0]} ({_ago(backup[1], now)})" if backup else "no backup")]
        lines.append(" | ".join(parts))
        lines += [f"  error {e}" for e in h["errors"]]
    return lines


def cmd_status(args) -> int:
    import time

    from flashmm_deploy.backup import backup_store
    from flashmm_deploy.cli import backup as cli_backup
    from flashmm_deploy.secrets import secret_generation
    from flashmm_deploy.cli.common import load_inventory

    inv = load_inventory(args, args.inventory)
    book = inv.host_variables(inv.hosts[0]).get("flashmm_rotations") if inv.hosts else None
    env_dir, _ = cli_backup._env_dir(args, inv)
    newest = (backup_store.list_backups(env_dir) or [None])[-1]
    report = report_of(args)
    if report is None:
        return EXIT_RUN_FAILED
    print("\n".join(status_lines(
        report, rotations=secret_generation.rotations_in_progress(book),
        backup=(newest.backup_id, newest.created) if newest else None, now=time.time())))
    return int(report["exit"])


def register(sub) -> None:
    d = sub.add_parser("drift", help="each host against what the inventory renders now "
                       "(files, Redis runtime keys, containers); exit 0 clean, 1 drift, "
                       "2 not reachable")
    d.add_argument("inventory")
    d.add_argument("--limit", metavar="PATTERN", help="hosts, as ansible-playbook --limit")
    d.add_argument("--json", action="store_true", help="the report as JSON")
    d.set_defaults(func=cmd_drift)

    st = sub.add_parser("status", help="one line per host: config version, last run, app, "
                        "drift count, rotation in progress, newest backup")
    st.add_argument("inventory")
    st.add_argument("--limit", metavar="PATTERN", help="hosts, as ansible-playbook --limit")
    st.add_argument("--backup-dir", metavar="DIR",
                    help="where the environment's backups are (default: the inventory's "
                    "flashmm_backup_dir, else backups/)")
    st.set_defaults(func=cmd_status)
