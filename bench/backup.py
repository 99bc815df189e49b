"""Benchmark playbooks/backup.yml and playbooks/restore.yml against Ansible's fixed cost, on
generated local inventories.

For each size (default 3 and 50 hosts, no compose stack: every host has its files and its own
database on one private redis-server, deployed once first), best of ``--repeat`` rounds, each
round running in turn:

- ping      an ``ansible.builtin.ping`` playbook over the same hosts (the floor: one module
            call per host, with the same interpreter);
- backup    playbooks/backup.yml (one read per host; files stored, secrets encrypted);
- restore   playbooks/restore.yml -e backup_id=latest on the state the backup holds (nothing
            to change: verify everything, one call per host, changed=0);
- wiped     the same after every host directory and database was emptied (every file and key
            written again);
- check     restore --check --diff after the wipe.

Printed: seconds and the ratios to ping (the aim: backup no more than 2x ping at 50 hosts).

    .venv/bin/python bench/backup.py [--sizes 3 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from deploy import PING, redis_cli, start_redis, timed, tool_env  # noqa: E402
from flashmm_deploy.plan.sandbox import make_local_inventory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 50])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flashmm-bench-backup-"))
    server, port = start_redis(work)
    try:
        env = tool_env()
        (work / "ping.yml").write_text(PING)
        playbook = [str(BIN / "ansible-playbook")]
        rows = []
        for size in args.sizes:
            sandbox = work / f"sandbox{size}"
            backups = work / f"backups{size}"
            inv = make_local_inventory(ROOT / "inventories" / "local", work / f"inv{size}",
                                       hosts=size, redis_port=port, sandbox=sandbox)
            where = ["-e", f"flashmm_backup_dir={backups}"]
            redis_cli(port, "flushall")
            timed([*playbook, "deploy.yml", "-i", str(inv)], env)
            runs: dict[str, list[float]] = {}

            def measure(name: str, *cmd: str, runs=runs, inv=inv) -> None:
                runs.setdefault(name, []).append(timed([*playbook, *cmd, "-i", str(inv)], env))

            def wipe(sandbox=sandbox) -> None:
                shutil.rmtree(sandbox)
                redis_cli(port, "flushall")

            for _ in range(args.repeat):
                measure("ping", str(work / "ping.yml"))
                measure("backup", "playbooks/backup.yml", *where)
                measure("restore", "playbooks/restore.yml", "-e", "backup_id=latest", *where)
                wipe()
                measure("check", "playbooks/restore.yml", "-e", "backup_id=latest", "--check",
                        "--diff", *where)
                measure("wiped", "playbooks/restore.yml", "-e", "backup_id=latest", *where)
            rows.append((size, {name: min(times) for name, times in runs.items()}))
        print(f"backup.yml / restore.yml on generated local inventories (no stack), best of "
              f"{args.repeat}, seconds")
        print(f"{'hosts':>5} {'ping':>6} {'backup':>7} {'restore':>8} {'wiped':>6} {'check':>6}"
              f" {'backup/ping':>12} {'restore/ping':>13} {'wiped/ping':>11}")
        for size, t in rows:
            print(f"{size:>5} {t['ping']:>6.2f} {t['backup']:>7.2f} {t['restore']:>8.2f} "
                  f"{t['wiped']:>6.2f} {t['check']:>6.2f} {t['backup'] / t['ping']:>12.2f} "
                  f"{t['restore'] / t['ping']:>13.2f} {t['wiped'] / t['ping']:>11.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
