"""Benchmark playbooks/rotate_secrets.yml: what a rotation costs, and a rerun that changes
nothing, on generated local inventories (no compose stack: each host writes its files and
seeds its own database on one private redis-server, as in bench/deploy.py).

For each size (default 2 and 10 hosts), best of ``--repeat`` rounds, each round:

- deploy   deploy.yml on an empty sandbox (not a rotation: the baseline of one roll);
- rotate   rotate=generated, rotate_serial=1: a new rotation (renew in the vault, roll each
           host, finish, roll each host again);
- rerun    the same rotation_id again: done already, nothing changes (each host rolled once).

Printed per run: wall seconds and CPU seconds (the ansible-playbook process and all its
children: the forked workers and the modules), and CPU per host.  Figures only.

    .venv/bin/python bench/rotation.py [--sizes 2 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import BIN, ROOT, redis_cli, sizes, start_redis, tool_env  # noqa: E402

from flashmm_deploy.plan.sandbox import make_local_inventory  # noqa: E402


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``cmd`` (with its children), or exit with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["2", "10"], help="host counts, e.g. 2 10")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flashmm-bench-"))
    server, port = start_redis(work)
    try:
        env = tool_env()
        playbook = str(BIN / "ansible-playbook")
        rows = []
        for size in sizes(args.sizes):
            best: dict[str, tuple[float, float]] = {}
            for attempt in range(args.repeat):
                sandbox = work / f"sandbox{size}-{attempt}"
                inv = make_local_inventory(ROOT / "inventories" / "local",
                                           work / f"inv{size}-{attempt}", hosts=size,
                                           redis_port=port, sandbox=sandbox)
                redis_cli(port, "flushall")
                rotation = ["-e", "rotate=generated", "-e", "rotate_serial=1",
                            "-e", f"rotation_id=bench-{attempt}"]
                for name, cmd in (
                        ("deploy", [playbook, "deploy.yml", "-i", str(inv)]),
                        ("rotate", [playbook, "playbooks/rotate_secrets.yml", "-i", str(inv),
                                    *rotation]),
                        ("rerun", [playbook, "playbooks/rotate_secrets.yml", "-i", str(inv),
                                   *rotation])):
                    wall, cpu = run(cmd, env)
                    if name not in best or cpu < best[name][1]:
                        best[name] = (wall, cpu)
                shutil.rmtree(sandbox, ignore_errors=True)
            rows.append((size, best))
        print(f"rotate_secrets.yml (rotate=generated, one host at a time) on generated local "
              f"inventories (no stack), best of {args.repeat} by CPU, seconds")
        print(f"{'hosts':>5} {'run':>7} {'wall':>7} {'cpu':>7} {'cpu/host':>9}")
        for size, best in rows:
            for name, (wall, cpu) in best.items():
                print(f"{size:>5} {name:>7} {wall:>7.2f} {cpu:>7.2f} {cpu / size:>9.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
